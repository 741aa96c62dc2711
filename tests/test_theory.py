"""pyrobust.theory.linear_toy shows what Kumar et al. (ICLR 2022, section 3) prove for the linear setting."""

import importlib
import math

import numpy as np
import pytest
import scipy.linalg

from pyrobust.distortion import subspace_distance
from pyrobust.theory import linear_toy, linear_toy_seeds, plot_linear_toy

# `pyrobust.theory.linear_toy` is the function on the package; the module is reached through importlib.
toy_module = importlib.import_module("pyrobust.theory.linear_toy")

SEEDS = range(20)


@pytest.fixture(scope="module")
def summary():
    """The default configuration the docs quote: d=100, k=5, m=20, n=40, eps=0.1, 20 seeds."""
    return linear_toy_seeds(SEEDS)


def values(summary, method, metric):
    return np.array(summary[method][metric]["values"])


def test_ft_ood_error_far_above_lpft(summary):
    # per seed, not only on average
    assert np.all(values(summary, "ft", "ood_error") >= 10 * values(summary, "lpft", "ood_error"))


def test_lp_id_error_above_ft_when_b0_differs(summary):
    lp, ft = values(summary, "lp", "id_error"), values(summary, "ft", "id_error")
    assert np.all(lp > 1e-4)  # eps=0.1 leaves a visible ID error for a frozen B0...
    assert np.all(ft < 1e-8)  # ...which fine-tuning removes (n > m: the ID data pin down the ID subspace)
    assert np.all(lp > 100 * ft)


def test_ft_moves_b_only_inside_the_id_subspace(summary):
    for method in ("ft", "lpft"):
        assert np.all(values(summary, method, "change_outside_id") < 1e-10)
    assert np.all(values(summary, "lp", "change_outside_id") == 0.0)
    # FT did move B (inside S), so the check above is not vacuous: its features end farther from B* than B0
    assert np.all(values(summary, "ft", "feature_distance") > 1.5 * values(summary, "lp", "feature_distance"))


def test_lpft_keeps_features_and_gets_both_errors_low(summary):
    np.testing.assert_allclose(values(summary, "lp", "feature_distance"), 0.1, atol=1e-12)  # B0 at eps
    assert np.all(values(summary, "lpft", "feature_distance") < 0.12)
    assert np.all(values(summary, "lpft", "ood_error") <= values(summary, "lp", "ood_error"))
    assert np.all(values(summary, "lpft", "id_error") < 1e-8)


def test_eps_zero_lp_is_already_perfect():
    res = linear_toy(seed=3, eps=0.0)
    assert res["lp"]["id_error"] < 1e-12
    assert res["lp"]["ood_error"] < 1e-12
    assert res["lp"]["feature_distance"] < 1e-12
    assert res["lpft"]["ood_error"] < 1e-12


def test_ft_ood_error_does_not_vanish_with_eps():
    # The paper's point: FT's OOD error is not O(eps) while LP-FT's is.
    small = linear_toy_seeds(range(3), eps=0.01, steps=600)
    assert small["ft"]["ood_error"]["mean"] > 0.05
    assert small["lpft"]["ood_error"]["mean"] < 1e-2 * small["ft"]["ood_error"]["mean"]


