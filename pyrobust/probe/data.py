"""Input handling for the probe: validation, labels, weights, the compute dtype, and chunked
statistics of X.

Features may be numpy arrays, ``np.memmap`` or torch tensors in float16/32/64. They are never
copied whole: a memory map stays a memory map (wrapped without copy by ``torch.from_numpy``) and
every statistic (NaN check, mean, covariance, products) is computed chunk by chunk.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from pyrobust.probe import group as _group

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_COMPUTE_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def as_compute_dtype(dtype, name: str = "dtype") -> torch.dtype:
    """The solver's compute dtype from its name (``"float32"``, ``"float64"``) or a ``torch.dtype``
    (``torch.float32``, ``torch.float64``); ValueError for another dtype, TypeError otherwise."""
    if isinstance(dtype, torch.dtype):
        if dtype in _COMPUTE_DTYPES.values():
            return dtype
        raise ValueError(f"{name} should be torch.float32 or torch.float64, got {dtype}")
    if isinstance(dtype, str):
        if dtype in _COMPUTE_DTYPES:
            return _COMPUTE_DTYPES[dtype]
        raise ValueError(f"{name} should be 'float32' or 'float64', got {dtype!r}")
    raise TypeError(f"{name} should be 'float32', 'float64', torch.float32 or torch.float64, got "
                    f"{type(dtype).__name__} {dtype!r}")


def as_compute_device(device, name: str = "device") -> torch.device:
    """The device the probe computes on: the CPU or a CUDA device this machine has (``"auto"``:
    CUDA where available); a meta device has no values to fit."""
    from pyrobust.errors import resolve_device

    dev = resolve_device(device)
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"{name} should be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return dev


def as_feature_tensor(X, name: str = "X") -> torch.Tensor:
    """``(N, D)`` floating tensor sharing memory with ``X`` where possible (numpy, memmap, torch)."""
    if isinstance(X, torch.Tensor):
        t = X.detach()
        if t.device.type == "meta":
            raise ValueError(f"{name} is a meta tensor (shape {tuple(t.shape)}, no values); the probe "
                             "needs its values: give a CPU or CUDA tensor")
        if t.is_complex():
            raise TypeError(f"{name} should be real, got complex dtype {t.dtype}")
    else:
        try:
            arr = np.asarray(X) if not isinstance(X, np.ndarray) else X
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{name} should be an (n_samples, n_features) array of numbers; "
                            f"np.asarray refused it: {exc}") from None
        if np.issubdtype(arr.dtype, np.complexfloating):
            raise TypeError(f"{name} should be real, got complex dtype {arr.dtype}")
        if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
            raise TypeError(f"{name} should hold numbers, got dtype {arr.dtype}")
        if not np.issubdtype(arr.dtype, np.floating):
            arr = arr.astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # read-only memmaps are only read
            t = torch.from_numpy(arr)
    if t.dtype not in _FLOATS:
        if t.is_floating_point() or t.dtype in (torch.int8, torch.int16, torch.int32, torch.int64,
                                                 torch.uint8, torch.bool):
            t = t.to(torch.float32)
        else:
            raise TypeError(f"{name} should be a float16/32/64 array, got {t.dtype}")
    if t.dim() != 2:
        raise ValueError(f"{name} should be a 2-D (n_samples, n_features) array, got shape "
                         f"{tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{name} is empty: 0 samples")
    if t.shape[1] == 0:
        raise ValueError(f"{name} is empty: 0 features")
    if t.stride(-1) != 1:
        t = t.contiguous()
    return t


def iter_chunks(X: torch.Tensor, chunk_rows: int, device, dtype):
    """Yield ``(start, chunk)`` with each chunk converted to ``dtype`` on ``device``."""
    n = X.shape[0]
    step = n if chunk_rows <= 0 else chunk_rows
    for r0 in range(0, n, step):
        yield r0, X[r0:r0 + step].to(device=device, dtype=dtype)


def to_device_if_fits(X: torch.Tensor, device) -> torch.Tensor:
    """``X`` on a CUDA ``device`` (with its index), in its own dtype, when it takes under half the
    free memory there; else ``X`` unchanged (it is then streamed chunk by chunk)."""
    device = torch.device(device)
    if device.type != "cuda" or X.device == device:
        return X
    free, _ = torch.cuda.mem_get_info(device)
    return X.to(device) if X.numel() * X.element_size() < free // 2 else X


def check_finite(X: torch.Tensor, chunk_rows: int, name: str = "X") -> None:
    """ValueError naming the first row holding NaN or inf (checked where ``X`` lives)."""
    cpu_bf16 = X.dtype == torch.bfloat16 and X.device.type == "cpu"
    for r0, xc in iter_chunks(X, chunk_rows, X.device, torch.float32 if cpu_bf16 else X.dtype):
        bad = ~torch.isfinite(xc).all(dim=1)
        if bool(bad.any()):
            row = r0 + int(bad.nonzero()[0, 0])
            raise ValueError(f"{name} holds NaN or inf; first offending row: {row}")


def as_labels(y, name: str = "y") -> np.ndarray:
    """Labels as a 1-D numpy array (an ``(N, 1)`` column is flattened), of any sortable values but
    NaN or inf: a NaN label would become a class of its own."""
    if y is None:
        raise TypeError(f"{name} should be an array of labels, got None")
    if isinstance(y, torch.Tensor):
        if y.device.type == "meta":
            raise ValueError(f"{name} is a meta tensor (no values); give a CPU or CUDA tensor")
        arr = y.detach().cpu().numpy()
    else:
        try:
            arr = np.asarray(y)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{name} should be a 1-D array of labels; np.asarray refused it: {exc}") from None
    if arr.ndim != 1:
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr.ravel()
        else:
            raise ValueError(f"{name} should be 1-D (one label per sample), got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name} should hold real labels, got complex dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{name} holds {int(bad.sum())} NaN or inf labels; first at index {i} "
                             f"({arr[i]}); every label should be a class")
    return arr


def encode_labels(y, name: str = "y", group=None):
    """``(classes, codes)``: sorted unique labels (any values) and int64 codes; with a process
    ``group``, the classes are those of every rank's labels."""
    arr = as_labels(y, name)
    try:
        classes, codes = np.unique(arr, return_inverse=True)
    except TypeError as exc:
        raise TypeError(f"{name} should hold labels that can be sorted (numbers or strings), got "
                        f"dtype {arr.dtype}: {exc}") from None
    if group is not None:
        classes = _group.union_labels(classes, group)
        codes = np.searchsorted(classes, arr)
    return classes, codes.reshape(-1).astype(np.int64)


