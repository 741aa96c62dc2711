"""pyrobust.data corruptions: definitions, severity ordering, determinism, CorruptedDataset, mCE."""

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from pyrobust.data import (
    CORRUPTIONS,
    SEVERITY_PARAMS,
    ArrayDataset,
    CorruptedDataset,
    corrupt,
    load_digits_splits,
    mean_corruption_error,
)

RANDOM = ("gaussian_noise", "shot_noise", "impulse_noise", "motion_blur", "fog")


@pytest.fixture(scope="module")
def digits32():
    x, _ = load_digits_splits(image_size=32, seed=0)["test"].tensors()
    return x[:40]


def test_names_and_table():
    assert set(CORRUPTIONS) >= {"gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "gaussian_blur",
                                "motion_blur", "contrast", "brightness", "fog", "pixelate", "jpeg"}
    assert all(len(SEVERITY_PARAMS[c]) == 5 for c in CORRUPTIONS)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_shape_range_and_severity_order(digits32, name):
    changes = []
    for s in range(1, 6):
        y = corrupt(digits32, name, s, seed=0)
        assert y.shape == digits32.shape and y.dtype == digits32.dtype
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
        changes.append(float((y - digits32).abs().mean()))
    assert changes[0] > 0
    assert all(b > a for a, b in zip(changes, changes[1:])), changes


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_deterministic_per_seed_and_index(digits32, name):
    x = digits32[:6]
    a = corrupt(x, name, 3, seed=5, indices=range(100, 106))
    b = corrupt(x, name, 3, seed=5, indices=range(100, 106))
    assert torch.equal(a, b)
    # an image's corruption depends on its own index only, not on the rest of the batch
    single = corrupt(x[4], name, 3, seed=5, indices=[104])
    torch.testing.assert_close(single, a[4], rtol=0, atol=1e-6)
    reordered = corrupt(x.flip(0), name, 3, seed=5, indices=list(range(105, 99, -1)))
    torch.testing.assert_close(reordered.flip(0), a, rtol=0, atol=1e-6)
    if name in RANDOM:
        assert not torch.equal(corrupt(x, name, 3, seed=6, indices=range(100, 106)), a)
        assert not torch.equal(corrupt(x, name, 3, seed=5, indices=range(6)), a)


def test_global_rng_untouched(digits32):
    torch.manual_seed(0)
    ref = torch.rand(3)
    torch.manual_seed(0)
    corrupt(digits32[:2], "gaussian_noise", 2)
    assert torch.equal(torch.rand(3), ref)


def _grey(n=8, h=48, w=48, value=0.5):
    return torch.full((n, 3, h, w), value)


def test_gaussian_noise_statistics():
    x = _grey()
    sigma = SEVERITY_PARAMS["gaussian_noise"][4]
    d = corrupt(x, "gaussian_noise", 5) - x
    assert abs(float(d.std()) - sigma) < 0.03 * sigma and abs(float(d.mean())) < 0.01 * sigma


def test_shot_noise_is_poisson():
    x = _grey(value=0.4)
    c = SEVERITY_PARAMS["shot_noise"][2]
    y = corrupt(x, "shot_noise", 3)
    counts = y * c
    np.testing.assert_allclose(counts, counts.round(), atol=1e-3)  # integer photon counts
    assert abs(float(counts.mean()) / (0.4 * c) - 1) < 0.02
    assert abs(float(counts.var()) / (0.4 * c) - 1) < 0.06  # Poisson: variance = mean


def test_impulse_noise_fraction():
    x = _grey(value=0.5)
    a = SEVERITY_PARAMS["impulse_noise"][4]
    y = corrupt(x, "impulse_noise", 5)
    zero, one = float((y == 0).float().mean()), float((y == 1).float().mean())
    assert abs(zero - a / 2) < 0.1 * a and abs(one - a / 2) < 0.1 * a
    assert torch.equal(y[(y != 0) & (y != 1)], x[(y != 0) & (y != 1)])


@pytest.mark.parametrize("name", ["defocus_blur", "gaussian_blur", "motion_blur", "pixelate", "fog", "contrast"])
def test_constant_image_stays_constant(name):
    x = _grey(n=3, value=0.3)
    y = corrupt(x, name, 5)
    expected = 0.3 if name != "fog" else None
    flat = y.flatten(1)
    assert float((flat.max(1).values - flat.min(1).values).max()) < 1e-5 or name == "fog"
    if expected is not None:
        torch.testing.assert_close(y, x, rtol=0, atol=1e-5)


