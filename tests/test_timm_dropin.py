"""pyrobust.augment.timm: Mixup and FastCollateMixup against timm's definitions (black-box: lam is
recovered from the targets and the images are checked against it) and, with numpy seeded alike,
against timm itself."""

import itertools

import numpy as np
import pytest
import torch

from pyrobust.augment import timm as dropin
from pyrobust.augment.timm import FastCollateMixup, Mixup
from pyrobust.ops import mix as mix_ops
from tests.mix_helpers import random_images

K = 10
CONFIGS = {
    "mixup": dict(mixup_alpha=1.0),
    "cutmix": dict(mixup_alpha=0.0, cutmix_alpha=1.0),
    "switch": dict(mixup_alpha=0.8, cutmix_alpha=1.0),
    "minmax": dict(mixup_alpha=0.0, cutmix_minmax=(0.2, 0.8)),
    "uncorrected": dict(mixup_alpha=0.0, cutmix_alpha=1.0, correct_lam=False),
    "prob": dict(mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.5),
}


def recover_lam(targets, labels, smoothing):
    """lam from timm's targets: with distinct labels at i and N - 1 - i, the own label's entry is
    lam * on + (1 - lam) * off."""
    off = smoothing / K
    on = 1 - smoothing + off
    own = targets[torch.arange(len(labels)), labels].double()
    return (own - off) / (on - off)


def check_mixed(out, x, lam, cfg, n):
    """Each sample is x[i] blended with x[N-1-i] at lam (MixUp), or x[i] with a box of x[N-1-i]
    pasted whose area is (1 - lam) H W (CutMix, correct_lam) or at most that (uncorrected), or
    x[i] when lam = 1. Random images: no pixel of a blend equals either input."""
    h, w = x.shape[-2:]
    kinds = set()
    for i in range(n):
        j = n - 1 - i
        if i == j or lam[i] == pytest.approx(1.0, abs=1e-6):
            assert torch.equal(out[i], x[i])
            continue
        pasted, kept = (out[i] == x[j]).all(0), (out[i] == x[i]).all(0)
        if not (pasted | kept).all():
            kinds.add("blend")
            torch.testing.assert_close(out[i].double(), lam[i] * x[i].double() + (1 - lam[i]) * x[j].double(),
                                       atol=1e-5, rtol=0)
            continue
        kinds.add("box")
        area = int(pasted.sum())
        if area:
            rows, cols = pasted.any(1).nonzero()[:, 0], pasted.any(0).nonzero()[:, 0]
            box = torch.zeros(h, w, dtype=torch.bool)
            box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
            assert torch.equal(pasted, box)
        if cfg.get("correct_lam", True):
            assert lam[i] == pytest.approx(1 - area / (h * w), abs=1e-6)
        else:
            assert area <= (1 - lam[i]) * h * w + 1e-6
    if cfg.get("mixup_alpha", 1.0) == 0:
        assert "blend" not in kinds
    if cfg.get("cutmix_alpha", 0) == 0 and "cutmix_minmax" not in cfg:
        assert "box" not in kinds


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_mixup_follows_timms_definitions(mode, name, smoothing):
    cfg = CONFIGS[name]
    n = 8
    x = random_images(n, 3, 12, 16, torch.float32, seed=1)
    labels = torch.arange(n)  # distinct: lam is readable from the targets
    mixer = Mixup(mode=mode, label_smoothing=smoothing, num_classes=K, **cfg)
    for seed in range(4):
        np.random.seed(seed)
        xin = x.clone()
        out, targets = mixer(xin, labels)
        assert out is xin  # in place, as timm
        assert targets.dtype == torch.float32 and targets.shape == (n, K)
        lam = recover_lam(targets, labels, smoothing)
        torch.testing.assert_close(targets.sum(1), torch.ones(n), rtol=0, atol=1e-6)
        partner = recover_lam(targets, labels.flip(0), smoothing)
        torch.testing.assert_close(lam + partner, torch.ones(n, dtype=torch.float64), rtol=0, atol=1e-6)
        if mode == "batch":
            assert (lam == lam[0]).all()
        if mode == "pair":
            torch.testing.assert_close(lam, lam.flip(0), rtol=0, atol=1e-7)
        check_mixed(out, x, lam.tolist(), cfg, n)


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
@pytest.mark.parametrize("pairs_at_a_time", [1, 3, None])
@pytest.mark.parametrize("size", [(12, 16), (16, 16)])  # square images draw their boxes at once
def test_mixup_equals_timm_with_the_same_numpy_seed(mode, pairs_at_a_time, size, monkeypatch):
    timm_mixup = pytest.importorskip("timm.data.mixup")
    x = random_images(8, 3, *size, torch.float32, seed=2)
    labels = torch.tensor([1, 4, 1, 5, 9, 2, 6, 5])
    if pairs_at_a_time:  # in place a few pairs at a time, as on large images
        monkeypatch.setattr(dropin, "CHUNK_BYTES", 2 * pairs_at_a_time * x[0].nbytes)
    for (name, cfg), seed in itertools.product(CONFIGS.items(), range(3)):
        kw = dict(cfg, mode=mode, num_classes=K, label_smoothing=0.1)
        np.random.seed(seed)
        expected = timm_mixup.Mixup(**kw)(x.clone(), labels)
        after_timm = np.random.rand()
        np.random.seed(seed)
        got = Mixup(**kw)(x.clone(), labels)
        assert np.random.rand() == after_timm  # the same number of draws
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=0, atol=2e-7, msg=f"{name} seed {seed}")


