"""The batch mixers (SmoothMix, CutMix, MixUp, Cutout) against their definitions."""

import numpy as np
import pytest
import torch

from pyrobust import reference
from pyrobust.augment import CutMix, Cutout, MixUp, SmoothMix
from pyrobust.ops import mix as mix_ops
from tests.conftest import devices, needs_cuda
from tests.mix_helpers import check_close, random_images


MIXERS = {
    "smoothmix-circle": lambda **kw: SmoothMix(10, "circle", **kw),
    "smoothmix-square": lambda **kw: SmoothMix(10, "square", **kw),
    "cutmix": lambda **kw: CutMix(10, **kw),
    "mixup": lambda **kw: MixUp(10, **kw),
}


@pytest.mark.parametrize("name", MIXERS)
@pytest.mark.parametrize("device", devices())
def test_lambda_orientation(name, device):
    """lam weights the label of the image the mask G is applied to: out[i] = G x[i] + ..."""
    n, h, w = 6, 16, 20
    # Indicator images: x[even] = 1, x[odd] = 0, flip pairing 0<->5, 1<->4, 2<->3, so that for
    # even i the output is the mask itself, out[i] = G_i.
    x = torch.zeros(n, 1, h, w, dtype=torch.float64, device=device)
    x[0::2] = 1.0
    labels = torch.arange(n, device=device)
    mixer = MIXERS[name](pairing="flip", generator=torch.Generator().manual_seed(0))
    res = mixer.mix(x, labels)
    for i in range(0, n, 2):
        j = n - 1 - i
        applied = res.images[i, 0]  # equals G_i, the weight of x[i]
        assert res.targets[i, i].item() == pytest.approx(applied.mean().item(), abs=1e-6)
        assert res.targets[i, j].item() == pytest.approx(1 - applied.mean().item(), abs=1e-6)
        assert res.lam[i].item() == pytest.approx(applied.mean().item(), abs=1e-6)
    assert res.targets.dtype == torch.float32
    torch.testing.assert_close(res.targets.sum(1), torch.ones(n, dtype=torch.float32, device=device))


def test_smoothmix_circle_mask_follows_definition():
    h, w = 40, 50
    mixer = SmoothMix(3, "circle", generator=torch.Generator().manual_seed(1))
    partner, params, _ = mixer.sample(200, h, w)
    cx, cy, sx, sy = params[:, 0], params[:, 1], params[:, 2], params[:, 3]
    assert ((cx >= 0) & (cx <= w) & (cy >= 0) & (cy <= h)).all()
    s = sx / w
    assert (s >= 0.25).all() and (s <= 0.5).all()
    torch.testing.assert_close(sy / h, s)  # a circle in relative units unless ellipse=True
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    i = 7
    g = torch.exp(-((xx - cx[i]) ** 2) / (2 * sx[i] ** 2) - (yy - cy[i]) ** 2 / (2 * sy[i] ** 2))
    torch.testing.assert_close(mix_ops.mix_mask(params, "gaussian", False, h, w)[i], g, atol=1e-6, rtol=0)
    ell = SmoothMix(3, "circle", ellipse=True, generator=torch.Generator().manual_seed(1))
    _, eparams, _ = ell.sample(200, h, w)
    assert not torch.allclose(eparams[:, 2] / w, eparams[:, 3] / h)


def test_smoothmix_square_is_product_of_trapezoids():
    h, w, k = 30, 40, 0.2
    mixer = SmoothMix(3, "square", smooth=k, generator=torch.Generator().manual_seed(2))
    _, params, _ = mixer.sample(50, h, w)
    masks = mix_ops.mix_mask(params, "trapezoid", False, h, w)
    u = torch.arange(w) + 0.5
    v = torch.arange(h) + 0.5
    for i in range(0, 50, 7):
        cx, cy, hx, hy = params[i, :4].tolist()
        assert hx / (w / 2) <= 1.0 and hy / (h / 2) <= 1.0
        tx = ((hx + k * w - (u - cx).abs()) / (k * w)).clamp(0, 1)
        ty = ((hy + k * h - (v - cy).abs()) / (k * h)).clamp(0, 1)
        torch.testing.assert_close(masks[i], ty[:, None] * tx[None, :], atol=1e-6, rtol=0)
        assert masks[i].max() <= 1.0


