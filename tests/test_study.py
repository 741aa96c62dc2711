"""The pyrobust command and the LP-FT study: configuration, bad input, and an end-to-end --quick run."""

import json
import math
import os

import pytest
import torch

from pyrobust.cli import main
from pyrobust.errors import UsageError
from pyrobust.study.config import StudyConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_example_config_holds_the_demo_defaults():
    assert StudyConfig.from_toml(os.path.join(ROOT, "examples", "study.toml")) == StudyConfig()


def test_config_round_trip_and_checks(tmp_path):
    cfg = StudyConfig(dataset="fashion-mnist", epochs=2, ft_lrs=[0.1], mixers=[], severities=[2])
    path = tmp_path / "study.toml"
    path.write_text(cfg.to_toml())
    assert StudyConfig.from_toml(str(path)) == cfg
    path.write_text('[study]\nepochs = 2\nlearning_rate = 0.1\n')
    with pytest.raises(UsageError, match="unknown key\\(s\\) learning_rate"):
        StudyConfig.from_toml(str(path))
    path.write_text('[study]\nepochs = "two"\n')
    with pytest.raises(UsageError, match="'epochs' should be int"):
        StudyConfig.from_toml(str(path))
    path.write_text("[study\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        StudyConfig.from_toml(str(path))


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "args,message",
    [
        (["demo", "--dataset", "imagenet-21k"], "neither a known name"),
        (["demo", "--dataset", "/no/such/folder"], "does not exist"),
        (["demo", "--backbone", "vit_giant"], "unknown backbone 'vit_giant'"),
        (["demo", "--mixers", "smoothmix-circle,blend"], "unknown mixer 'blend'"),
    ],
)
def test_demo_bad_input_is_one_line_and_status_2(args, message, capsys, tmp_path):
    out = tmp_path / "out"
    code, _, err = run_cli(args + ["--out", str(out)], capsys)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()  # nothing half-written


def test_demo_refuses_an_output_file(capsys, tmp_path):
    target = tmp_path / "results"
    target.write_text("not a folder")
    code, _, err = run_cli(["demo", "--out", str(target)], capsys)
    assert code == 2 and "is a file" in err
    assert target.read_text() == "not a folder"


def test_lpft_config_with_unknown_keys(capsys, tmp_path):
    path = tmp_path / "study.toml"
    path.write_text("[study]\nepochs = 1\nwarp_speed = 9\n")
    code, _, err = run_cli(["lpft", "--config", str(path)], capsys)
    assert code == 2 and "warp_speed" in err and len(err.strip().splitlines()) == 1


def test_lpft_writes_example(capsys, tmp_path):
    path = tmp_path / "example.toml"
    code, _, _ = run_cli(["lpft", "--write-example", str(path)], capsys)
    assert code == 0 and StudyConfig.from_toml(str(path)) == StudyConfig()


def test_info(capsys):
    code, out, _ = run_cli(["info"], capsys)
    assert code == 0 and "CUDA kernels built:" in out and "torch" in out
    assert f"cpu      {torch.backends.cpu.get_cpu_capability()}" in out
    assert "huge pages for fresh mixer outputs: requested" in out


def test_info_says_huge_pages_are_off(capsys, monkeypatch):
    monkeypatch.setenv("PYROBUST_HUGE_PAGES", "0")
    code, out, _ = run_cli(["info"], capsys)
    assert code == 0 and "off (PYROBUST_HUGE_PAGES=0)" in out


def _fraction(x):
    return isinstance(x, float) and 0.0 <= x <= 1.0


@pytest.mark.slow
def test_demo_quick_end_to_end(capsys, tmp_path):
    out = tmp_path / "demo"
    code, stdout, err = run_cli(["demo", "--quick", "--no-progress", "--out", str(out)], capsys)
    assert code == 0, err
    for name in ("results.json", "report.html", "id_vs_ood.png", "accuracy_vs_severity.png", "feature_change.png",
                 "probe_path.png", "mask_gallery.png", "theory_curves.png"):
        assert (out / name).stat().st_size > 0, name
    res = json.loads((out / "results.json").read_text())
    assert {"lp", "ft", "lpft", "lpft+smoothmix-circle"} <= set(res["methods"])
    cfg = StudyConfig.quick()
    sets = {f"{c}@{s}" for c in cfg.corruptions for s in cfg.severities}
    for name, m in res["methods"].items():
        assert _fraction(m["id_accuracy"]) and _fraction(m["ood_accuracy"]), name
        assert set(m["ood_by_set"]) == sets
        assert all(_fraction(v) for v in m["ood_by_set"].values())
        assert math.isclose(m["ood_accuracy"], sum(m["ood_by_set"].values()) / len(sets), rel_tol=1e-9)
    for name in ("ft", "lpft"):
        ch = res["feature_change"][name]
        assert ch["id"] > 0 and ch["ood"] > 0 and math.isfinite(ch["id"])
    probe = res["probe"]
    assert len(probe["Cs"]) == cfg.n_cs and all(_fraction(a) for a in probe["val_accuracy"])
    assert probe["best_C"] in probe["Cs"]
    assert res["theory"]["ft"]["ood_error"] > res["theory"]["lpft"]["ood_error"]
    assert res["timings"]["total_s"] > 0 and res["config"]["dataset"] == "digits"
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 6 and "LP-FT" in html
    assert "ID test %" in stdout  # the one-screen table


def test_extract_then_probe_commands(capsys, tmp_path):
    out = tmp_path / "feats"
    args = ["extract", "--dataset", "digits", "--backbone", "small_resnet", "--image-size", "16",
            "--splits", "train,val", "--out", str(out), "--dtype", "float32", "--no-progress"]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    import numpy as np

    feats = np.load(out / "train" / "features.npy", mmap_mode="r")
    labels = np.load(out / "train" / "labels.npy")
    assert feats.shape[0] == labels.shape[0] == 1000 and np.isfinite(feats).all()
    code, stdout2, err = run_cli(args, capsys)  # a second run loads the cache
    assert code == 0 and stdout2 == stdout
    code, _, err = run_cli(["probe", str(out / "train" / "features.npy"), "--train-y", str(out / "train" / "labels.npy"),
                            "--val", str(out / "val" / "features.npy"), "--val-y", str(out / "val" / "labels.npy"),
                            "--n-c", "3", "--out", str(tmp_path / "probe"), "--no-progress"], capsys)
    assert code == 0, err
    assert (tmp_path / "probe" / "probe_head.safetensors").exists()


def test_extract_bad_input(capsys, tmp_path):
    code, _, err = run_cli(["extract", "--dataset", "nope", "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "nope" in err and not (tmp_path / "x").exists()
    code, _, err = run_cli(["extract", "--splits", "train,holdout", "--backbone", "small_resnet",
                            "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "holdout" in err