def test_square_boxes_drawn_at_once_equal_one_by_one():
    # rand_bboxes_square against rand_bbox called in turn, over lam down to 0 (a whole-image box)
    # and up to 1 - 1e-7 (an empty one), on the same numpy stream.
    lam = np.concatenate([np.random.default_rng(0).random(500), [0.0, 1 - 1e-7, 0.5]]).astype(np.float32)
    for side in (1, 7, 224):
        np.random.seed(side)
        expected = [dropin.rand_bbox((side, side), value) for value in lam]
        np.random.seed(side)
        assert dropin.rand_bboxes_square(side, lam).tolist() == [list(box) for box in expected]


def _laid_out(x, layout):
    """A fresh copy of ``x``: contiguous, channels_last, or a non-dense view of a wider batch."""
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "strided":
        wide = torch.zeros(*x.shape[:-1], x.shape[-1] + 3, dtype=x.dtype)
        wide[..., : x.shape[-1]] = x
        return wide[..., : x.shape[-1]]
    return x.clone()


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
@pytest.mark.parametrize("layout", ["channels_last", "strided"])
@pytest.mark.parametrize("n", [8, 7])
def test_mixup_in_place_on_any_layout_equals_timm(mode, layout, n):
    # Every kind in one call (MixUp, boxes and unmixed samples per element, an odd batch's
    # middle), mixed in place whatever the batch's strides.
    timm_mixup = pytest.importorskip("timm.data.mixup")
    x = random_images(n, 3, 12, 16, torch.float32, seed=7)
    labels = torch.arange(n) % K
    for (name, cfg), seed in itertools.product(CONFIGS.items(), range(3)):
        kw = dict(cfg, mode=mode, num_classes=K, label_smoothing=0.1)
        np.random.seed(seed)
        if n % 2 == 0:
            expected = timm_mixup.Mixup(**kw)(x.clone(), labels)
        else:  # timm needs an even batch: the drop-in's own contiguous result
            expected = Mixup(**kw)(x.clone(), labels)
        np.random.seed(seed)
        xin = _laid_out(x, layout)
        got = Mixup(**kw)(xin, labels)
        assert got[0] is xin
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=0, atol=2e-7, msg=f"{name} seed {seed}")