def test_cutmix_box_is_hard_and_lambda_is_corrected():
    h, w = 32, 24
    mixer = CutMix(5, alpha=1.0, generator=torch.Generator().manual_seed(3))
    x = random_images(64, 3, h, w, torch.float32)
    labels = torch.randint(0, 5, (64,))
    res = mixer.mix(x, labels)
    masks = mix_ops.mix_mask(res.params, "trapezoid", True, h, w)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    # lam is the clipped box's, not the drawn lam; a sample paired with itself is unmixed: 1.
    expected = torch.where(res.partner == torch.arange(64), 1.0, masks.mean((1, 2)))
    assert (res.partner == torch.arange(64)).any() and (res.lam < 1).any()
    torch.testing.assert_close(res.lam, expected)
    inside = masks == 0
    for i in range(8):
        j = res.partner[i]
        m = inside[i][None].expand(3, -1, -1)
        assert torch.equal(res.images[i][m], x[j][m])  # pasted pixels are copied exactly
        assert torch.equal(res.images[i][~m], x[i][~m])


def test_mixup_is_a_constant_blend():
    x = random_images(9, 3, 6, 7, torch.float64)
    labels = torch.randint(0, 4, (9,))
    res = MixUp(4, alpha=0.4, generator=torch.Generator().manual_seed(4)).mix(x, labels)
    lam = res.lam.double()[:, None, None, None]
    torch.testing.assert_close(res.images, lam * x + (1 - lam) * x[res.partner])


def test_cutout_fills_box_and_keeps_targets():
    x = random_images(8, 3, 20, 20, torch.uint8)
    labels = torch.randint(0, 6, (8,))
    res = Cutout(6, size=0.4, fill=128, label_smoothing=0.1, generator=torch.Generator().manual_seed(5)).mix(x, labels)
    masks = mix_ops.mix_mask(res.params, "trapezoid", True, 20, 20)
    box = (masks == 0)[:, None].expand(-1, 3, -1, -1)
    assert (res.images[box] == 128).all()
    assert torch.equal(res.images[~box], x[~box])
    assert (box[:, 0].sum((1, 2)) == 8 * 8).sum() >= 1  # unclipped boxes are 0.4 * 20 = 8 wide
    expected = torch.full((8, 6), 0.1 / 6)
    expected[torch.arange(8), labels] += 0.9
    torch.testing.assert_close(res.targets, expected)


def test_mode_is_the_users_choice_and_profile_the_mask():
    circle, square = SmoothMix(3, "circle"), SmoothMix(3, mode="square")
    assert (circle.mode, circle.profile, circle.family) == ("circle", "gaussian", "circle")
    assert (square.mode, square.profile, square.family) == ("square", "trapezoid", "square")
    assert "mode='square'" in repr(square)
    # the fixed-shape mixers: profile, and mode kept as its former name
    for mixer, profile in ((CutMix(3), "trapezoid"), (MixUp(3), "constant"), (Cutout(3), "trapezoid")):
        assert mixer.profile == mixer.mode == profile
    # what the op is given is the profile: a circle's mask is the reference's Gaussian
    x = random_images(5, 2, 9, 11, torch.float32)
    res = SmoothMix(3, generator=torch.Generator().manual_seed(1)).mix(x, torch.arange(5) % 3)
    torch.testing.assert_close(res.images, reference.mix(x, res.partner, res.params, "gaussian"))


def cutout_side(mixer, h, w):
    """The (height, width) of the drawn boxes: the largest of 256 draws, as boxes are clipped to the
    image (params hold a centre and half sides)."""
    _, params, _ = mixer.sample(256, h, w)
    return round(2 * float(params[:, 3].max())), round(2 * float(params[:, 2].max()))


