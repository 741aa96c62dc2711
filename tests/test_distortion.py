"""pyrobust.distortion against scipy and the definitions (Kornblith et al. 2019; Kumar et al. 2022)."""

import copy
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pyrobust.distortion import (
    feature_change,
    linear_cka,
    mean_cosine_change,
    mean_squared_change,
    procrustes_distance,
    subspace_distance,
)

SETTINGS = settings(max_examples=40, deadline=None)


def haar(rng, k):
    q, r = np.linalg.qr(rng.standard_normal((k, k)))
    return q * np.sign(np.diag(r))


def normalised(x):
    x = x - x.mean(0)
    return x / np.linalg.norm(x)


# ---------------------------------------------------------------------------------------------- procrustes


@SETTINGS
@given(n=st.integers(2, 40), k=st.integers(1, 60), seed=st.integers(0, 2**32 - 1))
def test_procrustes_equals_scipy_residual(n, k, seed):
    # k > n takes the thin path (the residual in the n-dimensional row spaces), k <= n the direct one
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, k)) * rng.uniform(0.1, 10) + rng.standard_normal(k)
    B = rng.standard_normal((n, k)) * rng.uniform(0.1, 10) + rng.standard_normal(k)
    a, b = normalised(A), normalised(B)
    R, _ = scipy.linalg.orthogonal_procrustes(b, a)  # argmin_R ||b R - a||_F over orthogonal R
    expected = np.linalg.norm(b @ R - a)
    got = procrustes_distance(A, B)
    assert got == pytest.approx(expected, abs=1e-10)
    s = np.linalg.svd(b.T @ a, compute_uv=False)
    assert got == pytest.approx(math.sqrt(max(0.0, 2 - 2 * s.sum())), abs=1e-7)
    assert 0.0 <= got <= math.sqrt(2) + 1e-12
    assert procrustes_distance(B, A) == pytest.approx(got, abs=1e-10)


@SETTINGS
@given(n=st.integers(3, 40), k=st.integers(1, 60), seed=st.integers(0, 2**32 - 1), reflect=st.booleans())
def test_procrustes_rotated_scaled_shifted_copy_is_zero(n, k, seed, reflect):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, k))
    Q = haar(rng, k)
    if reflect:
        Q[:, 0] *= -1
    B = 7.5 * A @ Q + rng.standard_normal(k) * 100
    assert procrustes_distance(A, B) < 1e-12 * 100


def test_procrustes_wide_features_equal_scipy():
    # network features: fewer inputs than feature dimensions, with correlated columns
    rng = np.random.default_rng(3)
    A = np.maximum(rng.standard_normal((60, 20)) @ rng.standard_normal((20, 300)), 0)
    B = A + 0.3 * rng.standard_normal(A.shape)
    a, b = normalised(A), normalised(B)
    R, _ = scipy.linalg.orthogonal_procrustes(b, a)
    assert procrustes_distance(A, B) == pytest.approx(np.linalg.norm(b @ R - a), abs=1e-10)
    assert procrustes_distance(A, A * 3 + 1) < 1e-10


def test_procrustes_never_beaten_by_random_rotations():
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((30, 4)), rng.standard_normal((30, 4))
    a, b = normalised(A), normalised(B)
    best = procrustes_distance(A, B)
    assert min(np.linalg.norm(a - b @ haar(rng, 4)) for _ in range(500)) >= best


def test_procrustes_accepts_torch_and_low_precision():
    rng = np.random.default_rng(1)
    A, B = rng.standard_normal((50, 6)), rng.standard_normal((50, 6))
    ref = procrustes_distance(A, B)
    assert procrustes_distance(torch.from_numpy(A), torch.from_numpy(B)) == pytest.approx(ref, abs=1e-12)
    a32, b32 = A.astype(np.float32), B.astype(np.float32)
    # float32 inputs are converted exactly, so the answer is that of the float64 copies of the float32 values.
    assert procrustes_distance(a32, b32) == procrustes_distance(a32.astype(np.float64), b32.astype(np.float64))
    got16 = procrustes_distance(torch.from_numpy(A).half(), torch.from_numpy(B).bfloat16())
    assert got16 == pytest.approx(ref, abs=2e-2)
    assert isinstance(got16, float)


# ---------------------------------------------------------------------------------------------- CKA


def cka_by_hsic(A, B):
    """Kornblith et al. eq. 3-4: HSIC on linear kernels with the centring matrix H."""
    n = A.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    K, L = H @ A @ A.T @ H, H @ B @ B.T @ H
    return np.sum(K * L) / math.sqrt(np.sum(K * K) * np.sum(L * L))


