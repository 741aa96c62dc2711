"""Batch mixing throughput: pyrobust beside timm, torchvision, kornia and plain PyTorch.

Every row mixes the same batch (default 64 x 3 x 224 x 224) in one process and reports images/s
for the whole call, targets included, and its ratio to the memory-bandwidth ceiling: a two-input
``torch.lerp`` into a preallocated output over the same bytes (read two batches, write one),
which is what a one-pass mix must at least do. Each row names its path: ``out=`` (a buffer the
caller keeps), the default call in the two common loops (``x, t = mixer(x, y)``, which releases
the previous output first, and ``xm, t = mixer(x, y)``, which still holds it), a fresh output
every call, and the in-place timm drop-in beside timm per mode, with the two-pass bound an
in-place mix cannot beat (one read and one write of the batch: ``copy_``).

Rows are timed interleaved, in turn over ``--rounds`` rounds, and each reports its median: the
ratios between rows are what travels from a shared machine.

    python benchmarks/bench_mix.py [--batch 64] [--size 224] [--device cpu|cuda] [--min-time 1.0] [--rounds 5]
"""

from __future__ import annotations

import argparse
import sys
import warnings

import torch
import torch.utils.benchmark as benchmark

from pyrobust.augment import CutMix, Cutout, MixUp, SmoothMix
from pyrobust.augment import timm as timm_dropin
from pyrobust.ops import mix as mix_ops


def measure(fn, min_time: float, device: str) -> float:
    """Seconds per call: the median of ``torch.utils.benchmark``'s blocked runs after a warm-up
    (it synchronises CUDA itself), with torch's current thread count."""
    fn()
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_time).median


