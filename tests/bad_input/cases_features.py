"""extract_features and FeatureCache.open: arguments, and caches damaged on disk."""

import json
import os

import numpy as np
import torch

from pyrobust.features import CacheCorrupted, FeatureCache, extract_features
from tests.bad_input.fixtures import cache_copy, fresh_dir, image_dataset, tiny_model
from tests.bad_input.harness import bad, good, table

V, T = ValueError, TypeError


def extract(**kw):
    args = dict(model=tiny_model(), dataset=image_dataset(10), path=os.path.join(fresh_dir(), "c"),
                batch_size=4, device="cpu", progress=False)
    args.update(kw)
    return extract_features(**args)


def edit_manifest(change):
    path = cache_copy()
    m = json.load(open(os.path.join(path, "manifest.json")))
    change(m)
    json.dump(m, open(os.path.join(path, "manifest.json"), "w"))
    return path


def alter_features(path):
    f = np.load(os.path.join(path, "features.npy"), mmap_mode="r+")
    f[5, 2] += 1.0
    f.flush()
    return path


def write(path, name, data: bytes):
    open(os.path.join(path, name), "wb").write(data)
    return path


def no_checksums(m):
    del m["checksums"]


def short_checksums(m):
    m["checksums"] = m["checksums"][:1]


CASES = table(
    bad("batch_size zero", lambda: extract(batch_size=0), V, r"batch_size .*0"),
    bad("batch_size negative", lambda: extract(batch_size=-4), V, r"batch_size .*-4"),
    bad("batch_size float", lambda: extract(batch_size=2.5), T, r"batch_size"),
    bad("batch_size bool", lambda: extract(batch_size=True), T, r"batch_size"),
    bad("num_workers negative", lambda: extract(num_workers=-1), V, r"num_workers .*-1"),
    bad("dtype int8", lambda: extract(dtype=torch.int8), V, r"dtype .*int8"),
    bad("dtype string", lambda: extract(dtype="float16"), (V, T), r"dtype .*'float16'"),
    bad("path is a file", lambda: extract(path=__file__), V, r"path .*not a directory"),
    bad("path empty", lambda: extract(path=""), V, r"path"),
    bad("path None", lambda: extract(path=None), T, r"path"),
    bad("model not a module", lambda: extract(model=lambda x: x), T, r"model .*nn.Module"),
    bad("dataset an int", lambda: extract(dataset=5), T, r"dataset .*int"),
    bad("dataset empty", lambda: extract(dataset=image_dataset(0)), V, r"empty"),
    bad("layer unknown", lambda: extract(layer="nope"), V, r"layer='nope'"),
    bad("device gpu", lambda: extract(device="gpu"), V, r"device .*'gpu'"),
    bad("device meta", lambda: extract(device="meta"), V, r"device .*meta"),
    bad("verify string", lambda: extract(verify="no"), T, r"verify"),
    bad("labels float", lambda: extract(dataset=[(torch.rand(3, 4, 4), 0.5)] * 4), V, r"labels must be integers"),
    # damaged caches
    good("open a sound cache", lambda: FeatureCache.open(cache_copy()), lambda c: len(c) == 10),
    bad("no manifest", lambda: FeatureCache.open(fresh_dir()), FileNotFoundError, r"manifest.json"),
    bad("manifest not JSON", lambda: FeatureCache.open(write(cache_copy(), "manifest.json", b"{oops")),
        CacheCorrupted, r"manifest.json.*JSON"),
    bad("manifest a list", lambda: FeatureCache.open(write(cache_copy(), "manifest.json", b"[1, 2]")),
        CacheCorrupted, r"manifest.json"),
    bad("manifest without checksums, verify", lambda: FeatureCache.open(alter_features(edit_manifest(no_checksums))),
        CacheCorrupted, r"manifest.json.*checksums.*verify=False"),
    good("manifest without checksums, verify=False",
         lambda: FeatureCache.open(edit_manifest(no_checksums), verify=False), lambda c: len(c) == 10),
    bad("manifest with fewer checksums", lambda: FeatureCache.open(alter_features(edit_manifest(short_checksums))),
        CacheCorrupted, r"manifest.json.*got 1 checksums for 3 chunks"),
    bad("manifest without dim", lambda: FeatureCache.open(edit_manifest(lambda m: m.pop("dim"))),
        CacheCorrupted, r"manifest.json.*'dim'"),
    bad("manifest chunk_size zero", lambda: FeatureCache.open(edit_manifest(lambda m: m.update(chunk_size=0))),
        CacheCorrupted, r"chunk_size.*0"),
    bad("manifest n string", lambda: FeatureCache.open(edit_manifest(lambda m: m.update(n="ten"))),
        CacheCorrupted, r"'n'.*'ten'"),
    bad("altered features", lambda: FeatureCache.open(alter_features(cache_copy())), CacheCorrupted, r"chunk\(s\) \[1\]"),
    bad("features.npy damaged", lambda: FeatureCache.open(write(cache_copy(), "features.npy", b"\x93NUMPY junk")),
        CacheCorrupted, r"features.npy"),
    bad("features.npy truncated", lambda: FeatureCache.open(_truncate(cache_copy(), "features.npy")),
        CacheCorrupted, r"features.npy"),
    bad("labels.npy missing", lambda: FeatureCache.open(_remove(cache_copy(), "labels.npy")),
        CacheCorrupted, r"labels.npy"),
    bad("key.json damaged on resume", lambda: _resume_with_bad_key(), CacheCorrupted, r"key.json"),
    bad("open path None", lambda: FeatureCache.open(None), T, r"path"),
)


def _truncate(path, name):
    full = os.path.join(path, name)
    size = os.path.getsize(full)
    with open(full, "r+b") as f:
        f.truncate(size - 40)
    return path


def _remove(path, name):
    os.remove(os.path.join(path, name))
    return path


def _resume_with_bad_key():
    path = cache_copy()
    os.remove(os.path.join(path, "manifest.json"))
    write(path, "key.json", b"{not json")
    return extract(path=path, dtype=torch.float32)