@SETTINGS
@given(n=st.integers(3, 30), k1=st.integers(1, 50), k2=st.integers(1, 50), seed=st.integers(0, 2**32 - 1))
def test_cka_matches_hsic_definition(n, k1, k2, seed):
    # widths above and below n exercise both the feature-space and the Gram-space paths
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, k1)) + 3.0
    B = A[:, :1] * rng.standard_normal(k2) + 0.5 * rng.standard_normal((n, k2))
    got = linear_cka(A, B)
    assert got == pytest.approx(cka_by_hsic(A, B), abs=1e-10)
    assert 0.0 <= got <= 1.0


@SETTINGS
@given(n=st.integers(3, 30), k=st.integers(1, 12), seed=st.integers(0, 2**32 - 1))
def test_cka_invariances(n, k, seed):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, k))
    B = rng.standard_normal((n, k + 2))
    assert linear_cka(A, A) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(A, 0.01 * A @ haar(rng, k) - 4.0) == pytest.approx(1.0, abs=1e-10)
    ref = linear_cka(A, B)
    assert linear_cka(A, 3.0 * B @ haar(rng, k + 2) + 1.0) == pytest.approx(ref, abs=1e-10)
    assert linear_cka(B, A) == pytest.approx(ref, abs=1e-12)


def test_cka_is_not_invariant_to_anisotropic_scaling():
    rng = np.random.default_rng(2)
    A = rng.standard_normal((100, 3))
    assert linear_cka(A, A * np.array([1.0, 1.0, 20.0])) < 0.9


# ---------------------------------------------------------------------------------------------- subspace distance


def orthonormal_rows(rng, k, d):
    return np.linalg.qr(rng.standard_normal((d, k)))[0].T


