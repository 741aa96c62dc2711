"""What makes LP-FT with a batch mixer collapse: the LP head it starts from, the lr, or the mixer.

One run of the ablation behind the LP-FT study's choice of LP head (``pyrobust.study.lp_head``), on the
demo's data and settings (``StudyConfig()``: scikit-learn digits at 48 px, EfficientNet-Lite0, 2 epochs
of SGD with a cosine schedule, BatchNorm in eval mode, the demo's corrupted test sets as OOD):

1. the probe sweep, per C: validation accuracy and loss, the head's norm and mean confidence;
2. LP-FT with SmoothMix (circle) at lr 3e-4 from four heads of that sweep: the sweep's own choice (best
   val accuracy), the study's rule (lowest val loss within one standard error of the best accuracy), the
   strongest penalty within that error, and the sweep's head scaled down to the rule head's norm (its
   direction, the rule head's size); the sweep's and the rule's head also without a mixer, at lr 1e-4,
   and with MixUp (alpha 0.2) and CutMix.

For each run: the head's norm, the soft cross-entropy of the starting model on one mixed batch (step 0),
the first epoch's mean training loss, ID test and mean OOD accuracy, and the mean squared change of the
penultimate features on ID test images. ``docs/lpft-study.md`` holds one run's table.

``python benchmarks/ablate_lpft_head.py [--out DIR] [--threads N]`` (about 10-20 minutes on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from pyrobust.distortion import feature_change
from pyrobust.features import extract_features
from pyrobust.lpft import evaluate, finetune, linear_probe, soft_cross_entropy
from pyrobust.lpft.probe_head import head_at
from pyrobust.models import get_backbone
from pyrobust.study.config import StudyConfig
from pyrobust.study.lp_head import accuracy_margin, lp_head_index
from pyrobust.study.lpft_study import load_data, study_mixer
from pyrobust.tables import format_table


def head_confidence(head, X) -> float:
    with torch.no_grad():
        return float(torch.softmax(head(torch.as_tensor(np.asarray(X), dtype=torch.float32)), 1).max(1).values.mean())


def step0_loss(model, head, loader, mixer) -> float:
    """Soft cross-entropy of backbone + ``head`` on the first training batch, mixed by ``mixer`` (or not)."""
    m = copy.deepcopy(model)
    m.head = copy.deepcopy(head)
    m.eval()
    images, labels = next(iter(loader))
    if mixer is None:
        targets = torch.nn.functional.one_hot(labels, head.out_features).float()
    else:
        mixer = copy.deepcopy(mixer)
        images, targets = mixer(images, labels)[:2]
    with torch.no_grad():
        return float(soft_cross_entropy(m(images), targets))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="folder for the feature cache (default: a temporary one)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = StudyConfig()
    torch.manual_seed(cfg.seed)
    train, val, test, k, ood = load_data(cfg)
    model = get_backbone(cfg.backbone, num_classes=k, image_size=cfg.image_size)
    model.eval()
    mk = dict(batch_size=cfg.batch_size, num_workers=0)
    train_loader = DataLoader(train, shuffle=True, generator=torch.Generator().manual_seed(cfg.seed), **mk)
    val_loader = DataLoader(val, **mk)
    eval_sets = {"id_test": DataLoader(test, **mk), **{n: DataLoader(d, **mk) for n, d in ood.items()}}
    root = args.out or tempfile.mkdtemp(prefix="ablate-lpft-")
    t0 = time.perf_counter()
    c_train = extract_features(model, DataLoader(train, **mk), os.path.join(root, "train"), progress=False)
    c_val = extract_features(model, DataLoader(val, **mk), os.path.join(root, "val"), progress=False)
    _, sweep = linear_probe(c_train, c_val, np.logspace(cfg.c_min, cfg.c_max, cfg.n_cs),
                            standardize=cfg.standardize, progress=False)
    n_val = len(val)
    rule = lp_head_index(sweep.val_accuracy, sweep.val_loss, n_val)
    best = float(sweep.val_accuracy.max())
    within = np.flatnonzero(sweep.val_accuracy >= best - accuracy_margin(best, n_val) - 1e-12)
    strongest = int(within[0])
    heads = [head_at(sweep, i) for i in range(len(sweep.Cs))]
    print(f"probe sweep ({n_val} val images; one standard error = {accuracy_margin(best, n_val):.4f}):")
    rows = []
    for i, c in enumerate(sweep.Cs):
        mark = ", ".join(n for n, j in (("sweep", sweep.best_index), ("rule", rule), ("strongest", strongest)) if j == i)
        rows.append([f"{c:.3g}", f"{sweep.val_accuracy[i]:.4f}", f"{sweep.val_loss[i]:.4f}",
                     f"{float(heads[i].weight.detach().norm()):.3g}", f"{head_confidence(heads[i], c_val.features):.3f}", mark])
    print(format_table(rows, ["C", "val acc", "val loss", "head norm", "val confidence", "chosen by"], markdown=True))

    scaled = copy.deepcopy(heads[sweep.best_index])
    with torch.no_grad():
        f = float(heads[rule].weight.norm() / scaled.weight.norm())
        scaled.weight.mul_(f)
        scaled.bias.mul_(f)
    variants = {"sweep (best val acc)": (sweep.best_index, heads[sweep.best_index]),
                "rule (min val loss within 1 SE)": (rule, heads[rule]),
                "strongest within 1 SE": (strongest, heads[strongest]),
                "sweep head scaled to rule's norm": (sweep.best_index, scaled)}
    sweep_head, rule_head, strongest_head, scaled_head = variants
    smx = "smoothmix-circle"
    plan = [(sweep_head, 3e-4, smx), (rule_head, 3e-4, smx), (sweep_head, 3e-4, None), (rule_head, 3e-4, None),
            (scaled_head, 3e-4, smx), (sweep_head, 1e-4, smx), (strongest_head, 3e-4, smx),
            (sweep_head, 3e-4, "mixup"), (rule_head, 3e-4, "mixup"), (sweep_head, 3e-4, "cutmix"),
            (rule_head, 3e-4, "cutmix"), (rule_head, 1e-4, smx)]
    rows = []
    for variant, lr, mixer_name in plan:
        index, head = variants[variant]
        mixer = study_mixer(mixer_name, k, cfg.seed) if mixer_name else None
        s0 = step0_loss(model, head, train_loader, mixer)
        m, hist = finetune(copy.deepcopy(model), copy.deepcopy(head), train_loader, val_loader, epochs=cfg.epochs,
                           lr=lr, seed=cfg.seed, mixer=mixer, progress=False, device="cpu")
        acc = evaluate(m, eval_sets, device="cpu")
        ch = feature_change(model, m, {"id": eval_sets["id_test"]}, max_batches=cfg.feature_change_batches)
        ood_mean = float(np.mean([acc[n] for n in ood]))
        rows.append([variant, f"{sweep.Cs[index]:.3g}", f"{float(head.weight.detach().norm()):.3g}", f"{lr:g}",
                     mixer_name or "none", f"{s0:.2f}", f"{hist['train_loss'][0]:.2f}",
                     f"{100 * acc['id_test']:.1f}", f"{100 * ood_mean:.1f}",
                     f"{ch['id']['mean_squared_change']:.3g}"])
        print("  " + " | ".join(rows[-1]) + f" ({time.perf_counter() - t0:.0f} s)", flush=True)
    print()
    print(format_table(rows, ["LP head", "C", "head norm", "lr", "mixer", "step-0 loss", "epoch-1 loss", "ID test %",
                              "OOD mean %", "Δfeat ID (mean sq.)"], markdown=True))
    print(f"\n{len(plan)} LP-FT runs, {time.perf_counter() - t0:.0f} s in all; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
