"""evaluate, finetune, lr_at, soft_cross_entropy, linear_probe, interpolate and run_lpft."""

import numpy as np
import torch
from torch.utils.data import DataLoader

from pyrobust.lpft import (evaluate, finetune, interpolate, linear_probe, lr_at, run_lpft, soft_cross_entropy,
                           wise_sweep)
from tests.bad_input.fixtures import batches, blobs, fresh_dir, loader, tiny_model
from tests.bad_input.harness import bad, good, table

V, T = ValueError, TypeError
IMAGES = torch.rand(4, 3, 4, 4)


def ev(images=IMAGES, labels=torch.tensor([0, 1, 2, 0]), **kw):
    return evaluate(tiny_model(), {"id": batches(images, labels)}, **{"device": "cpu", **kw})


def ft(**kw):
    args = dict(model=tiny_model(), head=None, train_loader=loader(), val_loader=None, epochs=1, lr=0.01,
                device="cpu", progress=False)
    args.update(kw)
    return finetune(**args)


def lr(**kw):
    args = dict(step=0, lr=0.1, total=10, warmup=0, schedule="cosine")
    args.update(kw)
    return lr_at(**args)


def study(**kw):
    args = dict(model=tiny_model(), train=loader(), val=loader(), id_test=loader(), ood={}, epochs=1,
                methods=("ft",), device="cpu", progress=False)
    args.update(kw)
    return run_lpft(**args)