def test_cutout_size_is_a_fraction_and_size_px_pixels():
    h, w = 20, 30
    gen = lambda: torch.Generator().manual_seed(4)
    # a fraction of each side: 0.4 of 20 x 30 is 8 x 12; the default is 0.5, 10 x 15, whose odd
    # side loses a pixel (the box reaches side // 2 either side of a pixel, as timm's rand_bbox)
    assert cutout_side(Cutout(4, size=0.4, generator=gen()), h, w) == (8, 12)
    assert cutout_side(Cutout(4, generator=gen()), h, w) == (10, 14)
    assert Cutout(4).size == 0.5 and Cutout(4).size_px is None
    # pixels: size_px, or (as before) an int size, the same draws
    by_px, by_int = Cutout(4, size_px=8, generator=gen()), Cutout(4, size=8, generator=gen())
    assert by_px.size == by_int.size == by_px.size_px == by_int.size_px == 8
    assert all(torch.equal(a, b) for a, b in zip(by_px.sample(16, h, w), by_int.sample(16, h, w)))
    assert cutout_side(by_px, h, w) == (8, 8)
    assert repr(by_px) == repr(by_int) and "size_px=8" in repr(by_px)
    assert cutout_side(Cutout(4, size_px=7, generator=gen()), h, w) == (6, 6)
    # the trap an int size keeps: 1 is at most a pixel (here nothing), 1.0 the whole image
    assert cutout_side(Cutout(4, size=1, generator=gen()), h, w) == (0, 0)
    assert cutout_side(Cutout(4, size=1.0, generator=gen()), h, w) == (h, w)
    # numpy scalars follow their kind
    assert Cutout(4, size=np.float32(0.25)).size == 0.25 and Cutout(4, size=np.int64(6)).size_px == 6
    with pytest.raises(TypeError, match="size_px"):
        Cutout(4, size=0.5, size_px=8)
    for bad in (0, -3, 2.5, True, "8"):
        with pytest.raises(ValueError, match="size_px should be"):
            Cutout(4, size_px=bad)
    for bad in (0.0, -0.5, float("nan"), True, "0.5"):
        with pytest.raises(ValueError, match="size should be"):
            Cutout(4, size=bad)
    with pytest.raises(ValueError, match=r"size as a fraction should be in \(0, 1\], got 16.0"):
        Cutout(4, size=16.0)