@pytest.mark.parametrize("mode", ["batch", "pair", "elem", "half"])
@pytest.mark.parametrize("size", [(12, 16), (16, 16)])
def test_fast_collate_mixup_equals_timm_on_uint8(mode, size):
    timm_mixup = pytest.importorskip("timm.data.mixup")
    x = random_images(8, 3, *size, torch.uint8, seed=3)
    batch = [(x[i], i % K) for i in range(8)]
    for (name, cfg), seed in itertools.product(CONFIGS.items(), range(3)):
        kw = dict(cfg, mode=mode, num_classes=K, label_smoothing=0.1)
        np.random.seed(seed)
        expected = timm_mixup.FastCollateMixup(**kw)([(s.clone(), t) for s, t in batch])
        np.random.seed(seed)
        images, targets = FastCollateMixup(**kw)(batch)
        assert images.dtype == torch.uint8 and images.shape == expected[0].shape
        # blends are rounded to nearest in both (timm's float32 round-half-even may differ at a tie)
        assert (images.int() - expected[0].int()).abs().max() <= 1, (name, seed)
        torch.testing.assert_close(targets, expected[1], rtol=0, atol=1e-6)
    assert all(torch.equal(s, x[i]) for i, (s, _) in enumerate(batch))  # samples left as they were


def test_fast_collate_rounds_blends_to_nearest_and_takes_numpy():
    x = random_images(6, 3, 9, 11, torch.uint8, seed=4)
    labels = list(range(6))
    np.random.seed(0)
    images, targets = FastCollateMixup(mixup_alpha=0.7, mode="elem", num_classes=K,
                                       label_smoothing=0.0)([(x[i].numpy(), labels[i]) for i in range(6)])
    lam = recover_lam(targets, torch.tensor(labels), 0.0)
    exact = lam[:, None, None, None] * x.double() + (1 - lam[:, None, None, None]) * x.flip(0).double()
    assert (images.double() - exact).abs().max() <= 0.5 + 1e-4


@pytest.mark.parametrize("cfg", [dict(mixup_alpha=0.7), dict(mixup_alpha=0.0, cutmix_alpha=1.0)])
def test_fast_collate_mixup_in_workers(cfg):
    # In a DataLoader worker the batch is stacked into shared memory and mixed there in place:
    # the main process gets each sample blended with its flipped partner at the targets' lam
    # (MixUp), or with a box of it pasted (CutMix), and the samples are left as they were.
    from torch.utils.data import DataLoader

    x = random_images(8, 3, 9, 11, torch.uint8, seed=6)
    data = [(x[i], i) for i in range(8)]
    collate = FastCollateMixup(mode="elem", num_classes=K, label_smoothing=0.0, **cfg)
    loader = DataLoader(data, batch_size=8, num_workers=2, collate_fn=collate, multiprocessing_context="fork")
    images, targets = next(iter(loader))
    assert images.dtype == torch.uint8 and images.is_shared()
    lam = recover_lam(targets, torch.arange(8), 0.0)
    if cfg["mixup_alpha"] > 0:
        exact = lam[:, None, None, None] * x.double() + (1 - lam[:, None, None, None]) * x.flip(0).double()
        assert (images.double() - exact).abs().max() <= 0.5 + 1e-4
    else:
        check_mixed(images, x, lam.tolist(), cfg, 8)
    assert all(torch.equal(s, x[i]) for i, (s, _) in enumerate(data))


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
def test_odd_batches_leave_the_middle_sample_unmixed(mode):
    n = 7
    x = random_images(n, 3, 8, 8, torch.float32, seed=5)
    labels = torch.arange(n)
    np.random.seed(1)
    out, targets = Mixup(mixup_alpha=1.0, cutmix_alpha=1.0, mode=mode, num_classes=K,
                         label_smoothing=0.1)(x.clone(), labels)
    assert torch.equal(out[3], x[3])
    expected = torch.full((K,), 0.01)
    expected[3] = 0.91
    torch.testing.assert_close(targets[3], expected)
    assert not torch.equal(out, x)
    np.random.seed(1)
    images, _ = FastCollateMixup(mixup_alpha=1.0, mode=mode, num_classes=K)(
        [(s, int(t)) for s, t in zip((x * 255).to(torch.uint8), labels)])
    assert torch.equal(images[3], (x[3] * 255).to(torch.uint8))


