"""Datasets, corruptions and the corruption-error summary."""

import os

import numpy as np
import torch

from pyrobust.data import (ArrayDataset, CorruptedDataset, ImageFolderDataset, corrupt, get_dataset,
                           load_digits_splits, mean_corruption_error, read_idx)
from tests.bad_input.fixtures import fresh_dir, image_dataset
from tests.bad_input.harness import bad, good, table

V, T = ValueError, TypeError
IMG = torch.rand(2, 3, 8, 8)
U8 = np.zeros((4, 8, 8), np.uint8)


def nan_images():
    x = torch.rand(4, 3, 8, 8)
    x[2, 1, 3, 3] = float("nan")
    return x


def idx_file(data: bytes):
    path = os.path.join(fresh_dir(), "f.idx")
    open(path, "wb").write(data)
    return path


CASES = table(
    # get_dataset
    bad("dataset unknown", lambda: get_dataset("imagenet-21k"), V, r"'imagenet-21k'"),
    bad("dataset int", lambda: get_dataset(3), T, r"name_or_path"),
    bad("image_size zero", lambda: get_dataset("digits", image_size=0), V, r"image_size .*0"),
    bad("image_size string", lambda: get_dataset("digits", image_size="64"), T, r"image_size .*'64'"),
    bad("image_size float", lambda: get_dataset("digits", image_size=31.5), T, r"image_size .*31.5"),
    bad("image_size bool", lambda: get_dataset("digits", image_size=True), T, r"image_size"),
    bad("image_size NaN pair", lambda: get_dataset("digits", image_size=(float("nan"), 8)), (V, T), r"image_size"),
    bad("channels 2", lambda: get_dataset("digits", channels=2), V, r"channels .*2"),
    bad("seed negative", lambda: get_dataset("digits", seed=-1), V, r"seed .*-1"),
    bad("seed string", lambda: get_dataset("digits", seed="0"), T, r"seed"),
    bad("val_size NaN", lambda: get_dataset(fresh_dir(), val_size=float("nan")), V, r"val_size .*nan"),
    bad("val_size inf", lambda: get_dataset(fresh_dir(), val_size=float("inf")), V, r"val_size .*inf"),
    bad("val_size for digits", lambda: get_dataset("digits", val_size=10), V, r"val_size"),
    bad("empty folder", lambda: get_dataset(fresh_dir()), V, r"holds no images"),
    bad("digits sizes not a dict", lambda: load_digits_splits(sizes=[1, 2, 3]), (V, T), r"sizes"),
    bad("digits sizes too big", lambda: load_digits_splits(sizes={"train": 1700, "val": 90, "test": 90}), V,
        r"1797|more than"),
    bad("digits sizes float", lambda: load_digits_splits(sizes={"train": 10.5, "val": 5, "test": 5}), (V, T), r"sizes"),
    # ArrayDataset
    bad("array NaN images", lambda: ArrayDataset(nan_images(), torch.zeros(4, dtype=torch.long)), V,
        r"images .*NaN"),
    bad("array images above 1", lambda: ArrayDataset(torch.full((2, 3, 4, 4), 2.0), [0, 1]), V, r"\[0, 1\]"),
    bad("array labels length", lambda: ArrayDataset(U8, [0, 1]), V, r"labels .*\(4,\)"),
    bad("array labels float", lambda: ArrayDataset(U8, [0.0, 1, 0, 1]), T, r"labels must be integers"),
    bad("array labels negative", lambda: ArrayDataset(U8, [0, -1, 0, 1]), V, r"labels must be >= 0, got -1"),
    bad("array images object", lambda: ArrayDataset(np.array([None] * 4), [0, 0, 0, 0]), T, r"images"),
    bad("array images int32", lambda: ArrayDataset(U8.astype(np.int32), [0, 0, 0, 0]), T, r"images .*int32"),
    bad("array images 5-D", lambda: ArrayDataset(np.zeros((1, 1, 1, 1, 1), np.uint8), [0]), V, r"images must have shape"),
    bad("array classes too few", lambda: ArrayDataset(U8, [0, 1, 2, 3], classes=["a", "b"]), V, r"classes .*2.*label 3"),
    bad("array layout", lambda: ArrayDataset(U8, [0] * 4, layout="hwc"), V, r"layout .*'hwc'"),
    bad("array index", lambda: image_dataset(4)[7], IndexError, r"index 7"),
    # ImageFolderDataset
    bad("folder missing", lambda: ImageFolderDataset("/nonexistent/folder"), V, r"'/nonexistent/folder'"),
    bad("folder channels", lambda: ImageFolderDataset(fresh_dir(), channels=4), V, r"channels .*4"),
    # corrupt
    bad("corrupt name", lambda: corrupt(IMG, "rain", 1), V, r"'rain'"),
    bad("corrupt severity 0", lambda: corrupt(IMG, "fog", 0), V, r"severity .*0"),
    bad("corrupt severity float", lambda: corrupt(IMG, "fog", 2.5), V, r"severity .*2.5"),
    bad("corrupt severity bool", lambda: corrupt(IMG, "fog", True), V, r"severity"),
    bad("corrupt NaN images", lambda: corrupt(nan_images(), "contrast", 1), V, r"images .*NaN"),
    bad("corrupt uint8", lambda: corrupt((IMG * 255).to(torch.uint8), "fog", 1), T, r"floating-point"),
    bad("corrupt 2-D", lambda: corrupt(IMG[0, 0], "fog", 1), V, r"\(N, C, H, W\)"),
    bad("corrupt indices length", lambda: corrupt(IMG, "fog", 1, indices=[0]), V, r"indices .*2.*1"),
    bad("corrupt seed string", lambda: corrupt(IMG, "fog", 1, seed="x"), T, r"seed"),
    bad("corrupt jpeg 2 channels", lambda: corrupt(IMG[:, :2], "jpeg", 1), V, r"channels"),
    bad("corrupted dataset name", lambda: CorruptedDataset(image_dataset(4), "rain", 1), V, r"'rain'"),
    bad("corrupted dataset seed", lambda: CorruptedDataset(image_dataset(4), "fog", 1, seed="x"), T, r"seed"),
    # mean corruption error
    bad("mce NaN", lambda: mean_corruption_error({"fog": [0.1, float("nan")]}), V, r"'fog'.*nan"),
    bad("mce string", lambda: mean_corruption_error({"fog": ["a"]}), (V, T), r"'fog'"),
    bad("mce empty", lambda: mean_corruption_error({}), V, r"errors must be a non-empty"),
    bad("mce clean error NaN", lambda: mean_corruption_error({"fog": [0.2]}, {"fog": [0.3]}, clean_error=float("nan"),
                                                             baseline_clean_error=0.1), V, r"clean_error .*nan"),
    bad("mce clean error 2", lambda: mean_corruption_error({"fog": [0.2]}, {"fog": [0.3]}, clean_error=2.0,
                                                           baseline_clean_error=0.1), V, r"clean_error .*2"),
    # IDX files
    bad("idx missing", lambda: read_idx("/nonexistent/f.idx"), FileNotFoundError, r"/nonexistent/f.idx"),
    bad("idx short", lambda: read_idx(idx_file(b"\x00")), V, r"f.idx.*too short"),
    bad("idx magic", lambda: read_idx(idx_file(b"abcdefgh")), V, r"f.idx.*not an IDX"),
    bad("idx huge dims", lambda: read_idx(idx_file(b"\x00\x00\x08\x03" + b"\xff" * 12)), V, r"f.idx.*need"),
    bad("idx gzip", lambda: read_idx(idx_file(b"\x1f\x8b\x08\x00junk")), V, r"f.idx.*decompress"),
)
