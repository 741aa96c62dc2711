"""The LP-FT study on the user's own shift: OOD folders and .npz files, the regime verdict, the LP-head rule,
the plateau check."""

import json
import math
import os

import numpy as np
import pytest

from pyrobust.cli import main
from pyrobust.errors import UsageError
from pyrobust.study.config import StudyConfig
from pyrobust.study.lp_head import accuracy_margin, lp_head_index
from pyrobust.study.lpft_study import load_data, validate
from pyrobust.study.ood_sets import check_ood_paths, load_ood_set, ood_set_name
from pyrobust.study.plateau import plateau_status
from pyrobust.study.regime import accuracy_difference_noise, regime_verdict


def make_folder(root, classes, per_class=3, size=12, seed=0):
    """An image folder ``root/<class>/<i>.png`` of random RGB images."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in classes:
        os.makedirs(root / c, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return str(root)


def make_npz(path, labels, classes=None, size=10, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {"images": rng.integers(0, 256, (len(labels), size, size), dtype=np.uint8),
              "labels": np.asarray(labels, dtype=np.int64)}
    if classes is not None:
        arrays["classes"] = np.asarray(classes)
    np.savez(path, **arrays)
    return str(path)


DIGITS = [str(i) for i in range(10)]


# -- OOD sets ---------------------------------------------------------------------------------------------------

def test_folder_subset_of_id_classes_gets_id_labels(tmp_path):
    root = make_folder(tmp_path / "sketches", ["3", "7"], per_class=2)
    ds = load_ood_set(root, DIGITS, image_size=16)
    assert ood_set_name(root) == "sketches" and ood_set_name(root + "/") == "sketches"
    assert sorted(ds.labels.tolist()) == [3, 3, 7, 7]
    x, y = ds[0]
    assert tuple(x.shape) == (3, 16, 16) and 0 <= float(x.min()) <= float(x.max()) <= 1 and y == 3


def test_folder_with_unknown_class_is_refused(tmp_path):
    root = make_folder(tmp_path / "shift", ["3", "cat"], per_class=1)
    with pytest.raises(UsageError, match="'cat' that the ID data does not have"):
        load_ood_set(root, DIGITS, image_size=16)


def test_npz_with_and_without_class_names(tmp_path):
    plain = load_ood_set(make_npz(tmp_path / "plain.npz", [0, 9, 4]), DIGITS, image_size=8)
    assert plain.labels.tolist() == [0, 9, 4] and tuple(plain[0][0].shape) == (3, 8, 8)
    named = load_ood_set(make_npz(tmp_path / "named.npz", [0, 1, 1], classes=["7", "2"]), DIGITS, image_size=8)
    assert named.labels.tolist() == [7, 2, 2]
    assert ood_set_name(str(tmp_path / "named.npz")) == "named"


@pytest.mark.parametrize("labels,classes,message", [
    ([0, 10], None, "labels must index the 10 ID classes"),
    ([0, 2], ["1", "2"], "labels must index its 2 classes"),
    ([0, 1], ["1", "eleven"], "'eleven' that the ID data does not have"),
])
def test_npz_mismatches_are_refused(tmp_path, labels, classes, message):
    with pytest.raises(UsageError, match=message):
        load_ood_set(make_npz(tmp_path / "bad.npz", labels, classes), DIGITS, image_size=8)


def test_npz_without_labels_and_bad_paths(tmp_path):
    np.savez(tmp_path / "nolabels.npz", images=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(UsageError, match="lacks the array\\(s\\) labels"):
        load_ood_set(str(tmp_path / "nolabels.npz"), DIGITS, image_size=8)
    (tmp_path / "x.txt").write_text("no")
    with pytest.raises(UsageError, match="neither a folder"):
        check_ood_paths([str(tmp_path / "x.txt")])
    with pytest.raises(UsageError, match="does not exist"):
        check_ood_paths([str(tmp_path / "missing")])
    a = make_folder(tmp_path / "a" / "same", ["1"], per_class=1)
    b = make_folder(tmp_path / "b" / "same", ["1"], per_class=1)
    with pytest.raises(UsageError, match="two OOD sets would be reported as 'same'"):
        check_ood_paths([a, b])


def test_load_data_puts_natural_sets_beside_corruptions(tmp_path):
    folder = make_folder(tmp_path / "shifted", ["0", "5"], per_class=2)
    npz = make_npz(tmp_path / "scans.npz", [1, 2, 3])
    cfg = StudyConfig.quick(ood_datasets=[folder, npz], corruptions=["contrast"], severities=[2])
    validate(cfg)
    *_, k, ood = load_data(cfg)
    assert k == 10 and list(ood) == ["shifted", "scans", "contrast@2"]
    natural_only = StudyConfig.quick(ood_datasets=[npz], corruptions=[])
    validate(natural_only)
    assert list(load_data(natural_only)[-1]) == ["scans"]
    with pytest.raises(UsageError, match="no OOD sets"):
        validate(StudyConfig.quick(corruptions=[]))


def test_config_takes_ood_datasets_from_toml_and_flags(tmp_path):
    npz = make_npz(tmp_path / "scans.npz", [1, 2])
    path = tmp_path / "study.toml"
    path.write_text(f'[study]\nood_datasets = ["{npz}"]\ncorruptions = []\n')
    cfg = StudyConfig.from_toml(str(path))
    assert cfg.ood_datasets == [npz] and cfg.corruptions == []
    from pyrobust.study.lpft_study import config_from_args
    import argparse

    args = argparse.Namespace(ood=[str(tmp_path / "other")], quick=False)
    assert config_from_args(args, cfg).ood_datasets == [npz, str(tmp_path / "other")]


@pytest.mark.parametrize("command", ["demo", "lpft"])
def test_class_mismatch_exits_2_before_any_work(command, tmp_path, capsys, monkeypatch):
    folder = make_folder(tmp_path / "shift", ["3", "dog"], per_class=1)
    out = tmp_path / "out"
    import pyrobust.lpft

    def no_work(*a, **k):
        raise AssertionError("the study started")

    monkeypatch.setattr(pyrobust.lpft, "run_lpft", no_work)
    args = ["demo", "--quick"] if command == "demo" else ["lpft", "--config", _write_quick_toml(tmp_path)]
    code = main(args + ["--ood", folder, "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "'dog' that the ID data does not have" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def _write_quick_toml(tmp_path):
    path = tmp_path / "quick.toml"
    path.write_text(StudyConfig.quick().to_toml())
    return str(path)


# -- the LP-head rule -------------------------------------------------------------------------------------------

def test_lp_head_rule_on_a_flat_accuracy_path():
    # the demo's situation: accuracy flat within one image of 300 from C=1 on, best at the weakest penalty
    acc = [0.80, 0.93, 0.9567, 0.9567, 0.9567, 0.9600]
    loss = [0.90, 0.30, 0.16, 0.14, 0.19, 0.31]
    assert lp_head_index(acc, loss, 300) == 3  # lowest val loss among those within one standard error
    assert accuracy_margin(0.96, 300) == pytest.approx(math.sqrt(0.96 * 0.04 / 300))


def test_lp_head_rule_keeps_accuracy_first():
    # the lowest loss outside the accuracy band is not taken
    acc = [0.70, 0.95, 0.99]
    loss = [0.05, 0.20, 0.30]
    assert lp_head_index(acc, loss, 1000) == 2
    # ties in loss go to the smaller C; non-finite losses are never chosen
    assert lp_head_index([0.9, 0.9, 0.9], [0.2, 0.2, 0.2], 50) == 0
    assert lp_head_index([0.9, 0.9], [float("nan"), 0.4], 50) == 1
    # a perfect best accuracy still has a margin of one image
    assert lp_head_index([0.99, 1.0], [0.01, 0.02], 100) == 0
    with pytest.raises(ValueError):
        lp_head_index([0.9], [0.1, 0.2], 10)


def test_lp_head_rule_on_a_real_sweep():
    """On a probe sweep the rule picks a head no larger than the sweep's best-accuracy head."""
    import torch

    from pyrobust.lpft.probe_head import head_at, linear_probe

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g)
    y = torch.arange(400) % 4
    X = centres[y] + 1.5 * torch.randn(400, 16, generator=g)
    head, sweep = linear_probe((X[:300], y[:300]), (X[300:], y[300:]), np.logspace(-4, 3, 12), progress=False)
    i = lp_head_index(sweep.val_accuracy, sweep.val_loss, 100)
    assert sweep.val_accuracy[i] >= sweep.val_accuracy.max() - accuracy_margin(sweep.val_accuracy.max(), 100)
    assert sweep.val_loss[i] <= sweep.val_loss[sweep.best_index]
    assert float(head_at(sweep, i).weight.detach().norm()) <= float(head.weight.detach().norm()) + 1e-6
    best = head_at(sweep, sweep.best_index)
    assert torch.equal(best.weight, head.weight) and torch.equal(best.bias, head.bias)