def test_gaussian_blur_matches_direct_convolution():
    x = torch.zeros(1, 1, 41, 41)
    x[0, 0, 20, 20] = 1.0  # an impulse: the output is the kernel itself
    y = corrupt(x, "gaussian_blur", 4)[0, 0]
    sigma = SEVERITY_PARAMS["gaussian_blur"][3] * 41
    t = torch.arange(41.0) - 20
    g = torch.exp(-(t**2) / (2 * sigma**2)) * (t.abs() <= math.ceil(3 * sigma))  # documented 3σ support
    ref = torch.outer(g, g)
    ref = ref / ref.sum()
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-3 * float(ref.max()))
    assert abs(float(y.sum()) - 1) < 1e-5


def test_defocus_and_motion_blur_conserve_mass():
    x = torch.zeros(4, 1, 41, 41)
    x[:, 0, 20, 20] = 1.0
    for name in ("defocus_blur", "motion_blur"):
        y = corrupt(x, name, 5)
        torch.testing.assert_close(y.sum((1, 2, 3)), torch.ones(4), rtol=0, atol=1e-5)
    d = corrupt(x, "defocus_blur", 5)[0, 0]
    r = SEVERITY_PARAMS["defocus_blur"][4] * 41
    yy, xx = torch.meshgrid(torch.arange(41.0) - 20, torch.arange(41.0) - 20, indexing="ij")
    dist = (xx**2 + yy**2).sqrt()
    assert float(d[dist > r + 1].abs().max()) == 0.0  # disk support
    m = corrupt(x, "motion_blur", 5)[:, 0]
    # a centred line: point-symmetric about the impulse, length bounded by the parameter
    torch.testing.assert_close(m, m.flip(-1, -2), rtol=0, atol=1e-6)
    half = SEVERITY_PARAMS["motion_blur"][4] * 41 / 2
    assert float(m[:, dist > half + 1.5].abs().max()) == 0.0


def test_contrast_definition(digits32):
    x = digits32[:4] * 0.5 + 0.25  # room on both sides so nothing clamps
    c = SEVERITY_PARAMS["contrast"][2]
    y = corrupt(x, "contrast", 3)
    m = x.mean((1, 2, 3), keepdim=True)
    torch.testing.assert_close(y, (x - m) * c + m)


def test_brightness_grey_and_colour():
    x = torch.rand(2, 3, 8, 8) * 0.5
    b = SEVERITY_PARAMS["brightness"][1]
    grey = x[:, :1].expand(-1, 3, -1, -1)
    torch.testing.assert_close(corrupt(grey, "brightness", 2), (grey + b).clamp(max=1))
    y = corrupt(x, "brightness", 2)
    # HSV: value rises by b, hue and saturation are kept (channel ratios unchanged)
    torch.testing.assert_close(y.amax(1), (x.amax(1) + b).clamp(max=1))
    torch.testing.assert_close(y / y.amax(1, keepdim=True), x / x.amax(1, keepdim=True), rtol=1e-5, atol=1e-6)


def test_pixelate_blocks():
    x = torch.rand(2, 1, 40, 40)
    f = SEVERITY_PARAMS["pixelate"][4]
    y = corrupt(x, "pixelate", 5)
    small = round(40 * f)
    ref = F.interpolate(F.adaptive_avg_pool2d(x, small) if 40 % small == 0 else
                        F.interpolate(x, size=small, mode="area"), size=40, mode="nearest")
    torch.testing.assert_close(y, ref)
    assert len(torch.unique(y[0, 0, 0])) <= small


def test_jpeg_matches_pil_round_trip(digits32):
    from PIL import Image

    q = SEVERITY_PARAMS["jpeg"][2]
    y = corrupt(digits32[:2], "jpeg", 3)
    a = (digits32[1].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=q)
    ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.float32) / 255
    torch.testing.assert_close(y[1], torch.from_numpy(ref).permute(2, 0, 1))


