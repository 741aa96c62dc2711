"""The mixing study: equal footing across mixers, the summary numbers, the verdict, the command end to end."""

import json
import os

import pytest
import torch

from pyrobust.cli import main
from pyrobust.study.mixstudy_report import summarise, verdict
from pyrobust.study.mixstudy_train import (MIXER_NAMES, BatchTensorDataset, build_model, make_mixer,
                                           make_train_loader)


def _toy_dataset(n=96, k=4):
    g = torch.Generator().manual_seed(0)
    return BatchTensorDataset(torch.rand(n, 1, 12, 12, generator=g), torch.randint(0, k, (n,), generator=g))


def test_same_seed_same_initialisation_whatever_happened_before():
    a = build_model("small_resnet", 10, 1, 16, 8, seed=3)
    torch.rand(1000)  # the global RNG moves on between two mixers' runs
    b = build_model("small_resnet", 10, 1, 16, 8, seed=3)
    c = build_model("small_resnet", 10, 1, 16, 8, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_same_seed_same_batches_for_every_mixer():
    ds, k = _toy_dataset(), 4
    first = {}
    for name in MIXER_NAMES:
        loader = make_train_loader(ds, make_mixer(name, k, seed=5), seed=5, batch_size=16, workers=0, num_classes=k)
        batches = list(loader)
        assert len(batches) == 6
        first[name] = batches
        images, targets, idx = batches[0]
        assert targets.shape == (16, k) and targets.dtype == torch.float32
        torch.testing.assert_close(targets.sum(1), torch.ones(16))
    for name in MIXER_NAMES:
        for (_, _, i_ref), (_, _, i) in zip(first["none"], first[name]):
            assert torch.equal(i, i_ref)
    # "none" delivers the dataset's images untouched with one-hot labels; a mixer changes them
    images, targets, idx = first["none"][0]
    assert torch.equal(images, ds.images[idx])
    assert torch.equal(targets.argmax(1), ds.labels[idx])
    assert not torch.equal(first["cutmix"][0][0], images)
    # another seed gives another order
    other = next(iter(make_train_loader(ds, None, seed=6, batch_size=16, workers=0, num_classes=k)))
    assert not torch.equal(other[2], idx)


def test_mixing_in_a_worker_keeps_the_order():
    ds, k = _toy_dataset(), 4
    inline = next(iter(make_train_loader(ds, make_mixer("smoothmix-circle", k, 1), seed=1, batch_size=16,
                                         workers=0, num_classes=k)))
    loader = make_train_loader(ds, make_mixer("smoothmix-circle", k, 1), seed=1, batch_size=16, workers=1,
                               num_classes=k)
    in_worker = next(iter(loader))
    assert torch.equal(in_worker[2], inline[2])
    assert in_worker[0].shape == inline[0].shape


def _fake_run(clean, corrupted, mass=0.3):
    return {"clean": clean, "corrupted": corrupted,
            "cam": {"mass_hard": mass, "mass_soft": mass, "donor_rate_hard": 0.1},
            "train": {"images_per_s": 100.0, "seconds": 1.0, "data_wait_s": 0.0}}


def test_summary_mce_and_relative_mce_follow_their_definitions():
    per_seed = {
        ("cutmix", 0): _fake_run(0.9, {"fog": [0.8, 0.6], "jpeg": [0.9, 0.7]}),
        ("smoothmix-circle", 0): _fake_run(0.88, {"fog": [0.85, 0.7], "jpeg": [0.9, 0.6]}),
    }
    out = summarise(per_seed, ["cutmix", "smoothmix-circle"], [0])
    # errors: cutmix fog 0.2, 0.4; jpeg 0.1, 0.3 -> mCE 0.25; smoothmix fog 0.15, 0.3; jpeg 0.1, 0.4 -> 0.2375
    assert out["cutmix"]["mce"] == pytest.approx(0.25)
    assert out["smoothmix-circle"]["mce"] == pytest.approx(0.2375)
    assert out["cutmix"]["relative_mce"] == pytest.approx(1.0)
    # relative: mean(0.45 / 0.6, 0.5 / 0.4) = mean(0.75, 1.25) = 1.0
    assert out["smoothmix-circle"]["relative_mce"] == pytest.approx(1.0)
    assert out["smoothmix-circle"]["clean_accuracy_std"] == 0.0


def test_verdict_says_when_smoothmix_does_not_beat_cutmix():
    runs = {}
    for seed, (cut_fog, sm_fog) in enumerate([(0.8, 0.7), (0.82, 0.71), (0.79, 0.7)]):
        runs[("cutmix", seed)] = _fake_run(0.9, {"fog": [cut_fog]})
        runs[("smoothmix-square", seed)] = _fake_run(0.9, {"fog": [sm_fog]})
    lines = verdict(summarise(runs, ["cutmix", "smoothmix-square"], [0, 1, 2]), 3)
    assert "smoothmix-square did NOT beat CutMix" in lines[0]
    assert "over 3 seeds" in lines[0]
    flipped = {(("smoothmix-square" if k[0] == "cutmix" else "cutmix"), k[1]): v for k, v in runs.items()}
    lines = verdict(summarise(flipped, ["cutmix", "smoothmix-square"], [0, 1, 2]), 3)
    assert lines[0].startswith("smoothmix-square beat CutMix")
    one = {k: v for k, v in runs.items() if k[1] == 0}
    lines = verdict(summarise(one, ["cutmix", "smoothmix-square"], [0]), 1)
    assert "single seed" in lines[0]


def test_quick_run_end_to_end(tmp_path, capsys):
    out = tmp_path / "study"
    status = main(["mixstudy", "--quick", "--mixers", "none,cutmix,smoothmix-circle", "--epochs", "4",
                   "--out", str(out)])
    assert status == 0
    for name in ("results.json", "report.html", "cam_panel.png", "accuracy_vs_severity.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    res = json.loads((out / "results.json").read_text())
    cfg = res["config"]
    assert cfg["quick"] and cfg["dataset"] == "digits" and cfg["severities"] == [1, 3, 5]
    assert set(res["mixers"]) == {"none", "cutmix", "smoothmix-circle"}
    for name, m in res["mixers"].items():
        assert 0.0 <= m["clean_accuracy"] <= 1.0
        assert set(m["corruption_accuracy"]) == set(cfg["corruptions"])
        errors = []
        for accs in m["corruption_accuracy"].values():
            assert len(accs) == 3 and all(0.0 <= a <= 1.0 for a in accs)
            errors += [1 - a for a in accs]
        assert m["mce"] == pytest.approx(sum(errors) / len(errors))
        assert 0.0 <= m["cam_mass_in_patch"] <= 1.0 and 0.0 <= m["cam_mass_in_patch_soft"] <= 1.0
        assert m["train_images_per_s"] > 0
    assert res["mixers"]["cutmix"]["relative_mce"] == pytest.approx(1.0)
    assert res["mixers"]["none"]["clean_accuracy"] > 0.5  # it learned something in a few seconds
    assert set(res["timings"]["train_images_per_s"]) == set(res["mixers"])
    html = (out / "report.html").read_text()
    assert "Verdict" in html and "data:image/png;base64" in html
    assert "smoothmix-circle" in capsys.readouterr().out


@pytest.mark.parametrize("argv, needle", [
    (["--mixers", "cutmix,supermix"], "unknown mixer 'supermix'"),
    (["--mixers", ""], "--mixers is empty"),
    (["--mixers", " , "], "--mixers is empty"),
    (["--mixers", "cutmix,cutmix"], "listed twice"),
    (["--dataset", "/nonexistent/pyrobust-data"], "/nonexistent/pyrobust-data"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--model", "no_such_net"], "unknown backbone"),
])
def test_bad_input_is_one_line_and_status_2(tmp_path, capsys, argv, needle):
    out = tmp_path / "never"
    status = main(["mixstudy", "--quick", "--out", str(out), *argv])
    err = capsys.readouterr().err
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyrobust mixstudy: error: ") and needle in lines[0]
    assert not out.exists()


def test_output_path_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("x")
    assert main(["mixstudy", "--quick", "--out", str(target)]) == 2
    assert "is a file" in capsys.readouterr().err
    assert target.read_text() == "x"
    assert os.path.isfile(target)


def _args(*argv):
    import argparse

    from pyrobust.study.mixstudy import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_config_defaults_quick_sizes_and_flags():
    from pyrobust.study.mixstudy import config_from_args
    from pyrobust.study.mixstudy_config import MixStudyConfig

    full = config_from_args(_args())
    assert full == MixStudyConfig()
    assert (full.dataset, full.model, full.width, full.epochs, full.seeds, full.out, full.device) == \
        ("auto", "small_resnet", 16, 3, 1, "mixstudy-out", "cpu")
    assert (full.image_size, full.batch_size, full.lr) == (28, 256, 0.1)
    assert (full.corruption_images, full.cam_images) == (2000, 500)
    assert full.mixers == list(MIXER_NAMES) and full.severities == [1, 2, 3, 4, 5] and not full.quick
    quick = config_from_args(_args("--quick"))
    assert quick.quick and (quick.dataset, quick.epochs, quick.image_size, quick.batch_size, quick.width) == \
        ("digits", 6, 16, 64, 8)
    assert (quick.corruption_images, quick.cam_images, quick.severities) == (200, 64, [1, 3, 5])
    given = config_from_args(_args("--quick", "--epochs", "2", "--mixers", "None, CutMix", "--seeds", "3"))
    assert (given.epochs, given.mixers, given.seeds, given.image_size) == (2, ["none", "cutmix"], 3, 16)


def test_config_toml_round_trip_and_flags_over_it(tmp_path):
    from pyrobust.errors import UsageError
    from pyrobust.study.mixstudy import config_from_args, resolve_config
    from pyrobust.study.mixstudy_config import MixStudyConfig

    cfg = MixStudyConfig.quick_run(mixers=["none", "smoothmix-square"], epochs=2, out=str(tmp_path / "o"))
    path = tmp_path / "mix.toml"
    path.write_text(cfg.to_toml())
    assert "[mixstudy]" in path.read_text()
    assert MixStudyConfig.from_toml(str(path)) == cfg
    assert config_from_args(_args("--config", str(path))) == cfg
    assert config_from_args(_args("--config", str(path), "--epochs", "5")).epochs == 5
    # quick = true in a file gives the quick sizes to the keys it does not set
    path.write_text("[mixstudy]\nquick = true\nepochs = 9\n")
    assert MixStudyConfig.from_toml(str(path)) == MixStudyConfig.quick_run(epochs=9)
    record = resolve_config(MixStudyConfig.quick_run(out=str(tmp_path / "o"), threads=2))
    assert record["seeds"] == [0] and record["threads"] == 2 and record["dataset"] == "digits"
    assert record["out"] == str(tmp_path / "o") and record["device"] == "cpu" and record["width"] == 8
    path.write_text("[mixstudy]\nepoch = 2\n")
    with pytest.raises(UsageError, match="unknown key\\(s\\) epoch"):
        MixStudyConfig.from_toml(str(path))
    path.write_text('[mixstudy]\nseeds = "3"\n')
    with pytest.raises(UsageError, match="'seeds' should be int"):
        MixStudyConfig.from_toml(str(path))