@pytest.mark.parametrize("mask", ["circle", "square"])
@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
def test_soft_masks_paste_the_partner_through_smoothmix_masks(mask, mode):
    n, h, w = 8, 16, 20
    # Indicator images: the first half 1, the second 0; the partner of i < n/2 is a zero image,
    # so out[i] is the mask G_i that keeps x[i] and its mean is lam_i.
    x = torch.zeros(n, 1, h, w)
    x[: n // 2] = 1.0
    labels = torch.arange(n)
    mixer = Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, cutmix_mask=mask, mode=mode, num_classes=K,
                  label_smoothing=0.0)
    torch.manual_seed(0)
    out, targets = mixer(x.clone(), labels)
    lam = recover_lam(targets, labels, 0.0)
    for i in range(n // 2):
        g = out[i, 0]
        assert lam[i].item() == pytest.approx(g.double().mean().item(), abs=1e-6)
        assert ((g > 0) & (g < 1)).any()  # soft edges
        if mode != "elem":  # a pair shares its mask: the partner keeps what i gives away
            torch.testing.assert_close(out[n - 1 - i, 0], 1 - g, rtol=0, atol=1e-6)
    if mode == "pair":
        torch.testing.assert_close(lam, lam.flip(0), rtol=0, atol=1e-6)
    if mode == "batch":
        assert (out[: n // 2] == out[0]).all()
    # MixUp and a soft mask in one per-sample batch (two passes of the op)
    both = Mixup(mixup_alpha=1.0, cutmix_alpha=1.0, cutmix_mask=mask, mode="elem", num_classes=K,
                 label_smoothing=0.0)
    np.random.seed(3)
    xr = random_images(n, 3, h, w, torch.float32, seed=6)
    torch.manual_seed(3)
    out, targets = both(xr.clone(), labels)
    np.random.seed(3)
    torch.manual_seed(3)
    with pytest.MonkeyPatch.context() as patch:  # a pair at a time: the same
        patch.setattr(dropin, "CHUNK_BYTES", 2 * xr[0].nbytes)
        torch.testing.assert_close(both(xr.clone(), labels)[0], out, rtol=0, atol=0)
    lam = recover_lam(targets, labels, 0.0)
    kinds = set()
    for i in range(n):
        blend = lam[i] * xr[i].double() + (1 - lam[i]) * xr[n - 1 - i].double()
        if torch.allclose(out[i].double(), blend, atol=1e-5):
            kinds.add("blend")
        else:
            kinds.add("mask")
            lo = torch.minimum(xr[i], xr[n - 1 - i]) - 1e-6
            hi = torch.maximum(xr[i], xr[n - 1 - i]) + 1e-6
            assert ((out[i] >= lo) & (out[i] <= hi)).all()
    assert kinds == {"blend", "mask"}


def test_soft_mask_lam_is_the_mask_mean():
    torch.manual_seed(2)
    np.random.seed(2)
    mixer = Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, cutmix_mask="circle", mode="elem", num_classes=K)
    plan = mixer.plan(6, 10, 14)
    lam = mix_ops.mix_lambda(plan.soft, "gaussian", True, 10, 14).double().numpy()
    np.testing.assert_allclose(plan.lam, lam)


def test_disabled_and_bad_arguments():
    x = random_images(4, 3, 8, 8, torch.float32)
    mixer = Mixup(num_classes=K)
    mixer.mixup_enabled = False
    out, targets = mixer(x.clone(), torch.arange(4))
    assert torch.equal(out, x)
    assert torch.equal(targets.argmax(1), torch.arange(4))
    with pytest.raises(ValueError, match="mode"):
        Mixup(mode="half")
    with pytest.raises(ValueError, match="cutmix_mask"):
        Mixup(cutmix_mask="hexagon")
    with pytest.raises(ValueError, match="mixup_alpha"):
        Mixup(mixup_alpha=0.0, cutmix_alpha=0.0)(x.clone(), torch.arange(4))
    assert FastCollateMixup(mode="half").mode == "half"