def class_weight_array(class_weight: dict, classes: np.ndarray) -> np.ndarray:
    """Per-class weights from ``{label: weight}`` (missing labels weigh 1), in ``classes`` order;
    every key should be a label of ``y`` and every weight a finite number >= 0 (as scikit-learn)."""
    known = set(classes.tolist())
    unknown = [k for k in class_weight if k not in known]
    if unknown:
        shown = ", ".join(map(repr, classes[:20].tolist()))
        raise ValueError(f"class_weight has keys {unknown[:10]!r} that are not labels of y; the labels "
                         f"are {shown}")
    out = np.ones(len(classes))
    lookup = {k: v for k, v in class_weight.items()}
    for i, c in enumerate(classes.tolist()):
        if c in lookup:
            v = lookup[c]
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise TypeError(f"class_weight[{c!r}] should be a number, got {type(v).__name__} {v!r}")
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"class_weight[{c!r}] should be a finite number >= 0, got {v}")
            out[i] = float(v)
    return out


def sample_weights(codes: np.ndarray, n_classes: int, sample_weight=None, class_weight=None,
                   group=None):
    """float64 per-sample weights as scikit-learn defines them (class weight times sample weight;
    ``"balanced"`` = n_weighted / (n_classes * weighted class count), counted over every rank of
    a process ``group``)."""
    n = codes.shape[0]
    if sample_weight is None:
        sw = np.ones(n)
    else:
        if isinstance(sample_weight, torch.Tensor):
            sample_weight = sample_weight.detach().cpu().numpy()
        try:
            sw = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"sample_weight should be an array of numbers, one per sample: {exc}") from None
        if sw.shape[0] != n:
            raise ValueError(f"sample_weight has {sw.shape[0]} entries for {n} samples")
        bad = ~(np.isfinite(sw) & (sw >= 0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"sample_weight should be finite and >= 0; index {i} holds {sw[i]}")
    if class_weight is None:
        return sw
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ValueError(f"class_weight should be None, 'balanced' or a dict, got "
                             f"{class_weight!r}")
        counts = np.append(np.bincount(codes, weights=sw, minlength=n_classes), sw.sum())
        counts = _group.sum_(torch.from_numpy(counts), group).numpy()
        cw = counts[-1] / (n_classes * counts[:-1])
    elif isinstance(class_weight, dict):
        raise TypeError("dict class_weight is given with labels; use resolve_class_weight")
    else:
        raise ValueError(f"class_weight should be None, 'balanced' or a dict, got {class_weight!r}")
    return sw * cw[codes]


def feature_stats(X: torch.Tensor, weight: torch.Tensor, standardize: str, chunk_rows: int,
                  device, dtype, group=None):
    """Centre, scale and eigendecomposition of the weighted covariance of ``(x - centre) / scale``.

    ``standardize``: ``"none"`` (scale 1), ``"feature"`` (per-feature std, as StandardScaler),
    ``"scalar"`` (one std over all entries, as the LP-FT authors' code). The centre is the weighted
    mean; for ``"none"`` it is only a reparametrisation (the intercept absorbs it). Sums are
    float64; the covariance costs one pass N * D^2 (about 1.3 gradients at D=512, K=100). With a
    process ``group`` the sums are over every rank's rows (two all-reduces: D + 1, then D^2).
    """
    if standardize not in ("none", "feature", "scalar"):
        raise ValueError(f"standardize should be 'none', 'feature' or 'scalar', got {standardize!r}")
    d = X.shape[1]
    w64 = weight.to(device=device, dtype=torch.float64)
    s1 = torch.zeros(d + 1, dtype=torch.float64, device=device)  # [sum w x, sum w]
    for r0, xc in iter_chunks(X, chunk_rows, device, dtype):
        s1[:d] += (w64[r0:r0 + xc.shape[0]].to(dtype) @ xc).double()
    s1[d] = w64.sum()
    _group.sum_(s1, group)
    wsum = float(s1[d])
    mean = s1[:d] / wsum
    gram = torch.zeros(d, d, dtype=torch.float64, device=device)
    mean_c = mean.to(dtype)
    for r0, xc in iter_chunks(X, chunk_rows, device, dtype):
        xc = xc - mean_c
        gram += (xc.T @ (xc * w64[r0:r0 + xc.shape[0]].to(dtype)[:, None])).double()
    _group.sum_(gram, group)
    cov = gram / wsum
    if standardize == "feature":
        std = cov.diagonal().sqrt()
        scale = torch.where(std > 0, std, torch.ones_like(std))  # constant features: as sklearn
    elif standardize == "scalar":
        # one std over all entries around one mean (the LP-FT authors' convention)
        mu = mean.mean()
        var = cov.diagonal().mean() + ((mean - mu) ** 2).mean()
        std = float(var.sqrt()) if float(var) > 0 else 1.0
        scale = torch.full((d,), std, dtype=torch.float64, device=device)
    else:
        scale = torch.ones(d, dtype=torch.float64, device=device)
    return mean, scale, _eig(cov, scale)


def _eig(cov: torch.Tensor, scale: torch.Tensor):
    cov_u = cov / scale[:, None] / scale[None, :]
    vals, vecs = torch.linalg.eigh(cov_u)
    return vecs, vals.clamp_min(0)
