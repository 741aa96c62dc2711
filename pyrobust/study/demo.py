"""``pyrobust demo``: the LP / FT / LP-FT study on the embedded default (see ``lpft_study``)."""

from __future__ import annotations

import argparse
import os

from pyrobust.study.config import StudyConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", help="digits (default), fashion-mnist, or a folder of class sub-folders")
    parser.add_argument("--backbone", help="efficientnet_lite0 (default), small_resnet, resnet18, torchvision:NAME, timm:NAME")
    parser.add_argument("--out", help="output folder (default demo-out)")
    parser.add_argument("--quick", action="store_true", help="a one-to-two-minute run on small subsets (tests)")
    parser.add_argument("--device", help="auto (default), cpu or cuda")
    parser.add_argument("--epochs", type=int, help="fine-tuning epochs")
    parser.add_argument("--image-size", type=int, dest="image_size", help="input size in pixels")
    parser.add_argument("--mixers", help="comma-separated mixers used during LP-FT (empty for none)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--ood", action="append", metavar="PATH",
                        help="a natural-shift OOD set: an image folder (one sub-folder per ID class) or an .npz with "
                             "images, labels and optional classes; repeatable")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
    from pyrobust.study.lpft_study import config_from_args

    cfg = config_from_args(args)
    return report_run(cfg, progress=not args.no_progress)


def report_run(cfg: StudyConfig, *, progress: bool = True) -> int:
    from pyrobust.study.lpft_study import run_study, summary_table

    results = run_study(cfg, progress=progress)
    print()
    print(summary_table(results))
    f = results["findings"]
    print(f"\n{results['regime']['summary']}")
    print(f"\nLP-FT >= FT on OOD: {f['lpft_ood_ge_ft_ood']}; FT moved ID features {f['ft_over_lpft_feature_change_id']:.1f}x "
          f"as much as LP-FT; wall time {results['timings']['total_s']:.0f} s")
    if f["stopped_short_of_plateau"]:
        print(f"stopped short of their plateau (val accuracy still rising in the last epoch): "
              f"{', '.join(f['stopped_short_of_plateau'])}")
    print(f"results: {os.path.join(cfg.out, 'results.json')}\nreport:  {os.path.join(cfg.out, 'report.html')}")
    return 0
