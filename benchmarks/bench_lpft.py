"""Feature cache and fine-tuning overheads, and LP from the cache, beside plain PyTorch / scikit-learn.

One process, one table (REFERENCES.md §4 gives the plain baseline's throughput on this 2-core machine):

1. feature extraction: ``pyrobust.features.extract_features`` (fingerprints, memmap writes, per-chunk checksums
   and progress records) vs a bare ``model.features`` loop over the same DataLoader; target ≤ 3 % overhead.
   Both feed channels-last batches (``pyrobust.models.model_input``); the bare loop on plain NCHW batches is
   timed too, for the speed-up that layout brings.
2. linear probe on cached features: ``pyrobust.lpft.linear_probe`` (probe sweep, LP-FT defaults: scalar
   standardisation) vs scikit-learn ``LogisticRegression`` (lbfgs, warm starts) over the same C grid.
3. one fine-tuning epoch: ``pyrobust.lpft.finetune`` vs a hand-written PyTorch loop doing the same work (SGD
   momentum 0.9, cosine lr per step, BatchNorm in eval mode, cross-entropy, channels-last batches);
   target ≤ 5 % overhead. Also timed on plain NCHW batches.

Backbone: EfficientNet-Lite0 (ImageNet weights) at 64 px; data: scikit-learn digits (pyrobust.data).
``python benchmarks/bench_lpft.py [--quick] [--threads N] [--device cpu|cuda]``
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _input(x, device, nhwc):
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if nhwc else x


def bare_extract(model, loader, device, nhwc=True):
    model.eval()
    amp = torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else torch.autocast("cpu",
                                                                                                    enabled=False)
    out = []
    with torch.inference_mode(), amp:
        for x, _ in loader:
            out.append(model.features(_input(x, device, nhwc)).to(torch.float16).cpu())
    _sync(device)
    return torch.cat(out)


def plain_epoch(model, loader, lr, epochs, device, nhwc=True):
    """The baseline loop: what a user writes by hand for one FT epoch with the LP-FT protocol
    (``nhwc``: channels-last input, as pyrobust feeds it; False: the plain NCHW default)."""
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    total = epochs * len(loader)
    for step, (x, y) in enumerate(loader):
        for g in opt.param_groups:
            g["lr"] = 0.5 * lr * (1 + math.cos(math.pi * step / total))
        loss = F.cross_entropy(model(_input(x, device, nhwc)), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)


def timed(fn, reps):
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def bench_extract(model, loader, tmp, reps, device):
    """Alternating runs; each cached run writes a fresh store (fingerprints, memmap, checksums, progress)."""
    from pyrobust.features import extract_features

    bare_extract(model, loader, device)  # warm-up
    t_bare, t_cache, t_nchw = [], [], []
    for r in range(reps):
        t_bare += timed(lambda: bare_extract(model, loader, device), 1)
        t_cache += timed(lambda: extract_features(model, loader, f"{tmp}/extract{r}", device=device,
                                                  progress=False), 1)
        t_nchw += timed(lambda: bare_extract(model, loader, device, nhwc=False), 1)
    t = time.perf_counter()
    extract_features(model, loader, f"{tmp}/extract0", device=device, progress=False)
    print(f"reload of a finished cache (fingerprint + verify): {time.perf_counter() - t:.3f} s "
          f"vs {statistics.median(t_bare):.3f} s for a bare pass")
    n = len(loader.dataset)
    tb, tc, tn = statistics.median(t_bare), statistics.median(t_cache), statistics.median(t_nchw)
    print(f"bare loop on NCHW input: {n / tn:.0f} img/s; extract_features is {tn / tc:.2f}x its speed")
    return ("extract features (img/s)", "bare model.features loop", n / tb, "extract_features", n / tc, tc / tb)


def bench_lp(model, loader, val_loader, tmp, device, max_iter):
    """Same cached features, same C grid, same iteration cap; scalar standardisation for both."""
    from sklearn.linear_model import LogisticRegression

    from pyrobust.features import extract_features
    from pyrobust.lpft import linear_probe

    c_train = extract_features(model, loader, f"{tmp}/train", device=device, progress=False)
    c_val = extract_features(model, val_loader, f"{tmp}/val", device=device, progress=False)
    Cs = np.logspace(-4, 2, 8)
    t = time.perf_counter()
    _, sweep = linear_probe(c_train, c_val, Cs=Cs, progress=False, max_iter=max_iter)
    t_lp = time.perf_counter() - t
    Xtr, ytr = np.asarray(c_train.features, dtype=np.float32), np.asarray(c_train.labels)
    Xva, yva = np.asarray(c_val.features, dtype=np.float32), np.asarray(c_val.labels)
    mu, sd = Xtr.mean(), Xtr.std()
    t = time.perf_counter()
    clf = LogisticRegression(warm_start=True, max_iter=max_iter)
    best = -1.0
    for C in Cs:
        clf.set_params(C=C).fit((Xtr - mu) / sd, ytr)
        best = max(best, clf.score((Xva - mu) / sd, yva))
    t_sk = time.perf_counter() - t
    return (f"LP sweep, {len(Cs)} C (s)", f"sklearn lbfgs, val {best:.3f}", t_sk,
            f"linear_probe, val {max(sweep.val_accuracy):.3f}", t_lp, t_lp / t_sk)


def bench_ft(model, train, bs, reps, device):
    """One epoch, same init, same batches, no checkpoint or validation in either."""
    from pyrobust.lpft import finetune

    train_loader = DataLoader(train, batch_size=bs, shuffle=False)
    plain_epoch(copy.deepcopy(model), train_loader, 1e-3, 1, device)  # warm-up
    t_plain, t_ft, t_nchw = [], [], []
    run_plain = lambda m: plain_epoch(m, train_loader, 1e-3, 1, device)  # noqa: E731
    run_nchw = lambda m: plain_epoch(m, train_loader, 1e-3, 1, device, nhwc=False)  # noqa: E731
    run_ours = lambda m: finetune(m, m.head, train_loader, None, epochs=1, lr=1e-3, device=device,  # noqa: E731
                                  progress=False)
    for r in range(reps):  # A B, then B A, ...: drifting machine load favours neither side
        order = [(run_plain, t_plain), (run_ours, t_ft), (run_nchw, t_nchw)]
        for fn, times in order if r % 2 == 0 else order[::-1]:
            m = copy.deepcopy(model)
            times += timed(lambda: fn(m), 1)
    tp, tf, tn = statistics.median(t_plain), statistics.median(t_ft), statistics.median(t_nchw)
    print(f"plain loop on NCHW input: {tn:.2f} s per epoch; finetune is {tn / tf:.2f}x its speed")
    return ("FT epoch (s)", "plain PyTorch loop", tp, "finetune", tf, tf / tp)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="256 train images, 2 repetitions (smoke run)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--only", default="extract,lp,ft", help="comma-separated subset of extract,lp,ft")
    ap.add_argument("--max-iter", type=int, default=200, help="iteration cap per C, the same for both probes")
    ap.add_argument("--reps", type=int, default=None, help="repetitions per timing (default 3; 2 with --quick)")
    args = ap.parse_args()
    parts = set(args.only.split(","))
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    from pyrobust.data import load_digits_splits
    from pyrobust.models import efficientnet_lite0

    reps = args.reps or (2 if args.quick else 3)
    splits = load_digits_splits(image_size=args.size)
    train, val = splits["train"], splits["val"]
    if args.quick:
        train = torch.utils.data.Subset(train, range(256))
    model = efficientnet_lite0(num_classes=10, image_size=args.size).to(device)
    bs = 64
    loader = DataLoader(train, batch_size=bs)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if "extract" in parts:
            rows.append(bench_extract(model, loader, tmp, reps, device))
        if "lp" in parts:
            rows.append(bench_lp(model, loader, DataLoader(val, batch_size=bs), tmp, device, args.max_iter))
    if "ft" in parts:
        rows.append(bench_ft(model, train, bs, reps, device))

    print(f"\nEfficientNet-Lite0 @ {args.size}px, {len(train)} train images, batch {bs}, {args.threads} threads, "
          f"{device}, median of {reps}")
    print("| task | incumbent | value | pyrobust | value | pyrobust time / incumbent time |")
    print("|---|---|---|---|---|---|")
    for task, inc, v_inc, ours, v_ours, ratio in rows:
        print(f"| {task} | {inc} | {v_inc:.3g} | {ours} | {v_ours:.3g} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
