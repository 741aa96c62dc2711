"""pyrobust.data: digits splits, array / folder datasets, IDX reading, Fashion-MNIST, the resolver."""

import gzip
import os
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from pyrobust.data import (
    ArrayDataset,
    DatasetNotFoundError,
    ImageFolderDataset,
    find_fashion_mnist,
    get_dataset,
    load_digits_splits,
    load_fashion_mnist,
    read_idx,
)


# --------------------------------------------------------------------------- digits
@pytest.fixture(scope="module")
def digits():
    return load_digits_splits(image_size=16, seed=0)


def test_digits_split_sizes_disjoint_and_complete(digits):
    from sklearn.datasets import load_digits

    assert {k: len(v) for k, v in digits.items()} == {"train": 1000, "val": 300, "test": 497}
    raw = load_digits()
    # identify every split image by its raw 8x8 pixels: together the splits are the 1,797 images, once each
    keys = [bytes(im.astype(np.uint8)) for im in raw.images]
    seen = []
    for ds in digits.values():
        seen += [bytes((ds.images[i, 0].numpy() * 16).round().astype(np.uint8)) for i in range(len(ds))]
    assert sorted(seen) == sorted(keys)


def test_digits_items_are_resized_raw_images(digits):
    from sklearn.datasets import load_digits

    raw = load_digits()
    ds = digits["test"]
    x, y = ds[3]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and isinstance(y, int)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])
    # find this image in sklearn's array and compare with an independent bilinear resize of value/16
    src = ds.images[3, 0].numpy()
    j = int(np.argmin(np.abs(raw.images / 16.0 - src).sum((1, 2))))
    assert np.allclose(raw.images[j] / 16.0, src)
    assert raw.target[j] == y
    ref = F.interpolate(torch.tensor(raw.images[j] / 16.0, dtype=torch.float32)[None, None], size=(16, 16),
                        mode="bilinear", align_corners=False)[0, 0]
    torch.testing.assert_close(x[0], ref)


def test_digits_split_is_seeded_and_stratified(digits):
    again = load_digits_splits(image_size=16, seed=0)
    other = load_digits_splits(image_size=16, seed=1)
    assert torch.equal(again["train"].images, digits["train"].images)
    assert not torch.equal(other["train"].images, digits["train"].images)
    counts = np.bincount(digits["test"].labels.numpy(), minlength=10)
    assert counts.min() >= 48 and counts.max() <= 51  # 497 images over 10 near-equal classes


