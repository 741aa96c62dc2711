"""``LogisticProbe``: scikit-learn's L2 ``LogisticRegression`` objective, solved by pyrobust.

Same objective as ``sklearn.linear_model.LogisticRegression(C=C)`` (lbfgs, multinomial for
K >= 3, binomial with one weight vector for K = 2; unpenalised intercept), same attribute shapes
(``coef_`` (K, D) or (1, D), ``intercept_`` (K,) or (1,)), any label values. The head is always
expressed on raw features, whatever ``standardize`` was used during the fit.

``sklearn.utils.estimator_checks.check_estimator`` (scikit-learn 1.9): every check passes except
- ``check_sample_weight_equivalence_on_dense_data``: it compares ``predict_proba`` of a weighted
  fit with a fit on repeated rows at rtol 1e-7; the default float32 compute and ``tol=1e-4``
  agree only to about 1e-4 (the objectives are the same; ``tests/test_probe.py`` checks weights
  against scikit-learn at 1e-6 relative in objective instead).
``tests/test_probe.py::test_check_estimator`` runs the whole list and fails on any other check.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from pyrobust.checks import check_int, check_real
from pyrobust.probe import data as _data
from pyrobust.probe.problem import Problem, gap_tolerance
from pyrobust.probe.scoring import decision_scores

__all__ = ["LogisticProbe"]


class LogisticProbe(ClassifierMixin, BaseEstimator):
    """L2-regularised logistic regression (linear probe), a scikit-learn classifier.

    Args:
        C: inverse regularisation strength, > 0 (penalty ``|W|^2 / (2 C sum(w))``).
        standardize: ``"none"``, ``"feature"`` (per-feature) or ``"scalar"`` (one mean and std).
        tol: stop once the max-abs gradient (scikit-learn's lbfgs ``gtol``) is ``<= tol`` and
            the estimated objective gap ``g' M g / 2`` (M the solver's preconditioner) is
            ``<= tol`` and ``<= 1e-6`` of the objective; fitted ``grad_norm_`` and ``gap_``
            report the final values.
        max_iter: iteration cap.
        device: ``"cpu"`` or ``"cuda"``.
        class_weight: None, ``"balanced"`` or a dict ``{label: weight}``.
        dtype: compute dtype, ``"float32"`` (default) or ``"float64"``, or the ``torch.dtype``
            itself (``torch.float32``, ``torch.float64``), as ``probe_sweep`` takes it.
    """

    def __init__(self, C=1.0, *, standardize="none", tol=1e-4, max_iter=1000, device="cpu",
                 class_weight=None, dtype="float32"):
        self.C = C
        self.standardize = standardize
        self.tol = tol
        self.max_iter = max_iter
        self.device = device
        self.class_weight = class_weight
        self.dtype = dtype

    def fit(self, X, y, sample_weight=None):
        """Fit on ``X`` ``(N, D)`` (numpy, memmap or tensor, float16/32/64) and labels ``y``."""
        C = check_real(self.C, "C", min=0, min_open=True)
        tol = check_real(self.tol, "tol", min=0, min_open=True)
        max_iter = check_int(self.max_iter, "max_iter", min=1)
        if not isinstance(X, (torch.Tensor, np.memmap)):
            X, y = validate_data(self, X, y, dtype=[np.float64, np.float32, np.float16],
                                 y_numeric=False, reset=True)
            check_classification_targets(y)
        else:
            self.n_features_in_ = X.shape[1]
        prob = Problem(X, y, sample_weight=sample_weight, class_weight=self.class_weight,
                       standardize=self.standardize, device=self.device,
                       compute_dtype=self.dtype)
        coef, intercept = prob.zeros(1)
        coef, intercept, it, gn, gap, loss, _ = prob.solve([C], coef, intercept, tol=tol,
                                                        max_iter=max_iter)
        gap_tol = float(gap_tolerance(
            tol, prob.objective(torch.tensor([prob.lam(C)], dtype=torch.float64), coef, loss))[0])
        cf, ic = prob.fold(coef[0], intercept[0])
        self._set_fitted(prob.classes, cf, ic, int(it[0]), float(gn[0]), prob.X.shape[1],
                         float(gap[0]))
        if not (self.grad_norm_ <= tol and self.gap_ <= gap_tol):
            warnings.warn(f"LogisticProbe(C={C:g}) stopped after {self.n_iter_[0]} iterations "
                          f"with max-abs gradient {self.grad_norm_:.2e} (should be <= tol="
                          f"{tol:g}) and estimated objective gap {self.gap_:.2e} (should be "
                          f"<= {gap_tol:.2e}); increase max_iter or use dtype='float64'",
                          ConvergenceWarning, stacklevel=2)
        return self

    def _set_fitted(self, classes, coef, intercept, n_iter, grad_norm, n_features, gap=0.0):
        self.classes_ = np.asarray(classes)
        self.coef_ = np.asarray(coef, dtype=np.float64)
        self.intercept_ = np.asarray(intercept, dtype=np.float64)
        self.n_iter_ = np.array([n_iter], dtype=np.int32)
        self.grad_norm_ = float(grad_norm)
        self.gap_ = float(gap)
        self.n_features_in_ = n_features
        return self

    def decision_function(self, X):
        """``(N,)`` for two classes (score of ``classes_[1]``), else ``(N, K)``, float64."""
        check_is_fitted(self)
        if isinstance(X, (torch.Tensor, np.memmap)):
            Xt = _data.as_feature_tensor(X, "X")
            if Xt.shape[1] != self.n_features_in_:
                raise ValueError(f"X has {Xt.shape[1]} features, the probe was fitted on "
                                 f"{self.n_features_in_}")
            _data.check_finite(Xt, 65536, "X")
            s = decision_scores(Xt, self.coef_, self.intercept_, dtype=torch.float64).numpy()
        else:
            X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
            s = np.asarray(X, dtype=np.float64) @ self.coef_.T + self.intercept_
        return s[:, 0] if s.shape[1] == 1 else s

    def predict_proba(self, X):
        """``(N, K)`` class probabilities in ``classes_`` order, float64."""
        s = self.decision_function(X)
        if s.ndim == 1:
            p1 = 1.0 / (1.0 + np.exp(-s))
            return np.stack([1.0 - p1, p1], axis=1)
        s = s - s.max(axis=1, keepdims=True)
        e = np.exp(s)
        return e / e.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X):
        return np.log(self.predict_proba(X))

    def predict(self, X):
        """``(N,)`` predicted labels (values of ``classes_``)."""
        s = self.decision_function(X)
        idx = (s > 0).astype(np.int64) if s.ndim == 1 else s.argmax(axis=1)
        return self.classes_[idx]

    def to_linear(self) -> torch.nn.Linear:
        """``torch.nn.Linear(D, K)`` (``(D, 1)`` for two classes) float32 on raw features."""
        check_is_fitted(self)
        k, d = self.coef_.shape
        lin = torch.nn.Linear(d, k)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(self.coef_))
            lin.bias.copy_(torch.from_numpy(self.intercept_))
        return lin

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        return tags
