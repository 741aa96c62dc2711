"""Property-based bad inputs (hypothesis, capped examples, derandomised for a stable CI): each case
runs a whole search in the worker, so a crash on any example fails that case."""

import math

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyrobust.distortion import linear_cka, procrustes_distance
from pyrobust.lpft import lr_at
from pyrobust.ops import mix as mix_ops
from pyrobust.ops import probe as probe_ops
from pyrobust.probe import probe_sweep
from tests.bad_input.harness import good, table

REFUSED = (ValueError, TypeError, RuntimeError)


def capped(n):
    return settings(max_examples=n, deadline=None, database=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


def refused_naming(call, *names):
    """Run ``call``; an error must be a clear refusal naming one of ``names``. Returns the result or None."""
    try:
        return call()
    except REFUSED as exc:
        assert any(n in str(exc) for n in names), f"{type(exc).__name__}: {exc} names none of {names}"
        return None


@capped(60)
@given(n=st.integers(0, 6), m=st.integers(0, 3), k=st.integers(0, 4),
       targets=st.lists(st.integers(-3, 6), min_size=0, max_size=7),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.int64]),
       weight_len=st.integers(0, 7))
def probe_kernels(n, m, k, targets, dtype, weight_len):
    logits = torch.randn(n, m, k).to(dtype)
    target = torch.tensor(targets, dtype=torch.int64)
    weight = torch.ones(weight_len, dtype=dtype)
    out = refused_naming(lambda: probe_ops.loss_grad(logits, target, weight), "logits", "target", "weight")
    valid = (dtype in (torch.float32, torch.float64) and k >= 1 and len(targets) == n == weight_len
             and all(0 <= t < (2 if k == 1 else k) for t in targets))
    assert (out is not None) == valid, (n, m, k, targets, dtype, weight_len)
    if out is not None:
        assert torch.isfinite(out[0]).all() and torch.isfinite(out[1]).all()
    step = torch.zeros(m, dtype=torch.float64)
    line = refused_naming(lambda: probe_ops.line_stats(logits, logits, target, weight, step), "logits", "target",
                          "weight", "direction", "step")
    assert (line is not None) == valid


@capped(80)
@given(n=st.integers(-2, 40), height=st.integers(-1, 40), width=st.integers(-1, 40),
       family=st.sampled_from(["circle", "square", "cutmix", "mixup", "cutout", "smooth"]),
       args=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=4),
       p=st.one_of(st.floats(-0.5, 1.5), st.just(math.nan)), pairing=st.sampled_from(["permute", "flip", "roll", "swap"]))
def draws(n, height, width, family, args, p, pairing):
    names = ("n", "height", "width", "family", "args", "alpha", "lo", "hi", "p ", "pairing", "size", "fraction",
             "smooth", "ellipse")
    out = refused_naming(lambda: mix_ops.mix_draw(n, height, width, family, args, p, pairing=pairing,
                                                  generator=torch.Generator().manual_seed(0)), *names)
    if out is not None:
        partner, params, active = out
        assert partner.shape == (n,) and params.shape == (n, 6) and active.shape == (n,)
        assert bool(((partner >= 0) & (partner < max(n, 1))).all())
        assert bool(torch.isfinite(params).all()), (family, args, params)


@capped(60)
@given(n=st.integers(1, 6), partner=st.lists(st.integers(-3, 8), min_size=0, max_size=7),
       labels=st.lists(st.integers(-2, 5), min_size=0, max_size=7), num_classes=st.integers(-1, 4),
       smoothing=st.one_of(st.floats(-0.5, 1.5), st.just(math.nan)),
       dtype=st.sampled_from([torch.uint8, torch.float32, torch.float64, torch.int32]))
def mixes(n, partner, labels, num_classes, smoothing, dtype):
    images = (torch.rand(n, 3, 5, 5) * (255 if dtype in (torch.uint8, torch.int32) else 1)).to(dtype)
    part = torch.tensor(partner, dtype=torch.int64)
    params = torch.tensor([[2.0, 2.0, 1.0, 1.0, 1.0, 0.0]] * n)
    out = refused_naming(lambda: mix_ops.mix(images, part, params, "trapezoid"), "images", "partner", "params")
    if out is not None:
        assert out.shape == images.shape and out.dtype == images.dtype
    lab = torch.tensor(labels, dtype=torch.int64)
    res = refused_naming(lambda: mix_ops.mix_targets(images, lab, part, params, "trapezoid", False, num_classes,
                                                     smoothing), "images", "partner", "params", "labels",
                         "num_classes", "label_smoothing")
    if res is not None:
        targets, lam = res
        assert torch.isfinite(targets).all() and torch.allclose(targets.sum(1), torch.ones(n))


@capped(20)
@given(labels=st.lists(st.one_of(st.integers(-2, 3), st.floats(allow_nan=True, allow_infinity=True)),
                       min_size=12, max_size=12),
       class_weight=st.one_of(st.none(), st.just("balanced"),
                              st.dictionaries(st.integers(-1, 4), st.one_of(st.floats(-1, 3), st.just(math.nan)),
                                              max_size=3)))
def probe_labels(labels, class_weight):
    X = np.random.default_rng(0).standard_normal((12, 3))
    y = np.array(labels, dtype=object if any(isinstance(v, float) for v in labels) else np.int64)
    y = y.astype(np.float64) if y.dtype == object else y
    res = refused_naming(lambda: probe_sweep(X, y, X, y, [1.0], max_iter=30, progress=False,
                                             class_weight=class_weight), "y", "class_weight", "classes",
                         "sum to zero")
    if res is not None:
        assert np.isfinite(res.val_loss).all() or not np.isin(y, res.classes).any()
        assert all(np.isfinite(c).all() for c in res.coefs)


@capped(40)
@given(exponent=st.integers(-300, 300), seed=st.integers(0, 5))
def shape_measures_scale_free(exponent, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((10, 3))
    b = a @ np.linalg.qr(rng.standard_normal((3, 3)))[0] + 0.1 * rng.standard_normal((10, 3))
    scale = 10.0 ** exponent
    assert math.isclose(linear_cka(a * scale, b), linear_cka(a, b), rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(procrustes_distance(a, b * scale), procrustes_distance(a, b), rel_tol=1e-7, abs_tol=1e-9)


@capped(60)
@given(step=st.integers(0, 50), total=st.integers(1, 50), warmup=st.integers(0, 60),
       lr=st.floats(0, 10), schedule=st.sampled_from(["cosine", "linear", "constant"]))
def lr_schedule_bounded(step, total, warmup, lr, schedule):
    v = lr_at(step, lr=lr, total=total, warmup=warmup, schedule=schedule)
    assert 0.0 <= v <= lr * (1 + 1e-12), (step, total, warmup, lr, schedule, v)


CASES = table(
    good("probe kernels over shapes, dtypes and targets", probe_kernels),
    good("mix_draw over sizes, families, args and p", draws),
    good("mix and mix_targets over partners, labels and dtypes", mixes),
    good("probe_sweep over odd labels and class weights", probe_labels),
    good("linear_cka and procrustes are scale-free", shape_measures_scale_free),
    good("lr_at stays in [0, lr]", lr_schedule_bounded),
)
