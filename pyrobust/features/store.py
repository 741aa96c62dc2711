"""On-disk layout of a feature cache and its integrity checks.

A cache is a directory::

    key.json                 what determines the content (weights / dataset fingerprints, transform, layer, dtype,
                             format version) plus the layout (n, dim, chunk size); written atomically at creation
    features.npy             (N, D) float16/float32/float64, raw .npy preallocated and filled as a memory map
    labels.npy               (N,) int64
    progress-rank<r>.jsonl   one line {"chunk": i, "checksum": hex} appended (and flushed) after each chunk
    manifest.json            written last, by an atomic rename: its presence means the cache is complete

Chunk ``i`` holds rows ``[i * chunk_size, min((i + 1) * chunk_size, N))``; its checksum is blake2b over those feature
rows and labels. No pickle anywhere: only ``.npy`` headers, raw bytes and JSON.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from typing import Iterable

import numpy as np

FORMAT_VERSION = 1

KEY_FILE = "key.json"
MANIFEST_FILE = "manifest.json"
FEATURES_FILE = "features.npy"
LABELS_FILE = "labels.npy"
PROGRESS_GLOB = "progress-rank*.jsonl"

_KEY_FIELDS = ("format_version", "weights", "dataset_len", "dataset_sample", "transform", "layer", "dtype")


class CacheKeyMismatch(ValueError):
    """The cache directory holds features computed for a different model / dataset / layer / dtype."""


class CacheCorrupted(ValueError):
    """A stored chunk does not match its checksum (or a file has the wrong shape)."""


def atomic_write_json(path: str, obj: dict) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: str) -> dict | None:
    """The JSON object in ``path``, None when the file does not exist; :class:`CacheCorrupted`
    naming the file when it is not a JSON object."""
    try:
        with open(path) as f:
            obj = json.load(f)
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CacheCorrupted(f"{path!r} is not valid JSON ({exc}); delete the cache directory to "
                             "recompute it") from None
    if not isinstance(obj, dict):
        raise CacheCorrupted(f"{path!r} should hold a JSON object, got {type(obj).__name__}; delete "
                             "the cache directory to recompute it")
    return obj


def check_layout(path: str, layout: dict, *, checksums: bool) -> None:
    """:class:`CacheCorrupted` naming the file ``path`` and the field when ``layout`` (key.json or
    manifest.json) lacks a field or holds a value no extraction writes; with ``checksums``, the
    manifest's list must have one checksum per chunk."""
    missing = [f for f in (*_KEY_FIELDS, "n", "dim", "chunk_size") if f not in layout]
    if missing:
        raise CacheCorrupted(f"{path!r} lacks {', '.join(map(repr, missing))}; delete the cache "
                             "directory to recompute it")
    for field in ("n", "dim", "chunk_size"):
        v = layout[field]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise CacheCorrupted(f"{path!r}: {field!r} should be an int >= 1, got {v!r}")
    if layout["dtype"] not in ("float16", "float32", "float64"):
        raise CacheCorrupted(f"{path!r}: 'dtype' should be float16, float32 or float64, got {layout['dtype']!r}")
    if checksums:
        sums = layout.get("checksums")
        n_chunks = -(-layout["n"] // layout["chunk_size"])
        if sums is None:
            raise CacheCorrupted(f"{path!r} lists no checksums, so the cache cannot be verified; open it "
                                 "with verify=False to use it unverified, or delete it and rerun "
                                 "extract_features")
        if not isinstance(sums, list) or len(sums) != n_chunks or not all(isinstance(c, str) for c in sums):
            got = f"{len(sums)} checksums" if isinstance(sums, list) else repr(sums)[:60]
            raise CacheCorrupted(f"{path!r} should list one checksum per chunk, got {got} for {n_chunks} chunks; "
                                 "delete the cache directory to recompute it")


def check_key(path: str, stored: dict, wanted: dict) -> None:
    """Raise :class:`CacheKeyMismatch` naming each field that differs."""
    diff = [f for f in _KEY_FIELDS if stored.get(f) != wanted.get(f)]
    if diff:
        lines = "; ".join(f"{f}: stored {stored.get(f)!r} vs requested {wanted.get(f)!r}" for f in diff)
        raise CacheKeyMismatch(
            f"feature cache at {path!r} was computed with a different key ({lines}); "
            "use another path or delete the directory to recompute"
        )


def chunk_bounds(chunk: int, chunk_size: int, n: int) -> tuple[int, int]:
    start = chunk * chunk_size
    return start, min(start + chunk_size, n)


def chunk_checksum(features: np.ndarray, labels: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(features).data)
    h.update(np.ascontiguousarray(labels).data)
    return h.hexdigest()


def read_progress(path: str) -> dict[int, str]:
    """Completed chunks recorded by any rank; a torn last line (killed mid-write) is ignored."""
    done: dict[int, str] = {}
    for fn in sorted(glob.glob(os.path.join(path, PROGRESS_GLOB))):
        with open(fn) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                    done[int(rec["chunk"])] = str(rec["checksum"])
                except (ValueError, KeyError, TypeError):
                    continue
    return done


def open_arrays(path: str, layout: dict, mode: str = "r") -> tuple[np.memmap, np.memmap]:
    """Open features and labels as memory maps and check their shapes against ``layout``."""
    arrays = []
    for name in (FEATURES_FILE, LABELS_FILE):
        file = os.path.join(path, name)
        try:
            arrays.append(np.load(file, mmap_mode=mode))
        except (OSError, ValueError, EOFError) as exc:  # missing, truncated, not a .npy
            raise CacheCorrupted(f"feature cache file {file!r} cannot be opened ({exc}); delete the "
                                 "cache directory to recompute it") from None
    feats, labels = arrays
    want = (int(layout["n"]), int(layout["dim"]))
    if feats.shape != want or str(feats.dtype) != layout["dtype"] or labels.shape != (want[0],):
        raise CacheCorrupted(
            f"feature cache at {path!r}: files have shapes {feats.shape} {feats.dtype} / {labels.shape}, "
            f"expected {want} {layout['dtype']} / ({want[0]},)"
        )
    return feats, labels


def create_arrays(path: str, n: int, dim: int, dtype: str) -> None:
    f = np.lib.format.open_memmap(os.path.join(path, FEATURES_FILE), mode="w+", dtype=dtype, shape=(n, dim))
    lab = np.lib.format.open_memmap(os.path.join(path, LABELS_FILE), mode="w+", dtype=np.int64, shape=(n,))
    del f, lab


def bad_chunks(feats: np.ndarray, labels: np.ndarray, checksums: dict[int, str], chunk_size: int,
               chunks: Iterable[int] | None = None) -> list[int]:
    """Chunks (among ``chunks``, default all recorded) whose data no longer match their checksum."""
    n = feats.shape[0]
    out = []
    for c in sorted(checksums if chunks is None else chunks):
        a, b = chunk_bounds(c, chunk_size, n)
        if checksums.get(c) != chunk_checksum(feats[a:b], labels[a:b]):
            out.append(c)
    return out


class FeatureCache:
    """A completed feature cache on disk.

    Attributes:
        path: the cache directory.
        features: ``(N, D)`` read-only ``np.memmap`` (float16 by default); never loaded whole.
        labels: ``(N,)`` int64 read-only ``np.memmap``.
        key: the dict that determined the content (see :mod:`pyrobust.features.store`).
    """

    def __init__(self, path: str, manifest: dict, features: np.memmap, labels: np.memmap):
        self.path = path
        self.manifest = manifest
        self.key = {k: manifest[k] for k in _KEY_FIELDS}
        self.features = features
        self.labels = labels

    @classmethod
    def open(cls, path: str, *, verify: bool = True) -> "FeatureCache":
        """Open a finished cache. With ``verify`` every chunk is checked against its checksum, streaming chunk by
        chunk; a mismatch raises :class:`CacheCorrupted` (``extract_features`` instead recomputes such chunks)."""
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path should be a cache directory path, got {type(path).__name__} {path!r}")
        path = os.fspath(path)
        if not isinstance(verify, bool):
            raise TypeError(f"verify should be True or False, got {verify!r}")
        manifest_path = os.path.join(path, MANIFEST_FILE)
        manifest = read_json(manifest_path)
        if manifest is None:
            raise FileNotFoundError(f"no finished feature cache at {path!r} (missing {MANIFEST_FILE})")
        check_layout(manifest_path, manifest, checksums=verify)
        feats, labels = open_arrays(path, manifest, "r")
        if verify:
            sums = {i: s for i, s in enumerate(manifest["checksums"])}
            bad = bad_chunks(feats, labels, sums, int(manifest["chunk_size"]))
            if bad:
                raise CacheCorrupted(
                    f"feature cache at {path!r}: chunk(s) {bad[:10]} (chunk size {manifest['chunk_size']}) fail "
                    "their checksum; rerun extract_features to recompute them or delete the directory"
                )
        return cls(path, manifest, feats, labels)

    def rank_chunks(self, rank: int, world: int) -> list[int]:
        """The chunks rank ``rank`` of ``world`` owns: ``rank, rank + world, ...``, those it wrote
        when the cache was extracted by as many ranks (so they are likely in its page cache)."""
        if not (isinstance(world, int) and isinstance(rank, int) and 0 <= rank < world):
            raise ValueError(f"rank should be in [0, world), got rank={rank!r}, world={world!r}")
        n_chunks = -(-len(self) // int(self.manifest["chunk_size"]))
        return list(range(rank, n_chunks, world))

    def shard(self, rank: int, world: int, *, verify: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """``(features, labels, rows)``: this rank's rows (those of :meth:`rank_chunks`) in memory,
        a copy of its share only, and their row indices in the cache. With ``verify`` only those
        chunks are checked against their checksums: the ranks read the cache once between them."""
        chunks = self.rank_chunks(rank, world)
        cs = int(self.manifest["chunk_size"])
        if verify:
            sums = self.manifest.get("checksums")
            if not isinstance(sums, list):
                raise CacheCorrupted(f"{self.path!r} lists no checksums, so its chunks cannot be verified")
            bad = bad_chunks(self.features, self.labels, dict(enumerate(sums)), cs, chunks)
            if bad:
                raise CacheCorrupted(f"feature cache at {self.path!r}: chunk(s) {bad[:10]} fail their "
                                     "checksum; rerun extract_features to recompute them")
        bounds = [chunk_bounds(c, cs, len(self)) for c in chunks]
        rows = np.concatenate([np.arange(a, b) for a, b in bounds] or [np.zeros(0, np.int64)])
        feats = np.concatenate([self.features[a:b] for a, b in bounds] or [self.features[:0]])
        labels = np.concatenate([self.labels[a:b] for a, b in bounds] or [self.labels[:0]])
        return feats, labels, rows

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])

    def __repr__(self) -> str:
        return f"FeatureCache(path={self.path!r}, n={len(self)}, dim={self.feature_dim}, dtype={self.features.dtype})"