# -- plateau and verdict ----------------------------------------------------------------------------------------

def test_plateau_status():
    assert plateau_status([0.5, 0.9], 300)["reached"] is False
    flat = plateau_status([0.90, 0.905], 300)
    assert flat["reached"] is True and flat["last_gain"] == pytest.approx(0.005)
    assert plateau_status([0.9], 300)["reached"] is None


def _methods(lp, ft, lp_id=0.95, ft_id=0.97):
    sets = list(lp)
    return {"lp": {"id_accuracy": lp_id, "ood_accuracy": float(np.mean(list(lp.values()))), "ood_by_set": lp},
            "ft": {"id_accuracy": ft_id, "ood_accuracy": float(np.mean(list(ft.values()))), "ood_by_set": ft},
            "_sets": sets}


@pytest.mark.parametrize("lp,ft,holds", [
    ({"a": 0.80, "b": 0.70}, {"a": 0.70, "b": 0.65}, True),    # LP above FT
    ({"a": 0.70, "b": 0.70}, {"a": 0.72, "b": 0.71}, True),    # within the noise
    ({"a": 0.60, "b": 0.50}, {"a": 0.80, "b": 0.75}, False),   # FT far above
])
def test_regime_verdict_follows_the_accuracies(lp, ft, holds):
    m = _methods(lp, ft)
    sizes = {"a": 400, "b": 200}
    doc = regime_verdict(m, {"ft": {"id": 0.2, "ood": 0.1}}, sizes, {"natural": ["a"], "corrupted": ["b"]})
    assert doc["features_good_on_shift"] is holds and doc["paper_premise_holds"] is holds
    d = m["lp"]["ood_accuracy"] - m["ft"]["ood_accuracy"]
    assert doc["lp_minus_ft"] == pytest.approx(d)
    noise = accuracy_difference_noise(m["lp"]["ood_accuracy"], m["ft"]["ood_accuracy"], 300)
    assert doc["noise"] == pytest.approx(noise) and holds == (d >= -noise)
    for s in sizes:
        v = doc["by_set"][s]
        assert v["features_good"] == (lp[s] - ft[s] >= -accuracy_difference_noise(lp[s], ft[s], sizes[s]))
    assert set(doc["by_group"]) == {"natural", "corrupted"}
    assert doc["ft_feature_change_ood_over_id"] == pytest.approx(0.5)
    assert ("does not hold" in doc["summary"]) is (not holds)
    assert f"{100 * m['ft']['ood_accuracy']:.1f}%" in doc["summary"]


