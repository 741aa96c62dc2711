"""``pyrobust lpft --config study.toml``: the LP-FT study with every option from a TOML file."""

from __future__ import annotations

import argparse
import os

from pyrobust.errors import UsageError
from pyrobust.study.config import StudyConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML file with a [study] table (keys: the fields of StudyConfig)")
    parser.add_argument("--out", help="output folder (overrides the config's)")
    parser.add_argument("--ood", action="append", metavar="PATH",
                        help="a natural-shift OOD set (image folder or .npz), added to the config's ood_datasets; "
                             "repeatable")
    parser.add_argument("--write-example", metavar="PATH", help="write the demo's defaults as a TOML config and exit")
    parser.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    if args.write_example:
        if os.path.isdir(args.write_example):
            raise UsageError(f"{args.write_example!r} is a folder; give a file path for the example config")
        with open(args.write_example, "w") as f:
            f.write(StudyConfig().to_toml())
        print(f"wrote {args.write_example}")
        return 0
    if not args.config:
        raise UsageError("give --config study.toml (or --write-example PATH for a starting point)")
    cfg = StudyConfig.from_toml(args.config)
    if args.out:
        cfg.out = args.out
    cfg.ood_datasets = list(cfg.ood_datasets) + list(args.ood or [])
    from pyrobust.study.demo import report_run

    return report_run(cfg, progress=not args.no_progress)
