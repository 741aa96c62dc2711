"""Linear-probe problems for the probe benchmark suite and the probe's accuracy tests.

A problem is train and val features with labels. Two synthetic families, so that the solver's
defaults are judged on a class of problems rather than on one instance:

- ``pooled``: ReLU of a random projection of noisy class means plus noise: non-negative,
  correlated, low-rank-plus-noise, shaped like pooled network features (``make_features``, the
  default ``bench_probe.py`` problem);
- ``spectrum``: Gaussian classes whose covariance has a power-law spectrum ``i^-decay`` in a random
  basis, class means drawn with the same spectrum times ``separation``, optionally through a ReLU
  and shifted (``offset``): ``decay`` sets the conditioning, ``separation`` how separable the
  classes are (near-separable problems have tiny objectives at weak regularisation).

Real features: EfficientNet-Lite0 features of scikit-learn's digits and of Fashion-MNIST, as
cached by ``pyrobust extract`` (``real_features`` builds the cache on first use).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np


def make_features(n: int, d: int, k: int, seed: int = 0, latent: int = 48, noise: float = 2.9,
                  dtype=np.float32):
    """``(X (n, d), y (n,))``: ReLU of a random projection of noisy class means plus noise."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((k, latent)).astype(np.float32)
    proj = (rng.standard_normal((latent, d)) / np.sqrt(latent)).astype(np.float32)
    y = rng.integers(0, k, n)
    X = np.empty((n, d), dtype=dtype)
    for r0 in range(0, n, 65536):  # bounded memory at ImageNet size
        yy = y[r0:r0 + 65536]
        h = means[yy] + noise * rng.standard_normal((len(yy), latent)).astype(np.float32)
        x = h @ proj + 0.5 * rng.standard_normal((len(yy), d)).astype(np.float32) + 0.3
        X[r0:r0 + 65536] = np.maximum(x, 0)
    return X, y


def make_spectrum_features(n: int, d: int, k: int, seed: int = 0, decay: float = 1.0,
                           separation: float = 1.0, relu: bool = True, offset: float = 0.5,
                           imbalance: float = 0.0, dtype=np.float32):
    """``(X (n, d), y (n,))``: Gaussian classes with covariance spectrum ``i^-decay`` (largest 1)
    in a random orthonormal basis, class means ``separation`` times a draw of the same spectrum;
    ``relu``: ``max(x + offset, 0)``; ``imbalance``: class frequencies ``exp(-imbalance * r)``,
    ``r`` uniform in [0, 1]."""
    rng = np.random.default_rng(seed)
    sd = (np.arange(1, d + 1) ** (-decay / 2)).astype(np.float32)
    basis = np.linalg.qr(rng.standard_normal((d, d)))[0].astype(np.float32)
    means = (separation * rng.standard_normal((k, d)) * sd).astype(np.float32)
    freq = np.exp(-imbalance * rng.random(k))
    y = rng.choice(k, size=n, p=freq / freq.sum())
    X = np.empty((n, d), dtype=dtype)
    for r0 in range(0, n, 16384):
        yy = y[r0:r0 + 16384]
        z = means[yy] + rng.standard_normal((len(yy), d)).astype(np.float32) * sd
        x = z @ basis
        X[r0:r0 + 16384] = np.maximum(x + offset, 0) if relu else x
    return X, y


def split(X, y, n_train: int):
    """``(X_train, y_train, X_val, y_val)``: the first ``n_train`` rows and the rest."""
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


def standardized(Xt, Xv):
    """Train and val features z-scored with the train mean and standard deviation (float32)."""
    mu = Xt.mean(0, dtype=np.float64)
    sd = Xt.std(0, dtype=np.float64)
    sd[sd == 0] = 1.0
    return (((Xt - mu) / sd).astype(np.float32), ((Xv - mu) / sd).astype(np.float32))


FEATURES_DIR = os.environ.get("PYROBUST_PROBE_FEATURES",
                              os.path.join(os.path.expanduser("~"), ".cache", "pyrobust-probe-features"))


def real_features(dataset: str, root: str = FEATURES_DIR):
    """``(X_train, y_train, X_val, y_val)`` float32: EfficientNet-Lite0 features (64 x 64 inputs,
    1,280-d, the ``pyrobust extract`` defaults) of ``dataset`` (``"digits"``, ``"fashion-mnist"``),
    extracted into ``root/<dataset>`` by ``pyrobust extract`` when not cached yet."""
    out = os.path.join(root, dataset)
    if not all(os.path.exists(os.path.join(out, s, "features.npy")) for s in ("train", "val")):
        subprocess.run([sys.executable, "-m", "pyrobust.cli", "extract", "--dataset", dataset,
                        "--splits", "train,val", "--device", "cpu", "--out", out], check=True)
    arrays = []
    for s in ("train", "val"):
        arrays.append(np.load(os.path.join(out, s, "features.npy")).astype(np.float32))
        arrays.append(np.load(os.path.join(out, s, "labels.npy")))
    return tuple(arrays)
