"""pyrobust.features: the on-disk feature cache (load vs recompute, keys, resume, corruption, hooks, bad inputs)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from tests.lpft_helpers import Blobs, TinyCNN
from pyrobust.features import CacheCorrupted, CacheKeyMismatch, FeatureCache, extract_features

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def reference_features(model, ds, layer_fn=None):
    """Direct eval-mode forward of the whole dataset (the definition of what the cache must hold)."""
    model.eval()
    with torch.no_grad():
        return (layer_fn or model.features)(ds.images)


def extract(model, ds, path, **kw):
    kw.setdefault("batch_size", 8)
    kw.setdefault("device", "cpu")
    kw.setdefault("progress", False)
    return extract_features(model, ds, path, **kw)


def test_cache_matches_forward_and_loads_without_recompute(tmp_path):
    model, ds = TinyCNN(), Blobs(n=70)
    cache = extract(model, ds, tmp_path / "c", dtype=torch.float32)
    assert isinstance(cache.features, np.memmap) and cache.features.shape == (70, 16)
    np.testing.assert_allclose(cache.features, reference_features(model, ds).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(cache.labels, ds.labels.numpy())
    calls = model.forward_calls
    again = extract(model, ds, tmp_path / "c", dtype=torch.float32, batch_size=32)
    assert model.forward_calls == calls  # loaded, not recomputed
    np.testing.assert_array_equal(again.features, cache.features)
    assert FeatureCache.open(str(tmp_path / "c")).features.shape == (70, 16)


def test_float16_default_and_dataloader_input(tmp_path):
    model, ds = TinyCNN(), Blobs(n=20)
    cache = extract(model, DataLoader(ds, batch_size=6), tmp_path / "c", batch_size=None)
    assert cache.features.dtype == np.float16 and cache.manifest["chunk_size"] == 6
    ref = reference_features(model, ds).numpy()
    np.testing.assert_allclose(cache.features.astype(np.float32), ref, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("change", ["weights", "dtype", "layer", "data"])
def test_key_mismatch_refused(tmp_path, change):
    model, ds = TinyCNN(), Blobs(n=20)
    extract(model, ds, tmp_path / "c")
    kw = {}
    if change == "weights":
        with torch.no_grad():
            model.head.bias += 1.0  # a change anywhere in the state dict changes the key
    elif change == "dtype":
        kw["dtype"] = torch.float32
    elif change == "layer":
        kw["layer"] = "backbone.3"
    else:
        ds = Blobs(n=20, seed=5)
    with pytest.raises(CacheKeyMismatch, match=change if change != "data" else "dataset_sample"):
        extract(model, ds, tmp_path / "c", **kw)


def test_resume_after_exception_equals_uninterrupted(tmp_path):
    model = TinyCNN()
    full = extract(model, Blobs(n=70), tmp_path / "full")
    with pytest.raises(RuntimeError, match="injected"):
        extract(model, Blobs(n=70, fail_at=45), tmp_path / "part")
    assert not os.path.exists(tmp_path / "part" / "manifest.json")
    calls = model.forward_calls
    resumed = extract(model, Blobs(n=70), tmp_path / "part")
    assert model.forward_calls - calls == 4  # chunks 5..8 of 9 (chunk 5 holds item 45); 0..4 were kept
    np.testing.assert_array_equal(resumed.features, full.features)
    np.testing.assert_array_equal(resumed.labels, full.labels)


def test_resume_after_sigkill_equals_uninterrupted(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, os.path.join(HERE, "lpft_helpers.py"), "kill", str(tmp_path / "part")],
                          env=env, capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert not os.path.exists(tmp_path / "part" / "manifest.json")
    model = TinyCNN()
    calls = model.forward_calls
    resumed = extract(model, Blobs(n=70), tmp_path / "part")
    assert model.forward_calls - calls == 4
    full = extract(TinyCNN(), Blobs(n=70), tmp_path / "full")
    np.testing.assert_array_equal(resumed.features, full.features)


def test_corrupted_chunk_detected(tmp_path):
    model, ds = TinyCNN(), Blobs(n=40)
    good = np.array(extract(model, ds, tmp_path / "c").features)
    fn = tmp_path / "c" / "features.npy"
    raw = bytearray(fn.read_bytes())
    raw[-20] ^= 0xFF  # flip bits in the last chunk's data, after the .npy header
    fn.write_bytes(bytes(raw))
    with pytest.raises(CacheCorrupted, match=r"chunk\(s\) \[4\]"):
        FeatureCache.open(str(tmp_path / "c"))
    calls = model.forward_calls
    with pytest.warns(RuntimeWarning, match="recomputing"):
        fixed = extract(model, ds, tmp_path / "c")
    assert model.forward_calls - calls == 1
    np.testing.assert_array_equal(fixed.features, good)
    FeatureCache.open(str(tmp_path / "c"))  # verifies clean again


def test_corrupted_progress_chunk_recomputed_on_resume(tmp_path):
    model = TinyCNN()
    with pytest.raises(RuntimeError):
        extract(model, Blobs(n=70, fail_at=45), tmp_path / "c", dtype=torch.float32)
    feats = np.load(tmp_path / "c" / "features.npy", mmap_mode="r+")
    feats[3, 0] += 1.0  # damage an already completed chunk (rows 0..7)
    feats.flush()
    del feats
    resumed = extract(model, Blobs(n=70), tmp_path / "c", dtype=torch.float32)
    np.testing.assert_allclose(resumed.features, reference_features(model, Blobs(n=70)).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_layer_hook_pools_spatial_output(tmp_path):
    model, ds = TinyCNN(), Blobs(n=20)
    cache = extract(model, ds, tmp_path / "c", layer="backbone.1", dtype=torch.float32)
    expected = reference_features(model, ds, lambda x: model.backbone[1](model.backbone[0](x)).mean(dim=(2, 3)))
    assert cache.features.shape == (20, 8)
    np.testing.assert_allclose(cache.features, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_model_without_features_method_uses_output(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.ReLU())  # 4-D output → pooled
    ds = Blobs(n=10)
    cache = extract(model, ds, tmp_path / "c", dtype=torch.float32)
    with torch.no_grad():
        np.testing.assert_allclose(cache.features, model(ds.images).mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-6)


class _Items(Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class _NaNModel(TinyCNN):
    def features(self, x):
        f = super().features(x)
        f[0, 0] = float("nan")
        return f


def test_bad_inputs(tmp_path):
    model = TinyCNN()
    with pytest.raises(ValueError, match="empty"):
        extract(model, _Items([]), tmp_path / "a")
    img = torch.rand(3, 8, 8)
    with pytest.raises(ValueError, match="labels must be integers"):
        extract(model, _Items([(img, 0.5), (img, 1.5)]), tmp_path / "b")
    with pytest.raises(ValueError, match="non-finite"):
        extract(_NaNModel(), Blobs(n=10), tmp_path / "c")
    with pytest.raises(ValueError, match="layer='nope'"):
        extract(model, Blobs(n=10), tmp_path / "d", layer="nope")
    with pytest.raises(ValueError, match="RandomSampler"):
        extract(model, DataLoader(Blobs(n=10), shuffle=True), tmp_path / "e")
    wrong_width = TinyCNN()
    wrong_width.feature_dim = 5  # declared width disagrees with what features() returns
    with pytest.raises(ValueError, match=r"expected \(8, 5\)"):
        extract(wrong_width, Blobs(n=10), tmp_path / "h")
    with pytest.raises(ValueError, match="dtype"):
        extract(model, Blobs(n=10), tmp_path / "f", dtype=torch.int32)
    with pytest.raises(ValueError, match="float16 overflow|non-finite"):
        big = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 4))
        with torch.no_grad():
            big[1].weight.fill_(1e5)
        extract(big, Blobs(n=10), tmp_path / "g")


class _ViewsItsInput(torch.nn.Module):
    """A model that flattens its 4-D input with ``.view`` (impossible on a channels-last batch)."""

    def __init__(self, in_features: int):
        super().__init__()
        self.lin = torch.nn.Linear(in_features, 4)

    def features(self, x):
        return self.lin(x.view(len(x), -1))


def test_channels_last_feed_and_its_opt_out(tmp_path):
    from pyrobust.models import model_input

    x = torch.rand(5, 3, 4, 6)
    fed = model_input(x, "cpu")
    assert fed.is_contiguous(memory_format=torch.channels_last) and torch.equal(fed, x)
    three_d = x[:, :, 0]
    assert model_input(three_d, "cpu") is three_d  # not 4-D: as given
    assert model_input(x, "cpu", channels_last=False).is_contiguous()
    # the default feed matches the definition (a plain forward) to round-off
    model, ds = TinyCNN(), Blobs(n=20)
    a = extract(model, ds, tmp_path / "a", dtype=torch.float32)
    b = extract(model, ds, tmp_path / "b", dtype=torch.float32, channels_last=False)
    np.testing.assert_allclose(a.features, b.features, rtol=1e-5, atol=1e-6)
    # a model that views its input needs the opt-out, which then works
    images = ds.images
    flat = _ViewsItsInput(images[0].numel())
    if images.shape[1] > 1:
        with pytest.raises(RuntimeError, match="view"):
            extract(flat, ds, tmp_path / "v1")
    c = extract(flat, ds, tmp_path / "v2", dtype=torch.float32, channels_last=False)
    np.testing.assert_allclose(c.features, reference_features(flat, ds).numpy(), rtol=1e-5, atol=1e-6)
