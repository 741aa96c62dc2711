"""Mixing in DataLoader workers: a 2-worker loader with ``MixCollate`` beside the same loader with
the default collate.

Samples are 3 x 224 x 224 tensors held in memory (no transform), batch 64, float32 and uint8; the
loaders are timed in turn over several rounds (the ratio within a round is what travels: the
machine may be shared), and each round prints images/s of both and their ratio.

    python benchmarks/bench_mix_loader.py [--rounds 8] [--batches 40] [--workers 2]

Each round starts the workers afresh, as a new epoch does; a round's ratio moves by about ±0.1 on
a shared 2-core machine, so the median of several rounds is the figure to quote.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch.utils.data import DataLoader, Dataset

from pyrobust.augment import MixCollate, SmoothMix


class InMemory(Dataset):
    """``count`` samples ``(image, label)`` cycling over a few distinct images."""

    def __init__(self, count: int, dtype: torch.dtype, size: int) -> None:
        g = torch.Generator().manual_seed(0)
        images = torch.rand(8, 3, size, size, generator=g)
        self.images = list((images * 255).to(torch.uint8) if dtype == torch.uint8 else images)
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int):
        return self.images[i % len(self.images)], i % 10


def images_per_second(loader: DataLoader) -> float:
    it = iter(loader)
    next(it)  # workers started and warm
    start, seen = time.perf_counter(), 0
    for images, _ in it:
        seen += images.shape[0]
    return seen / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    for dtype in (torch.float32, torch.uint8):
        data = InMemory(args.batch * (args.batches + 1), dtype, args.size)
        loaders = {
            "default collate": DataLoader(data, args.batch, num_workers=args.workers),
            "MixCollate(SmoothMix circle)": DataLoader(
                data, args.batch, num_workers=args.workers,
                collate_fn=MixCollate(SmoothMix(10, "circle", generator=torch.Generator().manual_seed(0)))),
        }
        ratios = []
        for r in range(args.rounds):
            ips = {name: images_per_second(loader) for name, loader in loaders.items()}
            ratio = ips["MixCollate(SmoothMix circle)"] / ips["default collate"]
            ratios.append(ratio)
            print(f"{str(dtype):14s} round {r}: " + ", ".join(f"{k} {v:,.0f} img/s" for k, v in ips.items())
                  + f", ratio {ratio:.2f}", flush=True)
        ratios.sort()
        print(f"{str(dtype):14s} MixCollate / default collate: median {ratios[len(ratios) // 2]:.2f}, "
              f"range {ratios[0]:.2f}-{ratios[-1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
