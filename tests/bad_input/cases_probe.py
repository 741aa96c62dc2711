"""probe_sweep and LogisticProbe: features, labels, weights, the C grid and the solver settings."""

import numpy as np
import torch

from pyrobust.probe import LogisticProbe, probe_sweep
from tests.bad_input.fixtures import blobs
from tests.bad_input.harness import bad, good, table

V, T = ValueError, TypeError


def sweep(**kw):
    X, y = blobs()
    args = dict(X_train=X, y_train=y, X_val=X[:20], y_val=y[:20], Cs=[0.1, 1.0], progress=False)
    args.update(kw)
    return probe_sweep(**args)


def fit(X=None, y=None, **kw):
    Xd, yd = blobs()
    return LogisticProbe(**kw).fit(Xd if X is None else X, yd if y is None else y)


def with_nan(a, row=3):
    a = np.array(a, dtype=np.float64)
    a[row] = np.nan
    return a


X, y = blobs()
CASES = table(
    # features
    bad("X 1-D", lambda: sweep(X_train=X[:, 0]), V, r"X.*2-D.*\(60,\)"),
    bad("X 3-D", lambda: sweep(X_train=X[:, :, None]), V, r"X.*2-D"),
    bad("X no rows", lambda: sweep(X_train=X[:0], y_train=y[:0]), V, r"X.*empty"),
    bad("X no features", lambda: sweep(X_train=X[:, :0]), V, r"X.*0 features"),
    bad("X strings", lambda: sweep(X_train=X.astype(str)), T, r"X.*numbers"),
    bad("X complex", lambda: sweep(X_train=X.astype(np.complex64)), T, r"X.*complex"),
    bad("X NaN", lambda: sweep(X_train=with_nan(X)), V, r"X .*NaN.*row: 3"),
    bad("X inf tensor", lambda: sweep(X_train=torch.from_numpy(X).index_fill(0, torch.tensor([5]), float("inf"))),
        V, r"X .*inf.*row: 5"),
    bad("X meta tensor", lambda: sweep(X_train=torch.empty(60, 5, device="meta")), V, r"X.*meta"),
    bad("X list of lists ragged", lambda: sweep(X_train=[[1.0, 2.0], [3.0]]), (V, T), r"X"),
    bad("X_val NaN", lambda: sweep(X_val=with_nan(X[:20])), V, r"X_val .*NaN.*row: 3"),
    bad("X_val width", lambda: sweep(X_val=X[:20, :4]), V, r"X_val has 4 features, X_train has 5"),
    bad("X_val empty", lambda: sweep(X_val=X[:0], y_val=y[:0]), V, r"X_val.*empty"),
    # labels
    bad("y shorter", lambda: sweep(y_train=y[:50]), V, r"X has 60 samples but y has 50 labels"),
    bad("y longer", lambda: sweep(y_train=np.r_[y, y]), V, r"X has 60 samples but y has 120 labels"),
    bad("y 2-D two columns", lambda: sweep(y_train=np.stack([y, y], 1)), V, r"y.*1-D.*\(60, 2\)"),
    bad("y one class", lambda: sweep(y_train=np.zeros(60)), V, r"2 classes"),
    bad("y NaN label", lambda: sweep(y_train=with_nan(y)), V, r"y .*NaN.*3"),
    bad("y NaN label tensor", lambda: sweep(y_train=torch.from_numpy(with_nan(y))), V, r"y .*NaN"),
    bad("y inf label", lambda: sweep(y_train=np.where(np.arange(60) == 7, np.inf, y)), V, r"y .*inf"),
    bad("y None", lambda: sweep(y_train=None), (V, T), r"y"),
    bad("y objects", lambda: sweep(y_train=np.array([{}] * 60, dtype=object)), (V, T), r"y"),
    bad("y_val length", lambda: sweep(y_val=y[:19]), V, r"X_val has 20 samples but y_val has 19"),
    bad("y_val NaN", lambda: sweep(y_val=with_nan(y[:20])), V, r"y_val .*NaN"),
    bad("y_val 2-D", lambda: sweep(y_val=np.stack([y[:20], y[:20]], 1)), V, r"y_val.*1-D"),
    # the C grid
    bad("Cs empty", lambda: sweep(Cs=[]), V, r"Cs is empty"),
    bad("Cs negative", lambda: sweep(Cs=[0.1, -1]), V, r"C .*> 0.*-1"),
    bad("Cs NaN", lambda: sweep(Cs=[np.nan]), V, r"C .*nan"),
    bad("Cs inf", lambda: sweep(Cs=[np.inf]), V, r"C .*inf"),
    bad("Cs zero", lambda: sweep(Cs=[0.0]), V, r"C .*0"),
    bad("Cs strings", lambda: sweep(Cs=["a"]), (V, T), r"Cs"),
    bad("Cs None", lambda: sweep(Cs=None), (V, T), r"Cs"),
    # solver settings
    bad("tol zero", lambda: sweep(tol=0), V, r"tol .*> 0.*0"),
    bad("tol NaN", lambda: sweep(tol=float("nan")), V, r"tol .*nan"),
    bad("tol string", lambda: sweep(tol="1e-4"), T, r"tol"),
    bad("max_iter zero", lambda: sweep(max_iter=0), V, r"max_iter .*>= 1.*0"),
    bad("max_iter float", lambda: sweep(max_iter=2.5), T, r"max_iter .*int.*2.5"),
    bad("max_iter NaN", lambda: sweep(max_iter=float("nan")), T, r"max_iter"),
    bad("max_iter bool", lambda: sweep(max_iter=True), T, r"max_iter"),
    bad("joint zero", lambda: sweep(joint=0), V, r"joint .*>= 1"),
    bad("joint float", lambda: sweep(joint=1.5), T, r"joint"),
    bad("history zero", lambda: sweep(history=0), V, r"history .*>= 1.*0"),
    bad("history negative", lambda: sweep(history=-3), V, r"history"),
    bad("chunk_rows negative", lambda: sweep(chunk_rows=-5), V, r"chunk_rows .*-5"),
    bad("chunk_rows float", lambda: sweep(chunk_rows=10.5), T, r"chunk_rows"),
    bad("standardize unknown", lambda: sweep(standardize="features"), V, r"standardize .*'features'"),
    bad("dtype float16", lambda: sweep(dtype=torch.float16), V, r"dtype .*torch.float32 or torch.float64.*float16"),
    bad("dtype half name", lambda: sweep(dtype="half"), V, r"dtype .*'half'"),
    bad("dtype int", lambda: sweep(dtype=32), T, r"dtype"),
    bad("device gpu", lambda: sweep(device="gpu"), V, r"device .*'gpu'"),
    bad("device meta", lambda: sweep(device="meta"), V, r"device .*meta"),
    bad("device cuda:99", lambda: sweep(device="cuda:99"), V, r"cuda"),
    bad("refit string", lambda: sweep(refit="yes"), T, r"refit"),
    # weights
    bad("sample_weight length", lambda: sweep(sample_weight=np.ones(59)), V, r"sample_weight has 59 .*60"),
    bad("sample_weight NaN", lambda: sweep(sample_weight=with_nan(np.ones(60))), V, r"sample_weight .*finite"),
    bad("sample_weight negative", lambda: sweep(sample_weight=-np.ones(60)), V, r"sample_weight .*>= 0"),
    bad("sample_weight zeros", lambda: sweep(sample_weight=np.zeros(60)), V, r"sum to zero"),
    bad("sample_weight strings", lambda: sweep(sample_weight=["a"] * 60), (V, T), r"sample_weight"),
    bad("class_weight negative", lambda: sweep(class_weight={0: -0.5}), V, r"class_weight.*0.*-0.5"),
    bad("class_weight NaN", lambda: sweep(class_weight={1: float("nan")}), V, r"class_weight.*1.*nan"),
    bad("class_weight inf", lambda: sweep(class_weight={1: float("inf")}), V, r"class_weight.*inf"),
    bad("class_weight unknown key", lambda: sweep(class_weight={"cat": 100}), V, r"class_weight.*'cat'.*0, 1, 2"),
    bad("class_weight string value", lambda: sweep(class_weight={0: "x"}), (V, T), r"class_weight"),
    bad("class_weight misspelt", lambda: sweep(class_weight="balance"), V, r"class_weight.*'balance'"),
    bad("class_weight list", lambda: sweep(class_weight=[1, 2, 3]), (V, T), r"class_weight"),
    bad("class_weight all zero", lambda: sweep(class_weight={0: 0, 1: 0, 2: 0}), V, r"sum to zero"),
    good("class_weight zero for one class", lambda: sweep(class_weight={0: 0.0}),
         lambda r: np.isfinite(r.val_loss).all()),
    good("class_weight float keys of int labels", lambda: sweep(class_weight={0.0: 2.0}),
         lambda r: np.isfinite(r.val_loss).all()),
    good("unseen val labels only warn", lambda: sweep(y_val=np.full(20, 7)), lambda r: (r.val_accuracy == 0).all()),
    good("string labels", lambda: sweep(y_train=np.array(["a", "b", "c"])[y], y_val=np.array(["a", "b", "c"])[y[:20]]),
         lambda r: list(r.classes) == ["a", "b", "c"]),
    # LogisticProbe
    bad("LP C zero", lambda: fit(C=0), V, r"C .*> 0.*0"),
    bad("LP C string", lambda: fit(C="1"), (V, T), r"C "),
    bad("LP C bool", lambda: fit(C=True), (V, T), r"C "),
    bad("LP C NaN", lambda: fit(C=float("nan")), V, r"C .*nan"),
    bad("LP tol string", lambda: fit(tol="x"), (V, T), r"tol"),
    bad("LP max_iter zero", lambda: fit(max_iter=0), V, r"max_iter"),
    bad("LP dtype float16", lambda: fit(dtype=torch.float16), V, r"dtype .*float16"),
    bad("LP standardize", lambda: fit(standardize="yes"), V, r"standardize .*'yes'"),
    bad("LP NaN label numpy", lambda: fit(y=with_nan(y)), V, r"y|NaN"),
    bad("LP NaN label tensor path", lambda: fit(X=torch.from_numpy(X), y=torch.from_numpy(with_nan(y))), V, r"y .*NaN"),
    bad("LP rows vs labels tensor path", lambda: fit(X=torch.from_numpy(X), y=torch.from_numpy(y[:50])), V,
        r"60 samples but y has 50"),
    bad("LP class_weight negative", lambda: fit(class_weight={0: -1.0}), V, r"class_weight.*-1"),
    bad("LP class_weight unknown key", lambda: fit(class_weight={5: 1.0}), V, r"class_weight.*5"),
    bad("LP predict width", lambda: fit().predict(X[:, :4]), V, r"4 features"),
    bad("LP predict width tensor", lambda: fit().predict(torch.from_numpy(X[:, :4])), V, r"4 features"),
    bad("LP predict NaN tensor", lambda: fit().predict(torch.from_numpy(with_nan(X).astype(np.float32))), V, r"X .*NaN"),
    bad("LP predict unfitted", lambda: LogisticProbe().predict(X), Exception, r"not fitted"),
)