def test_problem_construction_and_closed_form_errors():
    rng = np.random.default_rng(0)
    prob = toy_module._Problem(rng, d=30, k=3, m=8, n=16, eps=0.2)
    np.testing.assert_allclose(prob.B0 @ prob.B0.T, np.eye(3), atol=1e-12)
    angles = scipy.linalg.subspace_angles(prob.B0.T, prob.B_star.T)
    np.testing.assert_allclose(angles, 2 * math.asin(0.1), atol=1e-10)  # every principal angle equal
    assert subspace_distance(prob.B0, prob.B_star) == pytest.approx(0.2, abs=1e-12)
    # training inputs lie in S
    np.testing.assert_allclose(prob.X - prob.X @ prob.P @ prob.P.T, 0, atol=1e-12)
    # closed-form population errors against Monte Carlo for an arbitrary (v, B)
    v, B = rng.standard_normal(3), rng.standard_normal((3, 30))
    id_err, ood_err = prob.errors(v, B)
    n = 200_000
    x_ood = rng.standard_normal((n, 30))
    x_id = rng.standard_normal((n, 8)) @ prob.P.T
    mc = [np.mean((x @ B.T @ v - x @ prob.w_star) ** 2) for x in (x_id, x_ood)]
    assert id_err == pytest.approx(mc[0], rel=0.02)
    assert ood_err == pytest.approx(mc[1], rel=0.02)


def test_curves_and_determinism():
    a = linear_toy(seed=5, steps=95, record_every=10)
    b = linear_toy(seed=5, steps=95, record_every=10)
    for method in ("lp", "ft", "lpft"):
        curve = a[method]["curve"]
        assert curve["step"] == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95]
        assert curve["ood_error"][-1] == a[method]["ood_error"]
        assert curve["id_error"][-1] == a[method]["id_error"]
        assert a[method]["ood_error"] == b[method]["ood_error"]
    # LP-FT's fine-tuning starts where LP ended; LP and FT both start from a zero head
    assert a["lpft"]["curve"]["ood_error"][0] == pytest.approx(a["lp"]["ood_error"], rel=1e-12)
    assert a["ft"]["curve"]["ood_error"][0] == a["lp"]["curve"]["ood_error"][0]


def test_seeds_aggregate_is_the_mean_of_single_runs():
    agg = linear_toy_seeds([1, 4], steps=50, record_every=25)
    runs = [linear_toy(seed=s, steps=50, record_every=25) for s in (1, 4)]
    for method in ("lp", "ft", "lpft"):
        vals = [r[method]["ood_error"] for r in runs]
        assert agg[method]["ood_error"]["mean"] == pytest.approx(np.mean(vals), rel=1e-12)
        assert agg[method]["ood_error"]["std"] == pytest.approx(np.std(vals), rel=1e-12)
        assert agg[method]["curve"]["ood_error"] == pytest.approx(
            np.mean([r[method]["curve"]["ood_error"] for r in runs], axis=0).tolist(), rel=1e-12
        )
    assert agg["seeds"] == [1, 4]


def test_random_fresh_head_also_distorts():
    res = linear_toy_seeds(range(3), head_init_std=1.0, steps=600)
    assert res["ft"]["ood_error"]["mean"] > 10 * res["lpft"]["ood_error"]["mean"]
    assert max(res["ft"]["change_outside_id"]["values"]) < 1e-10


def test_plot_writes_png(tmp_path):
    single = linear_toy(steps=40)
    several = linear_toy_seeds(range(2), steps=40)
    for name, res in (("one.png", single), ("many.png", several)):
        path = plot_linear_toy(res, tmp_path / name)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="'lpft'"):
        plot_linear_toy({"lp": single["lp"], "ft": single["ft"]}, tmp_path / "bad.png")


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(k=5, m=5), "k < m < d"),
        (dict(m=100), "k < m < d"),
        (dict(eps=-0.1), "eps"),
        (dict(eps=2.0), "eps"),
        (dict(lr=0.0), "lr"),
        (dict(steps=0), "steps"),
        (dict(n=2.5), "n must be a positive int"),
        (dict(d=12, k=7, m=9), "2k <= d"),
        (dict(head_init_std=-1.0), "head_init_std"),
    ],
)
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        linear_toy(**kw)


def test_divergence_is_reported():
    with pytest.raises(ValueError, match="diverged with lr=50.0"):
        linear_toy(lr=50.0, steps=200)


def test_empty_seeds():
    with pytest.raises(ValueError, match="seeds"):
        linear_toy_seeds([])