@SETTINGS
@given(d=st.integers(2, 30), data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_subspace_distance_is_two_sin_half_max_principal_angle(d, data, seed):
    k = data.draw(st.integers(1, d))
    rng = np.random.default_rng(seed)
    B1 = rng.standard_normal((k, d))
    B2 = rng.standard_normal((k, d))
    theta_max = scipy.linalg.subspace_angles(B1.T, B2.T).max()
    assert subspace_distance(B1, B2) == pytest.approx(2 * math.sin(theta_max / 2), abs=1e-9)


def test_subspace_distance_procrustes_rotation_attains_the_minimum():
    rng = np.random.default_rng(3)
    k, d = 4, 12
    B1, B2 = orthonormal_rows(rng, k, d), orthonormal_rows(rng, k, d)
    best = subspace_distance(B1, B2)
    p, _, rt = np.linalg.svd(B1 @ B2.T)
    U = p @ rt
    assert np.linalg.norm(B1 - U @ B2, 2) == pytest.approx(best, abs=1e-12)
    random_values = [np.linalg.norm(B1 - haar(rng, k) @ B2, 2) for _ in range(2000)]
    assert min(random_values) >= best - 1e-12
    # Also rotations right next to the optimum: a local check the Haar draws would rarely probe.
    for _ in range(500):
        S = rng.standard_normal((k, k)) * 1e-3
        near = U @ scipy.linalg.expm(S - S.T)
        assert np.linalg.norm(B1 - near @ B2, 2) >= best - 1e-12


def test_subspace_distance_depends_only_on_row_spaces():
    rng = np.random.default_rng(4)
    B1, B2 = rng.standard_normal((3, 10)), rng.standard_normal((3, 10))
    G = rng.standard_normal((3, 3))  # almost surely invertible
    ref = subspace_distance(B1, B2)
    assert subspace_distance(G @ B1, torch.from_numpy(B2).float()) == pytest.approx(ref, abs=1e-6)
    assert subspace_distance(B1, G @ B1) == pytest.approx(0.0, abs=1e-7)
    assert subspace_distance(B2, B1) == pytest.approx(ref, abs=1e-12)


def test_subspace_distance_of_a_known_rotation():
    # rows e1, e2 against e1, cos t e2 + sin t e3: one principal angle t, the other 0
    t = 0.3
    B1 = np.array([[1.0, 0, 0], [0, 1, 0]])
    B2 = np.array([[1.0, 0, 0], [0, math.cos(t), math.sin(t)]])
    assert subspace_distance(B1, B2) == pytest.approx(2 * math.sin(t / 2), abs=1e-14)


# ---------------------------------------------------------------------------------------------- per-sample change


def test_mean_squared_change_definition():
    rng = np.random.default_rng(5)
    F0, F1 = rng.standard_normal((7, 5)), rng.standard_normal((7, 5))
    expected = sum(np.sum((F1[i] - F0[i]) ** 2) for i in range(7)) / 7
    assert mean_squared_change(F0, F1) == pytest.approx(expected, rel=1e-12)
    assert mean_squared_change(torch.from_numpy(F0), torch.from_numpy(F0)) == 0.0


def test_mean_cosine_change_matches_torch():
    rng = np.random.default_rng(6)
    F0, F1 = rng.standard_normal((9, 4)), rng.standard_normal((9, 4))
    cos = torch.nn.functional.cosine_similarity(torch.from_numpy(F0), torch.from_numpy(F1), dim=1)
    assert mean_cosine_change(F0, F1) == pytest.approx(float((1 - cos).mean()), abs=1e-12)
    # per-sample positive rescaling does not change direction
    assert mean_cosine_change(F0, F0 * rng.uniform(0.1, 5, (9, 1))) == pytest.approx(0.0, abs=1e-12)
    assert mean_cosine_change(F0, -F0) == pytest.approx(2.0, abs=1e-12)


def test_mean_cosine_change_zero_vectors():
    F0 = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    F1 = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    assert mean_cosine_change(F0, F1) == pytest.approx((0.0 + 1.0 + 0.0) / 3)


# ---------------------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("fn", [procrustes_distance, linear_cka])
def test_matrix_measures_reject_bad_inputs(fn):
    rng = np.random.default_rng(7)
    A = rng.standard_normal((10, 3))
    with pytest.raises(ValueError, match="rows"):
        fn(A, A[:9])
    with pytest.raises(ValueError, match="at least 2 samples"):
        fn(A[:1], A[:1])
    bad = A.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        fn(A, bad)
    with pytest.raises(ValueError, match="zero variance"):
        fn(A, np.ones((10, 3)))
    with pytest.raises(ValueError, match="2-D"):
        fn(A[:, 0], A[:, 0])
    with pytest.raises(TypeError, match="list"):
        fn(A.tolist(), A)


def test_procrustes_rejects_width_mismatch():
    A = np.random.default_rng(8).standard_normal((10, 3))
    with pytest.raises(ValueError, match=r"\(10, 3\) and \(10, 2\)"):
        procrustes_distance(A, A[:, :2])


def test_subspace_distance_rejects_bad_inputs():
    rng = np.random.default_rng(9)
    B = rng.standard_normal((3, 6))
    with pytest.raises(ValueError, match="same shape"):
        subspace_distance(B, B[:2])
    with pytest.raises(ValueError, match="1 <= k <= d"):
        subspace_distance(B.T, B.T)
    with pytest.raises(ValueError, match="linearly independent"):
        subspace_distance(np.vstack([B[:2], B[:1]]), B)
    with pytest.raises(ValueError, match="non-finite"):
        subspace_distance(B, B * np.inf)


@pytest.mark.parametrize("fn", [mean_squared_change, mean_cosine_change])
def test_change_measures_reject_bad_inputs(fn):
    A = np.ones((4, 3))
    with pytest.raises(ValueError, match="same shape"):
        fn(A, A[:, :2])
    with pytest.raises(ValueError, match="empty"):
        fn(A[:0], A[:0])
    with pytest.raises(ValueError, match="non-finite"):
        fn(A, A * np.nan)


# ---------------------------------------------------------------------------------------------- feature_change


class TinyNet(nn.Module):
    """A two-conv CNN with a `features(x) -> (N, D)` method and a linear head, as FeatureModel has."""

    def __init__(self, width=6, classes=3, dropout=0.0):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
            nn.Conv2d(4, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Dropout(dropout),
        )
        self.head = nn.Linear(width, classes)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.features(x))


def make_loader(n=24, batch_size=8, shuffle=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, generator=g)


def test_feature_change_identical_models_under_shuffling_and_dropout():
    torch.manual_seed(0)
    before = TinyNet(dropout=0.5)
    after = copy.deepcopy(before).eval()
    before.train()  # dropout would make the two differ if feature_change did not switch to eval mode
    out = feature_change(before, after, {"id": make_loader(shuffle=True), "ood": make_loader(seed=1)})
    assert set(out) == {"id", "ood"}
    for res in out.values():
        assert res["n"] == 24
        assert res["mean_squared_change"] == 0.0
        assert res["mean_cosine_change"] == pytest.approx(0.0, abs=1e-6)
        assert res["procrustes_distance"] == pytest.approx(0.0, abs=1e-6)
        assert res["linear_cka"] == pytest.approx(1.0, abs=1e-6)
    assert before.training and before.body[-1].training and not after.training


def test_feature_change_head_only_change_leaves_features():
    torch.manual_seed(1)
    before = TinyNet()
    after = copy.deepcopy(before)
    with torch.no_grad():
        after.head.weight.add_(torch.randn_like(after.head.weight))
    res = feature_change(before, after, {"id": make_loader()})["id"]
    assert res["mean_squared_change"] == 0.0
    assert res["linear_cka"] == pytest.approx(1.0, abs=1e-6)