# --------------------------------------------------------------------------- ArrayDataset
@pytest.mark.parametrize("layout", ["nhw", "nhwc1", "nhwc3", "nchw1", "nchw3"])
def test_array_dataset_layouts(layout):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(4, 6, 5), dtype=np.uint8)  # (N, H, W)
    arr = {
        "nhw": base,
        "nhwc1": base[..., None],
        "nhwc3": np.stack([base, base // 2, base // 3], -1),
        "nchw1": base[:, None],
        "nchw3": np.stack([base, base // 2, base // 3], 1),
    }[layout]
    ds = ArrayDataset(arr, [0, 1, 2, 1])
    x, y = ds[2]
    assert y == 2 and x.dtype == torch.float32
    torch.testing.assert_close(x[0], torch.tensor(base[2] / 255.0, dtype=torch.float32))
    if layout.endswith("3"):
        torch.testing.assert_close(x[1], torch.tensor((base[2] // 2) / 255.0, dtype=torch.float32))
    assert ds.classes == ["0", "1", "2"]


def test_array_dataset_channels_and_size():
    imgs = torch.rand(3, 1, 8, 8)
    ds = ArrayDataset(imgs, torch.tensor([0, 1, 0]), image_size=(12, 10), channels=3)
    x, _ = ds[0]
    assert x.shape == (3, 12, 10)
    ref = F.interpolate(imgs[:1], size=(12, 10), mode="bilinear", align_corners=False)[0, 0]
    torch.testing.assert_close(x[2], ref)
    grey = ArrayDataset(torch.rand(2, 3, 4, 4), [0, 1], channels=1)
    x3 = grey.images[1].float()
    torch.testing.assert_close(grey[1][0][0], 0.299 * x3[0] + 0.587 * x3[1] + 0.114 * x3[2])


def test_array_dataset_batched_fetch_equals_single_items():
    ds = ArrayDataset(np.random.default_rng(1).random((10, 5, 5)), np.arange(10) % 3, image_size=9, channels=3)
    xb, yb = next(iter(DataLoader(ds, batch_size=4, shuffle=False)))
    for i in range(4):
        torch.testing.assert_close(xb[i], ds[i][0])
        assert int(yb[i]) == ds[i][1]
    x_all, y_all = ds.tensors()
    torch.testing.assert_close(x_all[7], ds[7][0])
    torch.testing.assert_close(ds[-1][0], ds[9][0])
    sub = ds.subset([7, 2])
    torch.testing.assert_close(sub[0][0], ds[7][0])


@pytest.mark.parametrize(
    "images, labels, kwargs, err, match",
    [
        (np.zeros((2, 3, 3, 3)), [0, 1], {}, ValueError, "cannot tell the channel axis"),
        (np.zeros((2, 4, 5, 6)), [0, 1], {}, ValueError, "cannot tell the channel axis"),
        (np.zeros((2, 5)), [0, 1], {}, ValueError, "must have shape"),
        (np.full((2, 4, 4), 2.0), [0, 1], {}, ValueError, r"\[0, 1\]"),
        (np.zeros((2, 4, 4), dtype=np.int32), [0, 1], {}, TypeError, "uint8 or floating"),
        (np.zeros((2, 4, 4)), [0, 1, 2], {}, ValueError, "labels must have shape"),
        (np.zeros((2, 4, 4)), [0.5, 1.0], {}, TypeError, "labels must be integers"),
        (np.zeros((2, 4, 4)), [0, -1], {}, ValueError, ">= 0"),
        (np.zeros((2, 4, 4)), [0, 1], {"channels": 2}, ValueError, "channels"),
        (np.zeros((2, 4, 4)), [0, 1], {"image_size": 0}, ValueError, "positive"),
    ],
)
def test_array_dataset_errors(images, labels, kwargs, err, match):
    with pytest.raises(err, match=match):
        ArrayDataset(images, labels, **kwargs)


# --------------------------------------------------------------------------- image folders
def _write_folder(root, sizes=(("cat", 3), ("dog", 2))):
    from PIL import Image

    rng = np.random.default_rng(0)
    arrays = {}
    for cls, n in sizes:
        os.makedirs(root / cls, exist_ok=True)
        for i in range(n):
            a = rng.integers(0, 256, size=(6, 7, 3), dtype=np.uint8)
            Image.fromarray(a).save(root / cls / f"{i}.png")
            arrays[(cls, i)] = a
    (root / sizes[0][0] / "notes.txt").write_text("not an image")
    return arrays


def test_image_folder_reads_pngs_exactly(tmp_path):
    arrays = _write_folder(tmp_path)
    ds = ImageFolderDataset(tmp_path)
    assert ds.classes == ["cat", "dog"] and len(ds) == 5
    x, y = ds[3]  # sorted: cat/0, cat/1, cat/2, dog/0, dog/1
    assert y == 1 and x.shape == (3, 6, 7)
    torch.testing.assert_close(x, torch.tensor(arrays[("dog", 0)], dtype=torch.float32).permute(2, 0, 1) / 255)
    small = ImageFolderDataset(tmp_path, image_size=4, channels=1)
    assert small[0][0].shape == (1, 4, 4)


def test_image_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        ImageFolderDataset(tmp_path / "missing")
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        ImageFolderDataset(tmp_path)


# --------------------------------------------------------------------------- IDX
def _idx_bytes(code, fmt, dims, values):
    head = struct.pack(">BBBB", 0, 0, code, len(dims)) + struct.pack(f">{len(dims)}I", *dims)
    return head + struct.pack(f">{len(values)}{fmt}", *values)


IDX_CASES = [
    (0x08, "B", np.uint8, [0, 7, 255, 128, 1, 2]),
    (0x09, "b", np.int8, [-128, -1, 0, 1, 127, 5]),
    (0x0B, "h", np.int16, [-32768, -2, 0, 3, 32767, 300]),
    (0x0C, "i", np.int32, [-(2**31), -5, 0, 70000, 2**31 - 1, 9]),
    (0x0D, "f", np.float32, [-1.5, 0.0, 3.25, 1e-3, 2.5e10, -7.0]),
    (0x0E, "d", np.float64, [-1.5, 0.1, 3.25, 1e-300, 2.5e100, -7.0]),
]


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("code, fmt, dtype, values", IDX_CASES)
def test_read_idx_all_types(tmp_path, compress, code, fmt, dtype, values):
    raw = _idx_bytes(code, fmt, (2, 3), values)
    path = tmp_path / "a.idx"  # no .gz suffix on purpose: compression is detected from the bytes
    path.write_bytes(gzip.compress(raw) if compress else raw)
    a = read_idx(path)
    assert a.dtype == np.dtype(dtype) and a.shape == (2, 3)
    np.testing.assert_array_equal(a, np.array(values, dtype=dtype).reshape(2, 3))


def test_read_idx_three_dims(tmp_path):
    vals = list(range(24))
    (tmp_path / "x").write_bytes(_idx_bytes(0x08, "B", (2, 3, 4), vals))
    np.testing.assert_array_equal(read_idx(tmp_path / "x"), np.arange(24, dtype=np.uint8).reshape(2, 3, 4))


@pytest.mark.parametrize(
    "payload, match",
    [
        (b"\x00\x01\x08\x01" + struct.pack(">I", 1) + b"\x00", "not an IDX file"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "unknown IDX type code 0x07"),
        (b"\x00\x00\x08\x02" + struct.pack(">I", 2), "declares 2 dimensions"),
        (_idx_bytes(0x08, "B", (2, 3), [1, 2, 3, 4, 5, 6])[:-1], "need 6 data bytes, found 5"),
        (_idx_bytes(0x0B, "h", (1, 2), [1, 2]) + b"\x00", "need 4 data bytes, found 5"),
        (b"\x00\x00", "too short"),
    ],
)
def test_read_idx_rejects_malformed(tmp_path, payload, match):
    p = tmp_path / "bad"
    p.write_bytes(payload)
    with pytest.raises(ValueError, match=match):
        read_idx(p)
    p.write_bytes(gzip.compress(payload))
    with pytest.raises(ValueError, match=match):
        read_idx(p)


def test_read_idx_truncated_gzip(tmp_path):
    p = tmp_path / "t.gz"
    p.write_bytes(gzip.compress(_idx_bytes(0x08, "B", (100,), list(range(100))))[:-12])
    with pytest.raises(ValueError, match="decompress"):
        read_idx(p)


# --------------------------------------------------------------------------- Fashion-MNIST
def _fake_fashion(root, n_train=12, n_test=5, gz=True):
    rng = np.random.default_rng(0)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, size=n * 28 * 28).tolist()
        labs = (np.arange(n) % 10).tolist()
        for stem, data in ((f"{prefix}-images-idx3-ubyte", _idx_bytes(0x08, "B", (n, 28, 28), imgs)),
                           (f"{prefix}-labels-idx1-ubyte", _idx_bytes(0x08, "B", (n,), labs))):
            (root / (stem + (".gz" if gz else ""))).write_bytes(gzip.compress(data) if gz else data)
        out[prefix] = (np.array(imgs, dtype=np.uint8).reshape(n, 28, 28), labs)
    return out


@pytest.mark.parametrize("gz", [True, False])
def test_load_fashion_mnist_from_idx_files(tmp_path, gz):
    truth = _fake_fashion(tmp_path, gz=gz)
    test = load_fashion_mnist(tmp_path, "test", channels=1)
    assert len(test) == 5 and test.classes[9] == "Ankle boot"
    x, y = test[4]
    assert x.shape == (1, 28, 28) and y == truth["t10k"][1][4]
    torch.testing.assert_close(x[0], torch.tensor(truth["t10k"][0][4] / 255.0, dtype=torch.float32))
    assert load_fashion_mnist(tmp_path, "train", image_size=64)[0][0].shape == (3, 64, 64)


def test_fashion_mnist_env_var_and_errors(tmp_path, monkeypatch):
    (tmp_path / "fashion-mnist").mkdir()
    _fake_fashion(tmp_path / "fashion-mnist")
    monkeypatch.setenv("PYROBUST_DATA", str(tmp_path))
    assert find_fashion_mnist() == str(tmp_path / "fashion-mnist")
    with pytest.raises(ValueError, match="split must be"):
        load_fashion_mnist(split="validation")
    with pytest.raises(DatasetNotFoundError, match="dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nowhere")
    splits = get_dataset("fashion-mnist", image_size=28, val_size=2)
    assert [len(splits[k]) for k in ("train", "val", "test")] == [10, 2, 5]


_DEBIAN = "/usr/share/datasets/fashion-mnist"
needs_fashion = pytest.mark.skipif(
    not os.path.isfile(os.path.join(_DEBIAN, "t10k-labels-idx1-ubyte.gz")),
    reason="Debian package dataset-fashion-mnist not installed (apt-get install dataset-fashion-mnist)",
)


@needs_fashion
def test_real_fashion_mnist_debian_package():
    test = load_fashion_mnist(_DEBIAN, "test", channels=1)
    train = load_fashion_mnist(_DEBIAN, "train", channels=1)
    # the published dataset: 60,000 + 10,000 images, 6,000 / 1,000 per class
    assert train.images.shape == (60000, 1, 28, 28) and len(test) == 10000
    assert np.bincount(train.labels.numpy()).tolist() == [6000] * 10
    assert np.bincount(test.labels.numpy()).tolist() == [1000] * 10
    assert train.images.dtype == torch.uint8 and int(train.images.max()) == 255


# --------------------------------------------------------------------------- resolver
def test_get_dataset_folder_layouts(tmp_path):
    _write_folder(tmp_path / "flat", sizes=(("a", 8), ("b", 8)))
    flat = get_dataset(tmp_path / "flat", image_size=5)
    assert sum(len(v) for v in flat.values()) == 16 and len(flat["test"]) == 4
    assert flat["train"][0][0].shape == (3, 5, 5) and flat["train"].classes == ["a", "b"]
    all_files = sorted(p for ds in flat.values() for p, _ in ds.samples)
    assert len(set(all_files)) == 16  # the three splits are disjoint
    for split in ("train", "test"):
        _write_folder(tmp_path / "tt" / split)
    tt = get_dataset(str(tmp_path / "tt"), image_size=5, val_size=1)
    assert (len(tt["train"]), len(tt["val"]), len(tt["test"])) == (4, 1, 5)


@pytest.mark.parametrize(
    "name, match",
    [
        ("imagenet", "unknown dataset 'imagenet'"),
        ("/no/such/folder", "no such file or folder"),
    ],
)
def test_get_dataset_bad_names(name, match):
    with pytest.raises(ValueError, match=match):
        get_dataset(name)


def test_get_dataset_file_instead_of_folder(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        get_dataset(str(f))
    with pytest.raises(ValueError, match="val_size"):
        get_dataset("digits", val_size=-1)


def test_get_dataset_digits_matches_loader():
    a = get_dataset("digits", image_size=8, seed=3)
    b = load_digits_splits(image_size=8, seed=3)
    assert torch.equal(a["val"].images, b["val"].images)
