"""The probe's defaults are accurate on the kinds of problems of the benchmark suite
(``benchmarks/probe_suite.py``): at every C of a default ``probe_sweep`` and for a default
``LogisticProbe``, the objective within 1e-4 (relative) of a tightly converged scikit-learn fit and
val accuracy within 0.5 pp of it. Small instances of each family: the file runs in seconds."""

import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from benchmarks.probe_problems import make_features, make_spectrum_features, split, standardized
from pyrobust import reference as ref
from pyrobust.probe import LogisticProbe, probe_sweep
from pyrobust.probe.sweep import DEFAULT_CS

PROBLEMS = {  # name: (X, y) of 1,000 rows, 750 for training
    "pooled": lambda: make_features(1000, 48, 8, seed=3),
    "spectrum": lambda: make_spectrum_features(1000, 64, 8, seed=1, decay=1.0, separation=1.5),
    "ill-conditioned, near-separable": lambda: make_spectrum_features(
        1000, 64, 8, seed=2, decay=2.0, separation=3.0),
    "binary, imbalanced": lambda: make_spectrum_features(
        1000, 64, 2, seed=4, decay=1.5, separation=2.0, relu=False, imbalance=1.0),
    "standardised": lambda: make_spectrum_features(1000, 64, 8, seed=5, decay=1.0, separation=2.0,
                                                   offset=1.0),
}


def _problem(name):
    Xt, yt, Xv, yv = split(*PROBLEMS[name](), 750)
    if name == "standardised":
        Xt, Xv = standardized(Xt, Xv)
    return Xt, yt, Xv, yv


def _tight(X, y, C):
    return LogisticRegression(C=C, tol=1e-10, max_iter=100000).fit(X.astype(np.float64), y)


def _objective(coef, intercept, X, y, C):
    codes = np.searchsorted(np.unique(y), y)
    return float(ref.probe_objective(X.astype(np.float64), codes, coef, intercept, C)[0])


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_default_sweep_matches_tight_fits_at_every_C(name):
    Xt, yt, Xv, yv = _problem(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a default sweep converges, without warnings
        res = probe_sweep(Xt, yt, Xv, yv, progress=False)
    for i, C in enumerate(DEFAULT_CS):
        sk = _tight(Xt, yt, C)
        f = _objective(res.coefs[i], res.intercepts[i], Xt, yt, C)
        f_sk = _objective(sk.coef_, sk.intercept_, Xt, yt, C)
        assert (f - f_sk) / f_sk <= 1e-4, (C, f, f_sk)
        assert abs(res.val_accuracy[i] - sk.score(Xv, yv)) <= 0.005, C


@pytest.mark.parametrize("name", ["ill-conditioned, near-separable", "standardised"])
@pytest.mark.parametrize("C", [1.0, 100.0])
def test_default_estimator_matches_a_tight_fit(name, C):
    Xt, yt, Xv, yv = _problem(name)
    sk = _tight(Xt, yt, C)
    est = LogisticProbe(C=C).fit(Xt, yt)
    f = _objective(est.coef_, est.intercept_, Xt, yt, C)
    f_sk = _objective(sk.coef_, sk.intercept_, Xt, yt, C)
    assert (f - f_sk) / f_sk <= 1e-4, (f, f_sk)
    assert abs(est.score(Xv, yv) - sk.score(Xv, yv)) <= 0.005