def test_regime_verdict_says_when_ft_stopped_short():
    m = _methods({"a": 0.8}, {"a": 0.7})
    doc = regime_verdict(m, {}, {"a": 100}, {"natural": ["a"], "corrupted": []},
                         ft_plateau=plateau_status([0.5, 0.8], 300))
    assert doc["ft_stopped_short"] and "had not reached its plateau" in doc["summary"]
    assert list(doc["by_group"]) == ["natural"] and math.isnan(doc["ft_feature_change_ood_over_id"])


# -- end to end on natural shifts only --------------------------------------------------------------------------

def test_study_on_a_folder_and_an_npz(tmp_path, capsys):
    folder = make_folder(tmp_path / "photos", ["1", "4", "8"], per_class=4)
    npz = make_npz(tmp_path / "scans.npz", [0, 1, 2, 3, 4, 5], size=8)
    cfg = StudyConfig.quick(backbone="small_resnet", image_size=16, max_train=96, max_val=48, max_test=48, epochs=2,
                            n_cs=4, mixers=["mixup"], corruptions=[], ood_datasets=[folder, npz], theory_seeds=2,
                            out=str(tmp_path / "out"))
    path = tmp_path / "study.toml"
    path.write_text(cfg.to_toml())
    assert main(["lpft", "--config", str(path), "--no-progress"]) == 0, capsys.readouterr().err
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["config"]["ood_sets"] == ["photos", "scans"]
    assert res["config"]["ood_set_sizes"] == {"photos": 12, "scans": 6}
    assert res["config"]["ood_groups"] == {"natural": ["photos", "scans"], "corrupted": []}
    for name, m in res["methods"].items():
        assert set(m["ood_by_set"]) == {"photos", "scans"}, name
        assert m["ood_accuracy"] == pytest.approx(np.mean(list(m["ood_by_set"].values())))
        assert m["ood_by_group"]["natural"] == pytest.approx(m["ood_accuracy"])
    reg = res["regime"]
    lp, ft = res["methods"]["lp"], res["methods"]["ft"]
    for key in ("criterion", "features_good_on_shift", "paper_premise_holds", "lp_minus_ft", "noise",
                "lp_id_ood_gap", "ft_id_ood_gap", "ft_feature_change_ood_over_id", "by_set", "summary"):
        assert key in reg, key
    assert reg["lp_minus_ft"] == pytest.approx(lp["ood_accuracy"] - ft["ood_accuracy"])
    assert reg["features_good_on_shift"] == (reg["lp_minus_ft"] >= -reg["noise"])
    assert reg["lp_id_ood_gap"] == pytest.approx(lp["id_accuracy"] - lp["ood_accuracy"])
    assert res["findings"]["features_good_on_shift"] == reg["features_good_on_shift"]
    # diagnostics of the runs the study makes
    probe = res["probe"]
    assert probe["head_C"] in probe["Cs"] and lp["C"] == probe["head_C"]
    assert lp["head_norm"] == pytest.approx(probe["head_norm"][probe["Cs"].index(probe["head_C"])], rel=1e-5)
    for name in ("ft", "lpft", "lpft+mixup"):
        m = res["methods"][name]
        assert len(m["val_accuracy_by_epoch"]) == 2 and m["first_epoch_loss"] == m["train_loss_by_epoch"][0]
        assert m["plateau"]["reached"] in (True, False) and m["head_norm"] > 0
    assert res["methods"]["lpft"]["head_norm"] == pytest.approx(lp["head_norm"])
    html = (tmp_path / "out" / "report.html").read_text()
    assert "photos" in html and "features good?" in html and 'class="table-wrap"' in html
    assert not (tmp_path / "out" / "accuracy_vs_severity.png").exists()