X, y = blobs(30, 6)
STATE = tiny_model().state_dict()
CASES = table(
    # evaluate
    bad("eval labels (N, 1)", lambda: ev(labels=torch.tensor([[0], [1], [2], [0]])), V, r"labels .*\(4, 1\)"),
    bad("eval labels too many", lambda: ev(labels=torch.tensor([0, 1, 2, 0, 1])), V, r"labels .*\(4,\).*\(5,\)"),
    bad("eval labels negative", lambda: ev(labels=torch.tensor([0, -1, 2, 0])), V, r"'id'.*labels .*\[0, 3\).*-1"),
    bad("eval labels beyond K", lambda: ev(labels=torch.tensor([0, 99, 2, 0])), V, r"'id'.*labels .*\[0, 3\).*99"),
    bad("eval labels float", lambda: ev(labels=torch.tensor([0.0, 1, 2, 0])), V, r"labels must be an integer"),
    bad("eval loaders list", lambda: evaluate(tiny_model(), [batches(IMAGES, torch.zeros(4))]), T, r"loaders .*dict"),
    bad("eval empty loader", lambda: evaluate(tiny_model(), {"empty": []}, device="cpu"), V, r"loader 'empty' is empty"),
    bad("eval batch not a pair", lambda: evaluate(tiny_model(), {"x": [IMAGES]}, device="cpu"), V, r"\(images, labels\)"),
    bad("eval device", lambda: ev(device="gpu"), V, r"device .*'gpu'"),
    bad("eval amp string", lambda: ev(amp="yes"), T, r"amp"),
    good("eval labels in range", lambda: ev(), lambda r: 0.0 <= r["id"] <= 1.0),
    # finetune
    bad("ft empty val loader", lambda: ft(val_loader=DataLoader([])), V, r"val_loader .*no batches|val_loader .*empty"),
    bad("ft momentum NaN", lambda: ft(momentum=float("nan")), V, r"momentum .*nan"),
    bad("ft momentum negative", lambda: ft(momentum=-0.1), V, r"momentum .*-0.1"),
    bad("ft weight_decay inf", lambda: ft(weight_decay=float("inf")), V, r"weight_decay .*inf"),
    bad("ft weight_decay string", lambda: ft(weight_decay="0"), T, r"weight_decay"),
    bad("ft lr bool", lambda: ft(lr=True), T, r"lr"),
    bad("ft lr NaN", lambda: ft(lr=float("nan")), V, r"lr"),
    bad("ft epochs bool", lambda: ft(epochs=True), T, r"epochs"),
    bad("ft epochs zero", lambda: ft(epochs=0), V, r"epochs"),
    bad("ft warmup float", lambda: ft(warmup=1.5), (V, T), r"warmup"),
    bad("ft clip_grad string", lambda: ft(clip_grad="1"), T, r"clip_grad"),
    bad("ft clip_grad NaN", lambda: ft(clip_grad=float("nan")), V, r"clip_grad"),
    bad("ft early_stopping bool", lambda: ft(early_stopping=True, val_loader=loader()), (V, T), r"early_stopping"),
    bad("ft seed string", lambda: ft(seed="0"), T, r"seed"),
    bad("ft optimizer", lambda: ft(optimizer="adam"), V, r"optimizer .*'adam'"),
    bad("ft schedule", lambda: ft(schedule="cosinus"), V, r"schedule .*'cosinus'"),
    bad("ft mixer not callable", lambda: ft(mixer=3), T, r"mixer"),
    bad("ft train_loader not iterable", lambda: ft(train_loader=5), T, r"train_loader"),
    bad("ft empty train loader", lambda: ft(train_loader=DataLoader([])), V, r"train_loader yields no batches"),
    bad("ft labels beyond head", lambda: ft(train_loader=loader(labels=torch.arange(12) % 5)), V,
        r"train_loader: labels .*\[0, 3\).*got 3"),
    bad("ft labels (N, 1)", lambda: ft(train_loader=batches(torch.rand(4, 3, 4, 4), torch.zeros(4, 1, dtype=torch.long))),
        V, r"labels .*\(4, 1\)"),
    bad("ft checkpoint_dir a file", lambda: ft(checkpoint_dir=__file__), V, r"checkpoint_dir .*not a folder|is a file"),
    bad("ft head wrong type", lambda: ft(head="linear"), T, r"head"),
    bad("ft device", lambda: ft(device="gpu"), V, r"device .*'gpu'"),
    # lr_at and the soft loss
    bad("lr_at schedule", lambda: lr(schedule="cosinus"), V, r"schedule .*'cosinus'"),
    bad("lr_at step negative", lambda: lr(step=-1), V, r"step .*-1"),
    bad("lr_at warmup negative", lambda: lr(warmup=-2), V, r"warmup .*-2"),
    bad("lr_at lr NaN", lambda: lr(lr=float("nan")), V, r"lr .*nan"),
    bad("lr_at total zero", lambda: lr(total=0), V, r"total .*0"),
    good("lr_at constant", lambda: lr(schedule="constant", step=5), lambda v: v == 0.1),
    bad("soft CE shapes", lambda: soft_cross_entropy(torch.zeros(4, 3), torch.zeros(3)), V, r"targets .*\(4, 3\).*\(3,\)"),
    bad("soft CE rows", lambda: soft_cross_entropy(torch.zeros(4, 3), torch.zeros(2, 3)), V, r"targets .*\(2, 3\)"),
    # linear_probe
    bad("LP labels not 0..K-1", lambda: linear_probe((X, y + 1), (X, y + 1), Cs=[1.0], progress=False), V,
        r"0..K-1"),
    bad("LP cache type", lambda: linear_probe("cache", (X, y)), T, r"cache_train"),
    bad("LP features 1-D", lambda: linear_probe((X[:, 0], y), (X, y)), V, r"2-D"),
    # WiSE-FT
    bad("interpolate alpha NaN", lambda: interpolate(STATE, STATE, float("nan")), V, r"alpha .*nan"),
    bad("interpolate alpha 2", lambda: interpolate(STATE, STATE, 2), V, r"alpha .*2"),
    bad("interpolate alpha string", lambda: interpolate(STATE, STATE, "0.5"), (V, T), r"alpha"),
    bad("interpolate not tensors", lambda: interpolate({"w": 1.0}, {"w": 2.0}, 0.5), T, r"'w'"),
    bad("wise alphas NaN", lambda: wise_sweep(tiny_model(), STATE, STATE, {"a": loader()}, alphas=[0.5, float("nan")]),
        V, r"alphas .*nan"),
    bad("wise alphas number", lambda: wise_sweep(tiny_model(), STATE, STATE, {"a": loader()}, alphas=0.5), T,
        r"alphas"),
    bad("wise loaders list", lambda: wise_sweep(tiny_model(), STATE, STATE, [loader()]), T, r"loaders .*dict"),
    # run_lpft: every argument before any run
    bad("study empty ft lrs", lambda: study(ft_lrs=()), V, r"ft_lrs .*empty"),
    bad("study ft lrs string", lambda: study(ft_lrs=["fast"]), (V, T), r"ft_lrs.*'fast'"),
    bad("study lpft lrs negative", lambda: study(methods=("lpft",), lpft_lrs=[-1e-3]), V, r"lpft_lrs.*-0.001"),
    bad("study methods string", lambda: study(methods="ft"), (V, T), r"methods"),
    bad("study methods unknown", lambda: study(methods=("ft", "wise")), V, r"methods .*'wise'"),
    bad("study seeds empty", lambda: study(seeds=()), V, r"seeds"),
    bad("study seeds string", lambda: study(seeds=["a"]), (V, T), r"seeds.*'a'"),
    bad("study epochs zero", lambda: study(epochs=0), V, r"epochs"),
    bad("study ood not dict", lambda: study(ood=[loader()]), T, r"ood .*dict"),
    bad("study finetune kwargs unknown", lambda: study(finetune_kwargs={"lrr": 1}), (V, T), r"finetune_kwargs.*'lrr'"),
    bad("study finetune kwargs lr", lambda: study(finetune_kwargs={"lr": 1}), (V, T), r"finetune_kwargs.*'lr'"),
    bad("study probe kwargs unknown", lambda: study(methods=("lp",), probe_kwargs={"CC": 1}), (V, T),
        r"probe_kwargs.*'CC'"),
    bad("study feature_change_batches", lambda: study(feature_change_batches=0), V, r"feature_change_batches"),
    bad("study cache_dir a file", lambda: study(methods=("lp",), cache_dir=__file__), V, r"cache_dir"),
)
