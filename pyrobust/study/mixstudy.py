"""``pyrobust mixstudy``: does SmoothMix keep CutMix's clean accuracy and beat it under corruptions, here?

The SmoothMix paper's experiment (Lee et al., CVPRW 2020) on the user's data: the same classifier is
trained from scratch once per batch mixer (and seed) with identical initialisation, data order and
schedule (:mod:`pyrobust.study.mixstudy_train`), then scored on the clean test set and on every
corruption × severity of :mod:`pyrobust.data.corruptions` (:mod:`pyrobust.study.mixstudy_eval`), and
probed with Grad-CAM on hard- and soft-edged pasted patches. Outputs in ``--out``: ``results.json``,
``report.html`` and its PNG figures (:mod:`pyrobust.study.mixstudy_report`). The settings are a
:class:`~pyrobust.study.mixstudy_config.MixStudyConfig`; every choice is recorded in
``results.json["config"]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import torch

from pyrobust.errors import UsageError, check_out_folder, resolve_device
from pyrobust.study.mixstudy_config import MixStudyConfig

__all__ = ["add_arguments", "run", "config_from_args", "resolve_config"]

BOX_SIZE = 0.5  # side of the probe patch, a fraction of the image side (CutMix's mean box area is 1/2)
SOFT_EDGE = 0.2  # SmoothMix's square-mask edge k

# flag -> field; a flag that is not given leaves the configuration's value
_FLAGS = ("dataset", "model", "width", "epochs", "seeds", "out", "device", "image_size", "batch_size", "workers",
          "threads", "lr", "corruption_images", "cam_images")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML file with a [mixstudy] table (keys: the fields of MixStudyConfig); "
                                         "flags given override it")
    parser.add_argument("--dataset", default=None,
                        help="fashion-mnist, digits or an image folder (default: fashion-mnist when its files "
                             "are installed, digits otherwise; digits with --quick)")
    parser.add_argument("--model", default=None,
                        help="classifier trained from scratch (default small_resnet)")
    parser.add_argument("--width", type=int, default=None,
                        help="small_resnet first-stage channels (default 16; quick 8)")
    parser.add_argument("--mixers", default=None,
                        help="comma-separated mixers, 'none' the baseline without mixing "
                             "(default: none and every mixer of pyrobust.augment)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs per model (default 3; quick 6)")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds, 0..N-1 (default 1)")
    parser.add_argument("--out", default=None, help="output folder (default ./mixstudy-out)")
    parser.add_argument("--quick", action="store_true", help="a small, fast run that checks the pipeline")
    parser.add_argument("--device", default=None, help="cpu (default), cuda, cuda:N or auto")
    parser.add_argument("--image-size", type=int, default=None, help="image side in pixels (default 28; quick 16)")
    parser.add_argument("--batch-size", type=int, default=None, help="training batch size (default 256; quick 64)")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader worker processes that mix (default 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads of the training process (default: CPU count minus workers, >= 1)")
    parser.add_argument("--lr", type=float, default=None, help="peak SGD learning rate (default 0.1)")
    parser.add_argument("--corruption-images", type=int, default=None,
                        help="test images per corrupted set (default 2000; quick 200; 0 = all)")
    parser.add_argument("--cam-images", type=int, default=None,
                        help="test images in the CAM probe (default 500; quick 64)")


def config_from_args(args) -> MixStudyConfig:
    """The configuration of ``--config`` (or the defaults), ``--quick`` sizes if asked, then the flags given."""
    values = MixStudyConfig.read_toml(args.config) if getattr(args, "config", None) else {}
    if getattr(args, "quick", False):
        values["quick"] = True
    cfg = MixStudyConfig.from_dict(values, source=getattr(args, "config", None) or "--quick")
    overrides = {key: getattr(args, key) for key in _FLAGS if getattr(args, key, None) is not None}
    if getattr(args, "mixers", None) is not None:
        overrides["mixers"] = _parse_mixers(args.mixers)
    return dataclasses.replace(cfg, **overrides)


def _positive(name: str, value, minimum=1) -> None:
    if value < minimum:
        raise UsageError(f"--{name.replace('_', '-')} must be >= {minimum}, got {value}")


def _parse_mixers(text: str) -> list:
    return [t.strip().lower() for t in str(text).split(",") if t.strip()]


def _check_mixers(names: list) -> None:
    from pyrobust.study.mixstudy_train import MIXER_NAMES

    if not names:
        raise UsageError(f"--mixers is empty; give a comma-separated list of {', '.join(MIXER_NAMES)}")
    unknown = [n for n in names if n not in MIXER_NAMES]
    if unknown:
        raise UsageError(f"unknown mixer {unknown[0]!r} in --mixers; known: {', '.join(MIXER_NAMES)}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UsageError(f"mixer {dup[0]!r} is listed twice in --mixers")


def _resolve_dataset(value: str) -> tuple:
    """(name or path, channels); raises UsageError for a missing name or path."""
    from pyrobust.data import DatasetNotFoundError, find_fashion_mnist

    key = value.strip().lower().replace("_", "-")
    if key == "auto":
        try:
            find_fashion_mnist()
            return "fashion-mnist", 1
        except DatasetNotFoundError:
            return "digits", 1
    if key in ("digits",):
        return "digits", 1
    if key in ("fashion-mnist", "fashionmnist"):
        try:
            find_fashion_mnist()
        except DatasetNotFoundError as exc:
            raise UsageError(str(exc)) from None
        return "fashion-mnist", 1
    if not os.path.exists(value):
        raise UsageError(f"--dataset {value!r} is neither 'fashion-mnist' nor 'digits' nor an existing folder")
    if not os.path.isdir(value):
        raise UsageError(f"--dataset {value!r} is a file; expected a folder with one sub-folder per class")
    return os.path.abspath(value), 3


def resolve_config(cfg) -> dict:
    """Every setting of the run, validated, as recorded in ``results.json["config"]``; raises
    :class:`UsageError` before anything is computed. ``cfg``: a :class:`MixStudyConfig` (or the
    command's parsed arguments)."""
    from pyrobust.data import CORRUPTIONS

    if not isinstance(cfg, MixStudyConfig):
        cfg = config_from_args(cfg)
    mixers = _parse_mixers(",".join(cfg.mixers))
    _check_mixers(mixers)
    for name in ("epochs", "seeds", "width", "cam_images"):
        _positive(name, getattr(cfg, name))
    for name in ("workers", "threads", "corruption_images"):
        _positive(name, getattr(cfg, name), 0)
    if cfg.image_size < 8:
        raise UsageError(f"--image-size must be >= 8, got {cfg.image_size}")
    if cfg.batch_size < 2:
        raise UsageError(f"--batch-size must be >= 2 (mixing pairs images of a batch), got {cfg.batch_size}")
    if not cfg.lr > 0:
        raise UsageError(f"--lr must be > 0, got {cfg.lr}")
    for s in cfg.severities:
        if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= 5:
            raise UsageError(f"severities must be integers in 1..5, got {s!r}")
    device = resolve_device(cfg.device)
    dataset, channels = _resolve_dataset(cfg.dataset)
    model = cfg.model.strip()
    small = model.lower().replace("-", "_") == "small_resnet"
    if not small:
        channels = 3  # other backbones take RGB; grey images are replicated
    record = {
        "dataset": dataset, "channels": channels, "model": model,
        "width": cfg.width if small else None,
        "mixers": mixers, "seeds": list(range(cfg.seeds)),
        "epochs": cfg.epochs, "image_size": cfg.image_size,
        "batch_size": cfg.batch_size, "lr": cfg.lr,
        "workers": cfg.workers,
        "threads": cfg.threads or max(1, (os.cpu_count() or 1) - cfg.workers),
        "device": str(device), "quick": cfg.quick, "out": check_out_folder(cfg.out),
        "corruptions": list(CORRUPTIONS), "severities": list(cfg.severities),
        "corruption_images": cfg.corruption_images,
        "cam_images": cfg.cam_images, "box_size": BOX_SIZE, "soft_edge": SOFT_EDGE,
        "corruption_seed": 0,
    }
    from pyrobust.study.mixstudy_train import build_model

    try:  # an unknown --model must fail here, before any data is loaded
        build_model(model, 10, channels, record["image_size"], record["width"] or 16, 0)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--model: {exc}") from None
    return record


def _as_tensors(dataset, desc: str, progress: bool) -> tuple:
    from tqdm.auto import tqdm

    n = len(dataset)
    xs, ys = [], []
    chunk = 4096
    get = getattr(dataset, "__getitems__", None)
    for start in tqdm(range(0, n, chunk), desc=desc, unit="chunk", disable=not progress, leave=False):
        idx = list(range(start, min(n, start + chunk)))
        items = get(idx) if get is not None else [dataset[i] for i in idx]
        xs.append(torch.stack([it[0] for it in items]))
        ys.append(torch.as_tensor([int(it[1]) for it in items]))
    return torch.cat(xs).contiguous(), torch.cat(ys).long()


def _mixing_only_rate(mixer, images: torch.Tensor, labels: torch.Tensor, repeats: int = 10) -> float:
    mixer(images, labels)  # warm-up (loads the compiled core once)
    start = time.perf_counter()
    for _ in range(repeats):
        mixer(images, labels)
    return repeats * images.shape[0] / max(time.perf_counter() - start, 1e-9)


def run(args) -> int:
    from pyrobust.data import get_dataset
    from pyrobust.report import write_json
    from pyrobust.study.mixstudy_eval import accuracy_grid, cam_probe, last_spatial_layer, make_probe_set
    from pyrobust.study.mixstudy_report import summarise, terminal_table, verdict, write_report
    from pyrobust.study.mixstudy_train import (BatchTensorDataset, build_model, make_train_loader, study_mixer,
                                               train_model)

    cfg = resolve_config(args)
    progress = not getattr(args, "no_progress", False)
    t_start = time.perf_counter()
    torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])

    splits = get_dataset(cfg["dataset"], image_size=cfg["image_size"], channels=cfg["channels"], seed=0,
                         **({"val_size": 0} if cfg["dataset"] == "fashion-mnist" else {}))
    train_x, train_y = _as_tensors(splits["train"], "load train", progress)
    test_x, test_y = _as_tensors(splits["test"], "load test", progress)
    num_classes = int(max(int(train_y.max()), int(test_y.max())) + 1)
    pick = torch.Generator().manual_seed(12345)
    order = torch.randperm(test_x.shape[0], generator=pick)
    n_corr = test_x.shape[0] if cfg["corruption_images"] == 0 else min(cfg["corruption_images"], test_x.shape[0])
    corr_idx = order[:n_corr].sort().values
    cam_idx = order[-min(cfg["cam_images"], test_x.shape[0]):]
    cfg.update(n_train=int(train_x.shape[0]), n_test=int(test_x.shape[0]), n_corruption_test=int(n_corr),
               cam_images=int(cam_idx.numel()), num_classes=num_classes,
               patch_area_fraction=round(cfg["box_size"] * cfg["image_size"]) ** 2 / cfg["image_size"] ** 2,
               corruption_subset="seeded random subset (generator seed 12345) of the test set; clean accuracy "
                                 "uses the whole test set")
    t_data = time.perf_counter() - t_start
    train_set = BatchTensorDataset(train_x, train_y)

    timings = {"train_images_per_s": {}, "mixing_only_images_per_s": {}, "data_wait_s": {}, "train_s": {}}
    for name in cfg["mixers"]:
        mixer = study_mixer(name, num_classes, 0)
        bs = min(cfg["batch_size"], train_x.shape[0])
        timings["mixing_only_images_per_s"][name] = (
            None if mixer is None else _mixing_only_rate(mixer, train_x[:bs], train_y[:bs]))

    models, train_stats = {}, {}
    runs = [(name, seed) for seed in cfg["seeds"] for name in cfg["mixers"]]
    for i, (name, seed) in enumerate(runs, 1):
        model = build_model(cfg["model"], num_classes, cfg["channels"], cfg["image_size"], cfg["width"] or 16, seed)
        loader = make_train_loader(train_set, study_mixer(name, num_classes, seed), seed=seed,
                                   batch_size=min(cfg["batch_size"], len(train_set)), workers=cfg["workers"],
                                   num_classes=num_classes)
        stats = train_model(model, loader, epochs=cfg["epochs"], lr=cfg["lr"], device=device,
                            desc=f"[{i}/{len(runs)}] {name} seed {seed}", progress=progress)
        del loader  # stops its persistent worker
        models[(name, seed)], train_stats[(name, seed)] = model, stats
        print(f"trained {name:>16} seed {seed}: {stats['images_per_s']:.0f} img/s, loss {stats['final_loss']:.3f}, "
              f"{stats['seconds']:.1f} s", flush=True)
    t_train = time.perf_counter() - t_start - t_data

    grid = accuracy_grid(models, test_x, test_y, test_x[corr_idx], test_y[corr_idx], corr_idx,
                         cfg["corruptions"], cfg["severities"], device, seed=cfg["corruption_seed"],
                         progress=progress)
    t_eval = time.perf_counter() - t_start - t_data - t_train

    probe = make_probe_set(test_x[cam_idx], test_y[cam_idx], box_size=cfg["box_size"], edge=cfg["soft_edge"], seed=0)
    layer = last_spatial_layer(next(iter(models.values())), test_x[:1].to(device))
    cfg["cam_layer"] = layer
    cams = {}
    for key, model in models.items():
        c = cam_probe(model, probe, layer, device)
        cams[key] = c
        grid[key]["cam"] = {
            "mass_hard": float(c["mass_hard"].nanmean()), "mass_soft": float(c["mass_soft"].nanmean()),
            "donor_rate_hard": float((c["pred_hard"] == probe["donor_labels"]).float().mean()),
        }
        grid[key]["train"] = train_stats[key]
    t_cam = time.perf_counter() - t_start - t_data - t_train - t_eval

    mixers = summarise(grid, cfg["mixers"], cfg["seeds"])
    seed0 = cfg["seeds"][0]
    panel_names = [n for n in ("cutmix", "smoothmix-square", "smoothmix-circle") if n in cfg["mixers"]][:2]
    if len(panel_names) < 2:
        panel_names = (panel_names + [n for n in cfg["mixers"] if n not in panel_names])[:2]
    panel_cams = {n: cams[(n, seed0)] for n in panel_names}

    none_rate = mixers["none"]["train_images_per_s"] if "none" in mixers else None
    for name, m in mixers.items():
        timings["train_images_per_s"][name] = m["train_images_per_s"]
        timings["train_s"][name] = sum(r["train"]["seconds"] for r in m["per_seed"]) / len(m["per_seed"])
        timings["data_wait_s"][name] = sum(r["train"]["data_wait_s"] for r in m["per_seed"]) / len(m["per_seed"])
    timings["slowdown_vs_none"] = {n: (none_rate / r if none_rate else None)
                                   for n, r in timings["train_images_per_s"].items()}
    timings.update(data_s=t_data, train_total_s=t_train, eval_s=t_eval, cam_s=t_cam)
    lines = verdict(mixers, len(cfg["seeds"]))
    results = {"mixers": mixers, "config": cfg, "timings": timings, "verdict": lines}
    os.makedirs(cfg["out"], exist_ok=True)
    timings["total_s"] = time.perf_counter() - t_start
    report_path = write_report(cfg["out"], results, lines, probe, panel_cams, n_show=4)
    timings["total_s"] = time.perf_counter() - t_start
    write_json(os.path.join(cfg["out"], "results.json"), results)

    print(terminal_table(mixers))
    for line in lines:
        print(line)
    print(f"wrote {os.path.join(cfg['out'], 'results.json')} and {report_path} in {timings['total_s']:.0f} s")
    return 0
