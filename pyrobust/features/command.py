"""``pyrobust extract``: cache a backbone's features of a dataset, one cache folder per split.

Each split lands in ``OUT/<split>/`` as ``features.npy`` (an (N, D) memory map) and ``labels.npy``,
ready for ``pyrobust probe OUT/train/features.npy --train-y OUT/train/labels.npy --val ...``.
A second run with the same backbone, data and options loads the cache instead of recomputing;
an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import os

import torch

from pyrobust.errors import UsageError, check_dataset, check_out_folder, resolve_device

DTYPES = {"float16": torch.float16, "float32": torch.float32}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="digits", help="digits (default), fashion-mnist, or a folder of class sub-folders")
    parser.add_argument("--backbone", default="efficientnet_lite0", help="a name of pyrobust.models.get_backbone")
    parser.add_argument("--image-size", type=int, default=64, dest="image_size")
    parser.add_argument("--splits", default="train,val,test", help="comma-separated splits to extract")
    parser.add_argument("--layer", help="a module name whose output is taken (default: the penultimate features)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float16", help="stored feature dtype")
    parser.add_argument("--batch-size", type=int, default=128, dest="batch_size")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--out", default="features", help="output folder (one sub-folder per split)")
    parser.add_argument("--seed", type=int, default=0, help="seed of any randomly initialised weights")
    parser.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    from pyrobust.data import DatasetNotFoundError, get_dataset
    from pyrobust.features import CacheCorrupted, CacheKeyMismatch, extract_features
    from pyrobust.models import get_backbone

    check_dataset(args.dataset)
    check_out_folder(args.out)
    for flag, value in (("--batch-size", args.batch_size), ("--image-size", args.image_size)):
        if value < 1:
            raise UsageError(f"{flag} must be >= 1, got {value}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    device = resolve_device(args.device)
    try:
        splits = get_dataset(args.dataset, image_size=args.image_size)
    except (DatasetNotFoundError, ValueError, FileNotFoundError) as exc:
        raise UsageError(str(exc).splitlines()[0]) from None
    wanted = [s for s in args.splits.split(",") if s]
    unknown = [s for s in wanted if s not in splits]
    if not wanted or unknown:
        raise UsageError(f"--splits should name some of {', '.join(splits)}, got {args.splits!r}")
    num_classes = len(getattr(splits["train"], "classes", [])) or 1000
    torch.manual_seed(args.seed)  # backbones without pretrained weights start the same each run
    try:
        model = get_backbone(args.backbone, num_classes=num_classes, image_size=args.image_size)
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc).splitlines()[0]) from None
    if args.layer and args.layer not in dict(model.named_modules()):
        raise UsageError(f"--layer {args.layer!r} is not a module of {args.backbone}")
    for split in wanted:
        try:
            cache = extract_features(model, splits[split], os.path.join(args.out, split), layer=args.layer,
                                     batch_size=args.batch_size, device=device, dtype=DTYPES[args.dtype],
                                     progress=not args.no_progress)
        except (CacheKeyMismatch, CacheCorrupted) as exc:  # the folder holds another or a damaged cache
            raise UsageError(str(exc).splitlines()[0]) from None
        n, d = cache.features.shape
        print(f"{split:6s} {n} x {d} {cache.features.dtype} -> {os.path.join(args.out, split, 'features.npy')}")
    return 0