def test_fog_lowers_contrast_smoothly(digits32):
    x = digits32[:8]
    y = corrupt(x, "fog", 5)
    assert float(y.std((1, 2, 3)).mean()) < float(x.std((1, 2, 3)).mean())
    # the fog field is smooth: neighbour differences relative to its spread are far below white noise's
    def roughness(z):
        return float((z[..., 1:] - z[..., :-1]).abs().mean() / z.std())

    fog_only = corrupt(torch.full((2, 1, 32, 32), 0.5), "fog", 5)
    assert roughness(fog_only) < 0.4 < 1.0 < roughness(torch.rand(2, 1, 32, 32))


@pytest.mark.parametrize(
    "args, err, match",
    [
        ((torch.rand(1, 3, 8, 8), "snow", 1), ValueError, "unknown corruption 'snow'"),
        ((torch.rand(1, 3, 8, 8), "fog", 0), ValueError, "severity"),
        ((torch.rand(1, 3, 8, 8), "fog", 6), ValueError, "severity"),
        ((torch.rand(1, 3, 8, 8), "fog", 2.0), ValueError, "severity"),
        ((torch.rand(3, 8, 8) * 2, "fog", 1), ValueError, r"\[0, 1\]"),
        ((torch.rand(8, 8), "fog", 1), ValueError, "shape"),
        ((torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "fog", 1), TypeError, "floating"),
    ],
)
def test_corrupt_errors(args, err, match):
    with pytest.raises(err, match=match):
        corrupt(*args)
    with pytest.raises(ValueError, match="one index per image"):
        corrupt(torch.rand(2, 3, 8, 8), "fog", 1, indices=[0])


def test_corrupted_dataset_matches_corrupt_and_batching():
    rng = np.random.default_rng(0)
    base = ArrayDataset(rng.random((10, 8, 8)).astype(np.float32), np.arange(10) % 2, image_size=12, channels=3)
    ds = CorruptedDataset(base, "gaussian_noise", 4, seed=3)
    xb, yb = next(iter(DataLoader(ds, batch_size=10, shuffle=False)))
    x, y = base.tensors()
    torch.testing.assert_close(xb, corrupt(x, "gaussian_noise", 4, seed=3))
    assert torch.equal(yb, y)
    torch.testing.assert_close(ds[7][0], xb[7], rtol=0, atol=1e-6)
    xs = torch.stack([it[0] for it in ds.__getitems__([7, 2])])
    torch.testing.assert_close(xs, xb[[7, 2]], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="unknown corruption"):
        CorruptedDataset(base, "rain", 1)
    with pytest.raises(ValueError, match="severity"):
        CorruptedDataset(base, "fog", 9)


def test_mean_corruption_error_definitions():
    e = {"fog": [0.1, 0.2, 0.3], "jpeg": [0.2, 0.2, 0.5]}
    b = {"fog": [0.2, 0.4, 0.6], "jpeg": [0.3, 0.3, 0.3]}
    assert math.isclose(mean_corruption_error(e), (0.6 + 0.9) / 6)
    # Hendrycks & Dietterich mCE: per corruption, summed errors over the baseline's, then averaged
    assert math.isclose(mean_corruption_error(e, b), (0.6 / 1.2 + 0.9 / 0.9) / 2)
    # relative mCE: degradation over clean error relative to the baseline's degradation
    rel = mean_corruption_error(e, b, clean_error=0.05, baseline_clean_error=0.1)
    assert math.isclose(rel, ((0.6 - 0.15) / (1.2 - 0.3) + (0.9 - 0.15) / (0.9 - 0.3)) / 2)
    assert math.isclose(mean_corruption_error(b, b), 1.0)


@pytest.mark.parametrize(
    "errors, baseline, kw, match",
    [
        ({}, None, {}, "non-empty"),
        ({"fog": [1.5]}, None, {}, r"outside \[0, 1\]"),
        ({"fog": [0.1]}, {"jpeg": [0.1]}, {}, "same corruptions"),
        ({"fog": [0.1, 0.2]}, {"fog": [0.1]}, {}, "severities"),
        ({"fog": [0.1]}, {"fog": [0.0]}, {}, "zero"),
        ({"fog": [0.1]}, {"fog": [0.2]}, {"clean_error": 0.1}, "both"),
        ({"fog": [0.1]}, None, {"clean_error": 0.1, "baseline_clean_error": 0.1}, "need a baseline"),
    ],
)
def test_mean_corruption_error_rejects(errors, baseline, kw, match):
    with pytest.raises(ValueError, match=match):
        mean_corruption_error(errors, baseline, **kw)
