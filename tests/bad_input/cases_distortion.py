"""The feature-change measures and feature_change: shapes, scales, finiteness, loaders."""

import numpy as np
import torch

from pyrobust.distortion import (feature_change, linear_cka, mean_cosine_change, mean_squared_change,
                                 procrustes_distance, subspace_distance)
from tests.bad_input.fixtures import loader, tiny_model
from tests.bad_input.harness import bad, good, table

V, T = ValueError, TypeError
A = np.random.default_rng(0).standard_normal((20, 4))
B = A @ np.linalg.qr(np.random.default_rng(1).standard_normal((4, 4)))[0]


def close(v, want, tol=1e-6):
    return abs(v - want) <= tol


CASES = table(
    good("cka tiny scale", lambda: linear_cka(A * 1e-15, A * 1e-15), lambda v: close(v, 1.0)),
    good("cka tiny and unit scale", lambda: linear_cka(A * 1e-300, B), lambda v: close(v, 1.0)),
    good("cka huge scale", lambda: linear_cka(A * 1e300, B * 1e300), lambda v: close(v, 1.0)),
    good("procrustes tiny scale", lambda: procrustes_distance(A * 1e-200, B * 1e-200), lambda v: close(v, 0.0)),
    good("procrustes huge scale", lambda: procrustes_distance(A * 1e300, B), lambda v: close(v, 0.0)),
    good("subspace tiny scale", lambda: subspace_distance(A[:2].T.T * 1e-200, A[:2]), lambda v: close(v, 0.0)),
    bad("cka constant", lambda: linear_cka(np.ones((5, 3)), A[:5]), V, r"A has zero variance"),
    bad("cka zeros", lambda: linear_cka(A[:5], np.zeros((5, 2))), V, r"B has zero variance"),
    bad("cka NaN", lambda: linear_cka(np.where(A > 2, np.nan, A), B), V, r"A has .*non-finite"),
    bad("cka rows", lambda: linear_cka(A, B[:10]), V, r"20 and 10"),
    bad("cka one row", lambda: linear_cka(A[:1], B[:1]), V, r"at least 2 samples"),
    bad("cka 3-D", lambda: linear_cka(A[:, :, None], B), V, r"A must be a 2-D"),
    bad("cka list", lambda: linear_cka(A.tolist(), B), T, r"A must be"),
    bad("cka complex", lambda: linear_cka(A.astype(complex), B), T, r"A must .*real"),
    bad("cka complex tensor", lambda: linear_cka(torch.from_numpy(A).to(torch.complex64), B), T, r"A must be real"),
    bad("cka bool", lambda: linear_cka(A > 0, B), T, r"A must"),
    bad("cka meta", lambda: linear_cka(torch.empty(20, 4, device="meta"), B), V, r"A .*meta"),
    bad("msc shapes", lambda: mean_squared_change(A, B[:, :3]), V, r"same shape"),
    bad("msc empty", lambda: mean_squared_change(A[:0], B[:0]), V, r"empty"),
    bad("cosine inf", lambda: mean_cosine_change(np.where(A > 2, np.inf, A), B), V, r"F0 has .*non-finite"),
    bad("subspace rank", lambda: subspace_distance(np.ones((2, 4)), A[:2]), V, r"B1 must have linearly independent"),
    bad("subspace k > d", lambda: subspace_distance(A[:5, :3], B[:5, :3]), V, r"1 <= k <= d"),
    bad("fc loaders list", lambda: feature_change(tiny_model(), tiny_model(), [loader()]), T, r"loaders .*dict"),
    bad("fc max_batches bool", lambda: feature_change(tiny_model(), tiny_model(), {"a": loader()}, max_batches=True),
        (V, T), r"max_batches"),
    bad("fc max_batches zero", lambda: feature_change(tiny_model(), tiny_model(), {"a": loader()}, max_batches=0),
        V, r"max_batches"),
    bad("fc device", lambda: feature_change(tiny_model(), tiny_model(), {"a": loader()}, device="gpu"), V,
        r"device .*'gpu'"),
    bad("fc empty loader", lambda: feature_change(tiny_model(), tiny_model(), {"a": []}), V, r"'a' yielded no batches"),
    bad("fc module without features", lambda: feature_change(torch.nn.Linear(2, 2), tiny_model(), {"a": loader()}),
        T, r"model_before .*features"),
    bad("fc feature_fn not callable", lambda: feature_change(tiny_model(), tiny_model(), {"a": loader()},
                                                            feature_fn=3), T, r"feature_fn"),
)