def test_feature_change_matches_the_matrix_functions_and_restores_modes():
    torch.manual_seed(2)
    before = TinyNet()
    after = copy.deepcopy(before)
    with torch.no_grad():
        after.body[3].weight.mul_(1.5).add_(0.1 * torch.randn_like(after.body[3].weight))
    after.train()
    after.body[1].eval()  # a frozen BatchNorm inside a training model, as in LP-FT fine-tuning
    loader = make_loader(n=40, batch_size=16)
    res = feature_change(before, after, {"id": loader})["id"]
    before.eval(), after.eval()
    x = torch.cat([b[0] for b in loader])
    with torch.no_grad():
        F0, F1 = before.features(x), after.features(x)
    assert res["n"] == 40
    assert res["mean_squared_change"] == pytest.approx(mean_squared_change(F0, F1), rel=1e-5)
    assert res["mean_squared_change"] > 0
    assert res["mean_cosine_change"] == pytest.approx(mean_cosine_change(F0, F1), rel=1e-5)
    assert res["procrustes_distance"] == pytest.approx(procrustes_distance(F0, F1), rel=1e-5)
    assert res["linear_cka"] == pytest.approx(linear_cka(F0, F1), rel=1e-5)


def test_feature_change_restores_train_and_eval_flags():
    before, after = TinyNet(), TinyNet()
    after.train()
    after.body[1].eval()
    feature_change(before, after, {"id": make_loader()})
    assert after.training and not after.body[1].training and after.body[0].training


def test_feature_change_max_batches_feature_fn_and_plain_tensors():
    torch.manual_seed(3)
    before, after = nn.Linear(5, 4), nn.Linear(5, 4)
    batches = [torch.randn(6, 5) for _ in range(3)]
    res = feature_change(before, after, {"x": batches}, max_batches=2, feature_fn=lambda m, x: m(x))["x"]
    assert res["n"] == 12
    with torch.no_grad():
        x = torch.cat(batches[:2])
        assert res["mean_squared_change"] == pytest.approx(mean_squared_change(before(x), after(x)), rel=1e-6)


def test_feature_change_errors():
    loader = {"id": make_loader()}
    with pytest.raises(TypeError, match="features"):
        feature_change(nn.Linear(2, 2), TinyNet(), loader)

    class TorchvisionStyle(nn.Module):  # `features` is a submodule giving a feature map, not a method
        def __init__(self):
            super().__init__()
            self.features = nn.Conv2d(1, 2, 3)

    with pytest.raises(TypeError, match="features"):
        feature_change(TorchvisionStyle(), TorchvisionStyle(), loader)
    with pytest.raises(ValueError, match="different widths.*6 and 7"):
        feature_change(TinyNet(width=6), TinyNet(width=7), loader)
    with pytest.raises(ValueError, match="yielded no batches"):
        feature_change(TinyNet(), TinyNet(), {"empty": []})
    with pytest.raises(TypeError, match="'bad'"):
        feature_change(TinyNet(), TinyNet(), {"bad": [{"x": torch.zeros(1)}]})
    with pytest.raises(ValueError, match="max_batches"):
        feature_change(TinyNet(), TinyNet(), loader, max_batches=0)
    with pytest.raises(TypeError, match="dict"):
        feature_change(TinyNet(), TinyNet(), [make_loader()])

    broken = TinyNet()
    with torch.no_grad():
        broken.body[3].bias.fill_(float("nan"))
    with pytest.raises(ValueError, match="model_after.*non-finite"):
        feature_change(TinyNet(), broken, loader)
    with pytest.raises(ValueError, match=r"\(8, D\)"):
        feature_change(TinyNet(), TinyNet(), loader, feature_fn=lambda m, x: m.body[:2](x))


def test_feature_change_on_pyrobust_feature_model_with_reset_head():
    from pyrobust.models.adapter import FeatureModel

    torch.manual_seed(4)
    backbone = nn.Sequential(nn.Conv2d(1, 5, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    before = FeatureModel(backbone, feature_dim=5, num_classes=3)
    after = copy.deepcopy(before)
    after.reset_head()  # FT's fresh head: the features are untouched until training moves the backbone
    res = feature_change(before, after, {"id": make_loader()})["id"]
    assert res["mean_squared_change"] == 0.0 and res["linear_cka"] == pytest.approx(1.0, abs=1e-6)
    with torch.no_grad():
        after.backbone[0].weight.add_(0.5)
    assert feature_change(before, after, {"id": make_loader()})["id"]["mean_squared_change"] > 0