def test_label_smoothing_is_explicit():
    x = random_images(4, 1, 4, 4, torch.float32)
    labels = torch.tensor([0, 1, 2, 3])
    plain = SmoothMix(4, generator=torch.Generator().manual_seed(0)).mix(x, labels)
    assert plain.targets.min() >= 0 and torch.allclose(plain.targets.sum(1), torch.ones(4))
    smooth = SmoothMix(4, label_smoothing=0.2, generator=torch.Generator().manual_seed(0)).mix(x, labels)
    expected = reference.mixed_targets(labels, smooth.partner, smooth.lam, 4, 0.2)
    torch.testing.assert_close(smooth.targets.double(), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", MIXERS)
def test_targets_match_reference(name):
    x = random_images(11, 3, 9, 9, torch.float32)
    labels = torch.randint(0, 10, (11,), generator=torch.Generator().manual_seed(6))
    res = MIXERS[name](generator=torch.Generator().manual_seed(7)).mix(x, labels)
    torch.testing.assert_close(res.targets.double(), reference.mixed_targets(labels, res.partner, res.lam, 10), atol=1e-6, rtol=0)
    torch.testing.assert_close(res.images, reference.mix(x, res.partner, res.params, MIXERS[name]().profile, MIXERS[name]().invert))


def test_probability_and_per_batch():
    x = random_images(10, 3, 8, 8, torch.float32)
    labels = torch.arange(10)
    untouched = SmoothMix(10, p=0.0).mix(x, labels)
    assert torch.equal(untouched.images, x)
    assert torch.equal(untouched.targets, torch.eye(10))
    some = CutMix(10, p=0.5, generator=torch.Generator().manual_seed(8)).mix(x, labels)
    unmixed = (some.lam == 1) & (some.partner == torch.arange(10))
    assert 0 < int(unmixed.sum()) < 10
    assert torch.equal(some.images[unmixed], x[unmixed])
    batch = SmoothMix(10, per_sample=False, generator=torch.Generator().manual_seed(9)).mix(x, labels)
    assert (batch.params == batch.params[0]).all()


@pytest.mark.parametrize("pairing,expected", [("flip", [4, 3, 2, 1, 0]), ("roll", [4, 0, 1, 2, 3])])
def test_pairings(pairing, expected):
    x = random_images(5, 1, 4, 4, torch.float32)
    res = MixUp(5, pairing=pairing).mix(x, torch.arange(5))
    assert res.partner.tolist() == expected
    # roll(1) matches torch.roll: the partner of sample i is the sample that roll moves into i.
    if pairing == "roll":
        assert torch.equal(x[res.partner], x.roll(1, 0))
    perm = MixUp(5, generator=torch.Generator().manual_seed(0)).mix(x, torch.arange(5)).partner
    assert sorted(perm.tolist()) == list(range(5))


@pytest.mark.parametrize("n", [0, 1, 3, 7])
def test_any_batch_size(n):
    x = random_images(n, 3, 8, 8, torch.float32)
    images, targets = CutMix(4)(x, torch.zeros(n, dtype=torch.long))
    assert images.shape == x.shape and targets.shape == (n, 4)
    if n == 1:
        assert torch.equal(images, x)  # a single image can only pair with itself


def test_determinism_and_seeds():
    x = random_images(16, 3, 12, 12, torch.float32)
    labels = torch.randint(0, 10, (16,))
    for make in MIXERS.values():
        a = make(generator=torch.Generator().manual_seed(42))(x, labels)
        b = make(generator=torch.Generator().manual_seed(42))(x, labels)
        c = make(generator=torch.Generator().manual_seed(43))(x, labels)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("per_sample", [True, False])
def test_one_op_call_equals_three_ops(device, per_sample):
    """A mixer's call is one op (mix_batch, or mix_batch.out into a buffer): the decisions and
    results of mix_draw, mix_targets and mix called in turn, bit for bit."""
    x = random_images(7, 3, 10, 13, torch.float32, device=device)
    labels = torch.tensor([3, 1, 4, 1, 5, 9, 2])
    for name, make in {**MIXERS, "cutout": lambda **kw: Cutout(10, fill=0.25, **kw)}.items():
        kw = dict(p=0.7, per_sample=per_sample, label_smoothing=0.1)
        mixer = make(generator=torch.Generator().manual_seed(8), **kw)
        partner, params, _ = mixer.sample(7, 10, 13)
        targets, lam = mix_ops.mix_targets(x, labels, partner, params, mixer.profile, mixer.invert,
                                           10, 0.1, mixer.mixes_labels)
        three = (mix_ops.mix(x, partner, params, mixer.profile, mixer.invert, mixer._fill()),
                 targets, lam, partner, params)
        one = make(generator=torch.Generator().manual_seed(8), **kw).mix(x, labels)
        buffer = torch.empty_like(x)
        into = make(generator=torch.Generator().manual_seed(8), **kw).mix(x, labels, out=buffer)
        assert into.images.data_ptr() == buffer.data_ptr()
        for field, a, b, c in zip(one._fields, one, three, into):
            assert a.device == b.device == c.device, (name, field)
            assert torch.equal(a, b) and torch.equal(a, c), (name, field)


def test_a_mixer_drawing_its_own_way_is_honoured():
    class Fixed(SmoothMix):
        def sample(self, n, height, width):
            partner, params, active = super().sample(n, height, width)
            return partner.flip(0), params, active
    x = random_images(4, 1, 6, 6, torch.float32)
    res = Fixed(3, generator=torch.Generator().manual_seed(0)).mix(x, torch.tensor([0, 1, 2, 0]))
    plain = SmoothMix(3, generator=torch.Generator().manual_seed(0)).mix(x, torch.tensor([0, 1, 2, 0]))
    assert torch.equal(res.partner, plain.partner.flip(0))
    torch.testing.assert_close(res.images, mix_ops.mix(x, res.partner, res.params, "gaussian"), rtol=0, atol=0)


def test_low_precision_keeps_dtype_and_labels():
    x = random_images(4, 3, 8, 8, torch.bfloat16)
    labels = torch.tensor([0, 300, 511, 257])  # bf16 cannot hold 257 or 511 exactly
    images, targets = SmoothMix(512, generator=torch.Generator().manual_seed(0))(x, labels)
    assert images.dtype == torch.bfloat16 and targets.dtype == torch.float32
    assert set(targets.nonzero()[:, 1].tolist()) <= {0, 300, 511, 257}
    half = random_images(4, 3, 8, 8, torch.float16).contiguous(memory_format=torch.channels_last)
    out, _ = SmoothMix(4)(half, torch.zeros(4, dtype=torch.long))
    assert out.dtype == torch.float16 and out.is_contiguous(memory_format=torch.channels_last)


def test_gradients_flow_to_both_images():
    x = random_images(4, 2, 6, 6, torch.float32).requires_grad_(True)
    images, _ = SmoothMix(3, pairing="flip", generator=torch.Generator().manual_seed(0))(x, torch.zeros(4, dtype=torch.long))
    images.sum().backward()
    # Each image contributes G to its own output and 1 - G to its partner's: every pixel's total
    # gradient is G_i + (1 - G_partner^-1(i)), strictly positive, and sums to 1 per pixel overall.
    assert (x.grad > 0).all()
    torch.testing.assert_close(x.grad.sum(0), torch.full((2, 6, 6), 4.0))


def test_bad_inputs_name_the_value():
    x = random_images(4, 3, 8, 8, torch.float32)
    y = torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match="4-D"):
        SmoothMix(4)(x[0], y)
    with pytest.raises(ValueError, match="length N=4"):
        SmoothMix(4)(x, y[:3])
    with pytest.raises(TypeError, match="integer"):
        SmoothMix(4)(x, y.float())
    with pytest.raises(ValueError, match="got 7"):
        SmoothMix(4)(x, torch.tensor([0, 1, 2, 7]))
    with pytest.raises(ValueError, match="got -1"):
        SmoothMix(4)(x, torch.tensor([0, 1, 2, -1]))
    with pytest.raises(ValueError, match="'hexagon'"):
        SmoothMix(4, mode="hexagon")
    with pytest.raises(ValueError, match="1.5"):
        CutMix(4, p=1.5)
    with pytest.raises(ValueError, match="pairing"):
        MixUp(4, pairing="zip")
    with pytest.raises(ValueError, match="num_classes"):
        MixUp(0)
    with pytest.raises(TypeError, match="int32|uint8|float16"):
        SmoothMix(4)(x.to(torch.int32), y)
    with pytest.raises(ValueError, match="alpha"):
        CutMix(4, alpha=0)


# --- CUDA against CPU ------------------------------------------------------------------------


@needs_cuda
@pytest.mark.parametrize("name", [*MIXERS, "cutout"])
def test_cuda_mixers_match_cpu_with_host_or_device_labels(name):
    make = MIXERS.get(name, lambda **kw: Cutout(10, **kw))
    x = random_images(6, 3, 12, 14, torch.float32)
    labels = torch.tensor([3, 1, 4, 1, 5, 9])
    runs = {}
    for where, (xx, yy) in {"cpu": (x, labels), "cuda-host-labels": (x.cuda(), labels),
                            "cuda": (x.cuda(), labels.cuda())}.items():
        mixer = make(label_smoothing=0.1, p=0.7, generator=torch.Generator().manual_seed(5))
        runs[where] = mixer.mix(xx, yy)
    ref = runs["cpu"]
    expected = reference.mixed_targets(labels, ref.partner, ref.lam, 10, 0.1)
    for where, res in runs.items():
        device = "cpu" if where == "cpu" else "cuda"
        assert res.images.device.type == res.targets.device.type == device
        torch.testing.assert_close(res.targets.cpu().double(), expected, atol=1e-6, rtol=0)
        check_close(res.images.cpu(), ref.images.double(), torch.float32)