def interleaved(rows: list, rounds: int, min_time: float, device: str) -> list:
    """``(name, dtype, seconds per call)`` for each ``(name, dtype, fn)``: every row timed in turn,
    ``min_time / rounds`` seconds a round, and the median over the rounds. The machine's speed
    drifts over minutes; interleaving gives every row the same drift, so ratios between rows
    hold where absolute figures do not."""
    per_round = max(min_time / rounds, 0.05)
    seconds = [[] for _ in rows]
    for _ in range(rounds):
        for k, (_, _, fn) in enumerate(rows):
            seconds[k].append(measure(fn, per_round, device))
    return [(name, dtype, sorted(t)[len(t) // 2]) for (name, dtype, _), t in zip(rows, seconds)]


def plain_smoothmix_circle(x: torch.Tensor, y: torch.Tensor, num_classes: int):
    """SmoothMix circle written the obvious way in PyTorch: a full (N, 1, H, W) mask per call."""
    n, _, h, w = x.shape
    perm = torch.randperm(n, device=x.device)
    cx = torch.rand(n, 1, 1, 1, device=x.device) * w
    cy = torch.rand(n, 1, 1, 1, device=x.device) * h
    s = 0.25 + 0.25 * torch.rand(n, 1, 1, 1, device=x.device)
    xs = torch.arange(w, device=x.device).view(1, 1, 1, w) + 0.5
    ys = torch.arange(h, device=x.device).view(1, 1, h, 1) + 0.5
    g = torch.exp(-((xs - cx) ** 2) / (2 * (s * w) ** 2) - ((ys - cy) ** 2) / (2 * (s * h) ** 2))
    out = g * x + (1 - g) * x[perm]
    lam = g.mean((1, 2, 3))
    onehot = torch.nn.functional.one_hot(y, num_classes).float()
    return out, lam[:, None] * onehot + (1 - lam[:, None]) * onehot[perm]


def incumbents(x, y, k):
    """(name, callable) for each incumbent that is installed."""
    rows = []
    try:
        from timm.data import Mixup

        for mode in ("batch", "elem"):
            mixer = Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, mode=mode, label_smoothing=0.0, num_classes=k)
            rows.append((f"timm Mixup cutmix ({mode})", lambda m=mixer: m(x.clone(), y)))
    except ImportError:
        print("timm not installed: its rows are left out", file=sys.stderr)
    try:
        from torchvision.transforms import v2

        cm, mu = v2.CutMix(num_classes=k), v2.MixUp(num_classes=k)
        rows.append(("torchvision v2 CutMix (batch)", lambda: cm(x, y)))
        rows.append(("torchvision v2 MixUp (batch)", lambda: mu(x, y)))
    except ImportError:
        print("torchvision not installed: its rows are left out", file=sys.stderr)
    try:
        import kornia.augmentation as K

        kc = K.RandomCutMixV2(data_keys=["input", "class"])
        rows.append(("kornia RandomCutMixV2 (sample)", lambda: kc(x, y)))
    except ImportError:
        print("kornia not installed: its rows are left out", file=sys.stderr)
    rows.append(("plain PyTorch SmoothMix circle (sample)", lambda: plain_smoothmix_circle(x, y, k)))
    return rows


def default_call_loops(make_mixer, x, y) -> dict:
    """The two common loops over a loader, as callables of one iteration each, each loop with its
    own mixer (a result one loop still holds would otherwise keep the other's pooled buffer)."""
    held = {"x": None, "xm": None}
    releasing_mixer, holding_mixer = make_mixer(), make_mixer()

    def releasing():  # for x, y in loader: x, t = mixer(x, y)
        held["x"] = x
        held["x"], _ = releasing_mixer(held["x"], y)

    def holding():  # for x, y in loader: xm, t = mixer(x, y)
        held["xm"], _ = holding_mixer(x, y)

    return {"x, t = mixer(x, y)": releasing, "xm, t = mixer(x, y)": holding}


def timm_rows(x32, y, k) -> list:
    """``(name, dtype, fn)``: timm's Mixup per mode beside pyrobust.augment.timm.Mixup, both
    mixing one batch in place (no clone inside the timing: repeated mixing keeps the values in
    range), and the bound."""
    rows = []
    work = x32.clone()
    rows.append(("two-pass bound: read + write the batch (copy_)", "float32", lambda: work.copy_(x32)))
    try:
        from timm.data import Mixup as TimmMixup
    except ImportError:
        print("timm not installed: the drop-in is timed alone", file=sys.stderr)
        TimmMixup = None
    kinds = {"mixup": dict(mixup_alpha=1.0), "cutmix": dict(mixup_alpha=0.0, cutmix_alpha=1.0),
             "cutmix circle": dict(mixup_alpha=0.0, cutmix_alpha=1.0, cutmix_mask="circle")}
    for mode in ("batch", "pair", "elem"):
        for kind, kw in kinds.items():
            kw = dict(kw, mode=mode, num_classes=k, label_smoothing=0.1)
            if TimmMixup is not None and "cutmix_mask" not in kw:
                timm_mixer = TimmMixup(**kw)
                rows.append((f"timm Mixup {kind} ({mode}, in place)", "float32", lambda m=timm_mixer: m(work, y)))
            ours = timm_dropin.Mixup(**kw)
            rows.append((f"pyrobust.augment.timm.Mixup {kind} ({mode}, in place)", "float32", lambda m=ours: m(work, y)))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds of timing per row, over all rounds")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of interleaved timing (median per row)")
    parser.add_argument("--quick", action="store_true", help="pyrobust rows and the ceiling only")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA device")
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    dev, n, k = args.device, args.batch, args.classes
    shape = (n, 3, args.size, args.size)
    x32 = torch.rand(shape, device=dev)
    x8 = (x32 * 255).to(torch.uint8)
    y = torch.randint(0, k, (n,), device=dev)

    rows = []  # (name, dtype, fn): timed interleaved below
    other, out32, out8 = torch.rand(shape, device=dev), torch.empty_like(x32), torch.empty_like(x8)
    rows.append(("ceiling: torch.lerp(a, b, w, out=)", "float32", lambda: torch.lerp(x32, other, 0.5, out=out32)))
    other8 = (other * 255).to(torch.uint8)
    # uint8 has no lerp: a copy of two inputs' worth of bytes bounds it the same way.
    rows.append(("ceiling: uint8 read 2 / write 1 (add, out=)", "uint8", lambda: torch.add(x8, other8, out=out8)))

    # pyrobust's mixers take the labels as a DataLoader yields them, on the CPU: their targets
    # are still made on the images' device, and host labels are checked without a sync. One row
    # shows labels already on the GPU (one sync per call for their range check); the incumbents
    # get the device labels they expect.
    y_host = y.cpu()
    gen = torch.Generator().manual_seed(0)
    mixers = [
        ("pyrobust SmoothMix circle", lambda ps: SmoothMix(k, "circle", per_sample=ps, generator=gen)),
        ("pyrobust SmoothMix square", lambda ps: SmoothMix(k, "square", per_sample=ps, generator=gen)),
        ("pyrobust CutMix", lambda ps: CutMix(k, per_sample=ps, generator=gen)),
        ("pyrobust MixUp", lambda ps: MixUp(k, per_sample=ps, generator=gen)),
        ("pyrobust Cutout", lambda ps: Cutout(k, per_sample=ps, generator=gen)),
    ]
    for name, make in mixers:
        for per_sample in (True, False):
            tag = "sample" if per_sample else "batch"
            for dtype, x, out in (("float32", x32, out32), ("uint8", x8, out8)):
                if not per_sample and dtype == "uint8" and "circle" not in name:
                    continue  # keep the table short: per-batch uint8 only for the headline mixer
                rows.append((f"{name} ({tag}, out=)", dtype,
                             lambda m=make(per_sample), xx=x, o=out: m(xx, y_host, out=o)))
    circle = SmoothMix(k, "circle", generator=gen)
    fresh = SmoothMix(k, "circle", generator=gen, reuse_outputs=False)
    rows.append(("pyrobust SmoothMix circle (sample, fresh output)", "float32", lambda: fresh(x32, y_host)))
    for dtype, x in (("float32", x32), ("uint8", x8)):
        for loop, fn in default_call_loops(lambda: SmoothMix(k, "circle", generator=gen), x, y_host).items():
            rows.append((f"pyrobust SmoothMix circle (sample, default call, {loop})", dtype, fn))
    if dev != "cpu":
        rows.append(("pyrobust SmoothMix circle (sample, out=, labels on device)", "float32",
                     lambda: circle(x32, y, out=out32)))
    # The blend op alone, parameters drawn once: on a GPU a batch of 64 moves its bytes in tens
    # of microseconds, so the mixer's per-call host work shows beside it. partner and params on
    # the host, as the mixers pass them (a partner on the device costs a sync for its check).
    partner, params, _ = circle.sample(n, args.size, args.size)
    rows.append(("pyrobust mix op alone (circle, sample, out=)", "float32",
                 lambda: mix_ops.mix(x32, partner, params, circle.profile, out=out32)))
    if not args.quick:
        for name, fn in incumbents(x32, y, k):
            rows.append((name, "float32", fn))
        rows += timm_rows(x32, y, k)
    rows = interleaved(rows, args.rounds, args.min_time, dev)
    tiny = torch.rand(n, 3, 2, 2, device=dev)
    host_us = measure(lambda: circle(tiny, y_host), args.min_time, dev) * 1e6
    targets_us = measure(lambda: mix_ops.mix_targets(x32, y_host, partner, params, circle.profile, False, k),
                         args.min_time, dev) * 1e6

    ceiling = {"float32": n / rows[0][2], "uint8": n / rows[1][2]}
    print(f"\nbatch {n}x3x{args.size}x{args.size}, {k} classes, device {dev}, torch threads {torch.get_num_threads()}")
    print(f"{'path':66s} {'dtype':8s} {'img/s':>10s} {'vs ceiling':>10s}")
    print("-" * 98)
    for name, dtype, t in rows:
        ips = n / t
        print(f"{name:66s} {dtype:8s} {ips:10,.0f} {ips / ceiling[dtype]:10.2f}")
    head = n / [t for name, d, t in rows if name.startswith("pyrobust SmoothMix circle (sample, out=)") and d == "float32"][0]
    best = {name: n / t for name, d, t in rows if not name.startswith(("pyrobust", "ceiling"))}
    tv = best.get("torchvision v2 CutMix (batch)")
    print(f"\nheadline: pyrobust SmoothMix circle per-sample float32 = {head:,.0f} img/s = "
          f"{head / ceiling['float32']:.2f} of the ceiling" + (f", {head / tv:.1f}x torchvision v2 CutMix" if tv else ""))
    print(f"host time of one SmoothMix call on {n} tiny (2x2) images, labels on the CPU: "
          f"{host_us:.0f} us (the ceiling moves this batch in {rows[0][2] * 1e6:.0f} us); "
          f"lam and targets of {n} {args.size}x{args.size} masks: {targets_us:.0f} us")
    ips = {(name, d): n / t for name, d, t in rows}
    for dtype in ("float32", "uint8"):
        with_out = ips[("pyrobust SmoothMix circle (sample, out=)", dtype)]
        for loop in ("x, t = mixer(x, y)", "xm, t = mixer(x, y)"):
            default = ips[(f"pyrobust SmoothMix circle (sample, default call, {loop})", dtype)]
            print(f"default call, {loop}, {dtype}: {default / with_out:.2f} of out="
                  + (f", {default / tv:.1f}x torchvision v2 CutMix" if tv and dtype == "float32" else ""))
    bound = ips.get(("two-pass bound: read + write the batch (copy_)", "float32"))
    for (name, _), value in ips.items():
        if bound and name.startswith("pyrobust.augment.timm.Mixup"):
            incumbent = ips.get((name.replace("pyrobust.augment.timm.Mixup", "timm Mixup"), "float32"))
            with_out = ips[("pyrobust SmoothMix circle (sample, out=)", "float32")]
            print(f"{name}: {value / bound:.2f} of the two-pass bound, {value / with_out:.2f}x the out= path"
                  + (f", {value / incumbent:.1f}x timm" if incumbent else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
