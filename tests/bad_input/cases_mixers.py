"""The batch mixers, their collate and the timm drop-ins: constructor settings and calls."""

import math

import torch

from pyrobust.augment import CutMix, Cutout, MixCollate, MixUp, SmoothMix, make_mixer
from pyrobust.augment import timm as timm_dropin
from tests.bad_input.harness import bad, good, table

V, T = ValueError, TypeError
X = torch.rand(4, 3, 8, 8)
Y = torch.tensor([0, 1, 2, 3])

CASES = table(
    bad("sigma_range inf", lambda: SmoothMix(10, sigma_range=(math.inf, math.inf)), V, r"sigma_range .*finite"),
    bad("sigma_range nan", lambda: SmoothMix(10, sigma_range=(0.2, math.nan)), V, r"sigma_range"),
    bad("sigma_range reversed", lambda: SmoothMix(10, sigma_range=(0.5, 0.2)), V, r"sigma_range"),
    bad("sigma_range zero", lambda: SmoothMix(10, sigma_range=(0.0, 0.5)), V, r"sigma_range"),
    bad("smooth inf", lambda: SmoothMix(10, "square", smooth=math.inf), V, r"smooth .*inf"),
    bad("smooth zero", lambda: SmoothMix(10, "square", smooth=0.0), V, r"smooth"),
    bad("size_range above 1", lambda: SmoothMix(10, "square", size_range=(0.2, 1.5)), V, r"size_range"),
    bad("mode unknown", lambda: SmoothMix(10, "triangle"), V, r"mode .*'triangle'"),
    bad("num_classes zero", lambda: SmoothMix(0), V, r"num_classes"),
    bad("num_classes string", lambda: CutMix("10"), (V, T), r"num_classes"),
    bad("alpha nan", lambda: CutMix(10, alpha=math.nan), V, r"alpha .*nan"),
    bad("alpha negative", lambda: MixUp(10, alpha=-1.0), V, r"alpha"),
    bad("p above 1", lambda: CutMix(10, p=2.0), V, r"p should be"),
    bad("label_smoothing 1", lambda: MixUp(10, label_smoothing=1.0), V, r"label_smoothing"),
    bad("cutout size negative", lambda: Cutout(10, size=-1), V, r"size"),
    bad("registry unknown", lambda: make_mixer("smoothmix", 10), V, r"unknown mixer 'smoothmix'"),
    bad("call 3-D images", lambda: SmoothMix(10)(torch.rand(3, 8, 8), Y[:3]), V, r"images should be 4-D"),
    bad("call labels short", lambda: SmoothMix(10)(X, Y[:3]), V, r"labels .*length N=4"),
    bad("call labels float", lambda: SmoothMix(10)(X, Y.float()), T, r"labels .*integer"),
    bad("call label out of range", lambda: SmoothMix(4)(X, torch.tensor([0, 1, 2, 4])), V, r"labels .*\[0, 4\)"),
    bad("call int64 images", lambda: CutMix(10)(torch.zeros(4, 3, 8, 8, dtype=torch.long), Y), T, r"images .*int64"),
    bad("collate not a mixer", lambda: MixCollate(3), T, r"mixer"),
    bad("timm mode unknown", lambda: timm_dropin.Mixup(mode="row"), V, r"mode"),
    good("call uint8", lambda: SmoothMix(10)(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), Y),
         lambda r: r[0].dtype == torch.uint8 and tuple(r[1].shape) == (4, 10)),
)
