"""Drop-ins for timm's ``Mixup`` and ``FastCollateMixup``, mixing with pyrobust's op.

Same constructor arguments, same call and same semantics as ``timm.data.mixup`` (so that
``from pyrobust.augment.timm import Mixup`` is the only line a timm training script changes):

- the partner of sample i is sample N - 1 - i (the flipped batch);
- ``mixup_alpha`` / ``cutmix_alpha`` > 0 enable MixUp (``lam ~ Beta(mixup_alpha)``) and CutMix
  (a box of side ``sqrt(1 - lam)`` of each dimension, centre uniform, clipped to the image;
  ``cutmix_minmax`` draws the box sides uniformly instead and forces ``cutmix_alpha = 1``); with
  both, each event picks CutMix with ``switch_prob``; ``prob`` is the chance of mixing at all;
  ``correct_lam`` (always on with ``cutmix_minmax``) recomputes ``lam = 1 - box / (H W)``;
- ``mode``: ``"batch"`` draws once per batch, ``"pair"`` once per pair (i and N - 1 - i mix
  with each other's original), ``"elem"`` once per sample; ``FastCollateMixup`` adds ``"half"``
  (elem on the first half of the batch, which is all it returns);
- targets ``lam * smooth(y) + (1 - lam) * smooth(y.flip(0))`` with ``off = s / K``,
  ``on = 1 - s + off`` (``multi_label``: dense targets ``y (1 - s) + s / 2``);
- ``Mixup`` mixes ``x`` in place and returns it; ``FastCollateMixup`` collates uint8 samples
  (tensors or numpy arrays, C x H x W) into a new uint8 batch, blends rounded to nearest.

Random draws come from numpy's global generator in timm's order, so a seeded run draws the same
decisions, boxes and ``lam`` as timm.

Differences, all where timm fails or loses precision: any batch size works (with an odd one the
middle sample pairs with itself: unmixed, its own target); ``lam`` and targets are float32
whatever the images' dtype (timm builds per-sample ``lam`` in the images' dtype); an unknown
``mode`` or ``cutmix_mask`` is a ValueError.

One addition, ``cutmix_mask``: ``"box"`` (timm's), or SmoothMix's soft masks ``"circle"`` (a
Gaussian blob) and ``"square"`` (a square with linear edges) drawn as ``SmoothMix`` draws them,
with the partner pasted into the shape as CutMix pastes it into the box. With a soft mask ``lam``
is the mean of the mask applied (exact), and ``cutmix_alpha``, ``cutmix_minmax`` and
``correct_lam`` (which size and correct the box) do not apply.

How the images are written: ``Mixup`` mixes in place through ``pyrobust.ops.mix_pairs_`` (each
pair read once and written once; boxes as hard-edged masks), but for one box shared by the whole
batch, copied as one slice (only the box moves). ``FastCollateMixup`` copies its boxes as slices
and blends through ``pyrobust.ops.mix`` straight into the new batch. Paths and figures: docs/mixing-paths.md.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import default_collate, get_worker_info

from pyrobust.augment.collate import _shared_output
from pyrobust.augment.output_pool import OutputPool
from pyrobust.ops import mix as mix_ops

CUTMIX_MASKS = ("box", "circle", "square")
MODES = ("batch", "pair", "elem")

# Bytes of pairs once mixed at a time in place on the CPU, through a scratch. Unused since
# ``mix_pairs_`` mixes in place; kept so that code setting it keeps working.
CHUNK_BYTES = 2 << 20

# Kinds of mixing a sample gets.
UNMIXED, BLEND, BOX, SOFT = 0, 1, 2, 3

# The soft masks: SmoothMix's parameter families and default draws, and the op profile of each.
_SOFT = {"circle": ("circle", [0.25, 0.5, 0.0], "gaussian"),
         "square": ("square", [0.0, 1.0, 0.2], "trapezoid")}


# -- timm's box draws (numpy global RNG, in timm's order) -------------------------------------

def rand_bbox(img_shape: Sequence[int], lam: float) -> tuple:
    """A box of side ``int(size * sqrt(1 - lam))`` per dimension around a uniform centre, clipped:
    ``(yl, yh, xl, xh)``."""
    ratio = np.sqrt(1 - lam)
    img_h, img_w = img_shape[-2:]
    cut_h, cut_w = int(img_h * ratio), int(img_w * ratio)
    cy = int(np.random.randint(0, img_h))
    cx = int(np.random.randint(0, img_w))
    # Clipped with Python ints: np.clip on a scalar costs ~10 us, four per box; for 64 boxes that
    # was about half of an elem-mode call on 224 x 224 images.
    yl = min(max(cy - cut_h // 2, 0), img_h)
    yh = min(max(cy + (cut_h + 1) // 2, 0), img_h)
    xl = min(max(cx - cut_w // 2, 0), img_w)
    xh = min(max(cx + (cut_w + 1) // 2, 0), img_w)
    return yl, yh, xl, xh


def rand_bbox_minmax(img_shape: Sequence[int], minmax: Sequence[float]) -> tuple:
    """A box whose sides are drawn uniformly between ``minmax`` fractions of the image, placed
    uniformly inside it: ``(yl, yh, xl, xh)``."""
    img_h, img_w = img_shape[-2:]
    cut_h = np.random.randint(int(img_h * minmax[0]), int(img_h * minmax[1]))
    cut_w = np.random.randint(int(img_w * minmax[0]), int(img_w * minmax[1]))
    yl = np.random.randint(0, img_h - cut_h + 1)
    xl = np.random.randint(0, img_w - cut_w + 1)
    return int(yl), int(yl + cut_h), int(xl), int(xl + cut_w)


def rand_bboxes_square(side: int, lam: np.ndarray) -> np.ndarray:
    """``rand_bbox`` for each ``lam`` of a float32 array on a ``side x side`` image, drawn with one
    call: ``(len(lam), 4)`` int64 ``(yl, yh, xl, xh)``. The same numbers as the calls one by one,
    which draw ``cy, cx`` in turn from one bound (numpy's legacy ``randint`` draws a vector as it
    draws scalars; the tests compare with timm)."""
    cut = np.array([int(side * ratio) for ratio in np.sqrt(1 - lam)], dtype=np.int64)  # as rand_bbox
    centre = np.random.randint(0, side, size=(len(lam), 2)).astype(np.int64)
    low = np.clip(centre - (cut // 2)[:, None], 0, side)
    high = np.clip(centre + ((cut + 1) // 2)[:, None], 0, side)
    return np.stack([low[:, 0], high[:, 0], low[:, 1], high[:, 1]], axis=1)


def cutmix_bbox_and_lam(img_shape, lam, ratio_minmax=None, correct_lam=True) -> tuple:
    """``((yl, yh, xl, xh), lam)`` with ``lam`` recomputed from the clipped box when asked."""
    if ratio_minmax is not None:
        box = rand_bbox_minmax(img_shape, ratio_minmax)
    else:
        box = rand_bbox(img_shape, lam)
    if correct_lam or ratio_minmax is not None:
        yl, yh, xl, xh = box
        lam = 1.0 - (yh - yl) * (xh - xl) / float(img_shape[-2] * img_shape[-1])
    return box, lam


def mixup_target(target: torch.Tensor, num_classes: int, lam, smoothing: float = 0.0,
                 multi_label: bool = False) -> torch.Tensor:
    """``lam * smooth(target) + (1 - lam) * smooth(target.flip(0))``, float32; ``lam`` a float or
    an ``(N, 1)`` tensor."""
    if multi_label:
        if target.ndim != 2 or target.shape[1] != num_classes:
            raise ValueError("multi-label mixup expects dense targets shaped (batch, num_classes), "
                             f"got shape {tuple(target.shape)}")
        y1 = target.float() * (1.0 - smoothing) + 0.5 * smoothing
    else:
        off = smoothing / num_classes
        on = 1.0 - smoothing + off
        y1 = torch.full((target.shape[0], num_classes), off, device=target.device)
        y1.scatter_(1, target.long().view(-1, 1), on)
    return y1 * lam + y1.flip(0) * (1.0 - lam)


# -- one batch's decisions ---------------------------------------------------------------------

class MixPlan(NamedTuple):
    """What one call decided, per sample of a batch of N (partner of i: N - 1 - i).

    ``kind``: ``(N,)`` int, UNMIXED / BLEND / BOX / SOFT; ``lam``: ``(N,)`` float64 weight of
    the sample's own label; ``boxes``: ``(N, 4)`` int ``(yl, yh, xl, xh)`` of BOX samples;
    ``soft``: ``(N, 6)`` float32 op parameters of SOFT samples (None when there are none);
    ``scalar_lam``: batch mode's one ``lam`` as timm returns it (a float), else None.
    """

    kind: np.ndarray
    lam: np.ndarray
    boxes: np.ndarray
    soft: Optional[torch.Tensor]
    scalar_lam: Optional[float]


class Blend(NamedTuple):
    """One op call of a mix: the samples it blends with their flipped partner (``rows``, ``(N,)``
    bool), their ``(N, 6)`` float32 parameters, the op's mask ``profile`` and ``invert``."""

    rows: torch.Tensor
    params: torch.Tensor
    profile: str
    invert: bool


class Mixup:
    """MixUp / CutMix with per-batch, per-pair or per-sample parameters, as timm's ``Mixup``.

    Args:
        mixup_alpha: MixUp's Beta concentration; MixUp is active if > 0.
        cutmix_alpha: CutMix's Beta concentration; CutMix is active if > 0.
        cutmix_minmax: ``(min, max)`` box side as fractions of the image; activates CutMix with
            uniform box sides instead of ``cutmix_alpha``.
        prob: probability of mixing, per batch or per element.
        switch_prob: probability of CutMix instead of MixUp when both are active.
        mode: ``"batch"``, ``"pair"`` or ``"elem"``: how often parameters are drawn.
        correct_lam: recompute ``lam`` from the box clipped at the image borders.
        label_smoothing: ``s``: targets are ``1 - s + s/K`` and ``s/K`` before mixing.
        num_classes: K.
        multi_label: targets are dense ``(N, K)`` multi-label, smoothed towards 0.5.
        cutmix_mask: ``"box"`` (timm's), ``"circle"`` or ``"square"`` (SmoothMix's soft masks).

    Call: ``mixup(x (N, C, H, W), target (N,)) -> (x, targets (N, K) float32)``; ``x`` is mixed
    in place. Set ``mixup_enabled = False`` to stop mixing (as timm's training loop does).
    """

    def __init__(self, mixup_alpha: float = 1.0, cutmix_alpha: float = 0.0,
                 cutmix_minmax: Optional[Sequence[float]] = None, prob: float = 1.0,
                 switch_prob: float = 0.5, mode: str = "batch", correct_lam: bool = True,
                 label_smoothing: float = 0.1, num_classes: int = 1000, multi_label: bool = False,
                 cutmix_mask: str = "box") -> None:
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.cutmix_minmax = cutmix_minmax
        if self.cutmix_minmax is not None:
            if len(self.cutmix_minmax) != 2:
                raise ValueError(f"cutmix_minmax should be (min, max), got {cutmix_minmax!r}")
            self.cutmix_alpha = 1.0  # as timm: minmax boxes are CutMix events
        self.mix_prob = prob
        self.switch_prob = switch_prob
        self.label_smoothing = label_smoothing
        self.num_classes = num_classes
        self.multi_label = multi_label
        if mode not in self._modes():
            raise ValueError(f"mode should be one of {self._modes()}, got {mode!r}")
        self.mode = mode
        self.correct_lam = correct_lam
        if cutmix_mask not in CUTMIX_MASKS:
            raise ValueError(f"cutmix_mask should be one of {CUTMIX_MASKS}, got {cutmix_mask!r}")
        self.cutmix_mask = cutmix_mask
        self.mixup_enabled = True
        self._scratch = OutputPool()

    @staticmethod
    def _modes() -> tuple:
        return MODES

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_scratch", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._scratch = OutputPool()

    # -- drawing (timm's _params_per_elem / _params_per_batch, numpy's global RNG) -------------

    def _check_alphas(self) -> None:
        if not (self.mixup_alpha > 0.0 or self.cutmix_alpha > 0.0):
            raise ValueError("one of mixup_alpha > 0, cutmix_alpha > 0 or cutmix_minmax should be set")

    def _params_per_elem(self, count: int) -> tuple:
        lam = np.ones(count, dtype=np.float32)
        use_cutmix = np.zeros(count, dtype=bool)
        if self.mixup_enabled:
            self._check_alphas()
            if self.mixup_alpha > 0.0 and self.cutmix_alpha > 0.0:
                use_cutmix = np.random.rand(count) < self.switch_prob
                lam_mix = np.where(use_cutmix,
                                   np.random.beta(self.cutmix_alpha, self.cutmix_alpha, size=count),
                                   np.random.beta(self.mixup_alpha, self.mixup_alpha, size=count))
            elif self.mixup_alpha > 0.0:
                lam_mix = np.random.beta(self.mixup_alpha, self.mixup_alpha, size=count)
            else:
                use_cutmix = np.ones(count, dtype=bool)
                lam_mix = np.random.beta(self.cutmix_alpha, self.cutmix_alpha, size=count)
            lam = np.where(np.random.rand(count) < self.mix_prob, lam_mix.astype(np.float32), lam)
        return lam, use_cutmix

    def _params_per_batch(self) -> tuple:
        lam, use_cutmix = 1.0, False
        if self.mixup_enabled and np.random.rand() < self.mix_prob:
            self._check_alphas()
            if self.mixup_alpha > 0.0 and self.cutmix_alpha > 0.0:
                use_cutmix = bool(np.random.rand() < self.switch_prob)
                lam = float(np.random.beta(self.cutmix_alpha, self.cutmix_alpha) if use_cutmix
                            else np.random.beta(self.mixup_alpha, self.mixup_alpha))
            elif self.mixup_alpha > 0.0:
                lam = float(np.random.beta(self.mixup_alpha, self.mixup_alpha))
            else:
                use_cutmix = True
                lam = float(np.random.beta(self.cutmix_alpha, self.cutmix_alpha))
        return lam, use_cutmix

    def plan(self, n: int, height: int, width: int) -> MixPlan:
        """Draw every decision for a batch of ``n`` images of ``height x width``."""
        mode = self.mode
        shape = (height, width)
        kind = np.zeros(n, dtype=np.int64)
        lam = np.ones(n, dtype=np.float64)
        boxes = np.zeros((n, 4), dtype=np.int64)
        soft_mask = self.cutmix_mask != "box"
        scalar_lam = None
        if mode == "batch":
            draw, use_cutmix = self._params_per_batch()
            scalar_lam = draw
            if draw != 1.0:
                if use_cutmix and not soft_mask:
                    box, draw = cutmix_bbox_and_lam(shape, draw, self.cutmix_minmax, self.correct_lam)
                    boxes[:] = box
                kind[:] = (SOFT if soft_mask else BOX) if use_cutmix else BLEND
                lam[:] = scalar_lam = draw
            owners = np.arange(n)
        else:
            # pair: one draw per pair, given to both members; elem: one per sample; half: one per
            # sample of the first half (the only one kept), the rest unmixed.
            count = n // 2 if mode in ("pair", "half") else n
            draws, use_cutmix = self._params_per_elem(count)
            if height == width and self.cutmix_minmax is None and not soft_mask and use_cutmix.any():
                # Every box at once: the draws the loop (else) makes one by one, in its order.
                mixed = draws != 1.0
                cut = np.flatnonzero(use_cutmix & mixed)
                boxes[cut] = rand_bboxes_square(height, draws[cut])
                if self.correct_lam:
                    area = (boxes[cut, 1] - boxes[cut, 0]) * (boxes[cut, 3] - boxes[cut, 2])
                    draws[cut] = 1.0 - area / float(height * width)
                kind[:count] = np.where(mixed, np.where(use_cutmix, BOX, BLEND), UNMIXED)
                lam[:count] = np.where(mixed, draws, 1.0)
            else:
                for i in range(count):
                    if draws[i] == 1.0:
                        continue
                    if use_cutmix[i] and not soft_mask:
                        boxes[i], draws[i] = cutmix_bbox_and_lam(shape, draws[i], self.cutmix_minmax,
                                                                 self.correct_lam)
                    kind[i] = (SOFT if soft_mask else BOX) if use_cutmix[i] else BLEND
                    lam[i] = draws[i]
            owners = np.arange(n)
            if mode == "pair":
                owners = np.minimum(owners, n - 1 - owners)
                kind, lam, boxes = kind[owners], lam[owners], boxes[owners]
        if n % 2:  # the middle sample is its own partner
            kind[n // 2], lam[n // 2] = UNMIXED, 1.0
        soft = None
        if (kind == SOFT).any():
            family, args, profile = _SOFT[self.cutmix_mask]
            _, soft, _ = mix_ops.mix_draw(n, height, width, family, args, 1.0, mode != "batch")
            soft = soft[torch.from_numpy(owners)]
            soft_lam = mix_ops.mix_lambda(soft, profile, True, height, width).double().numpy()
            lam = np.where(kind == SOFT, soft_lam, lam)
            if scalar_lam is not None:
                scalar_lam = float(soft_lam[0])
        return MixPlan(kind, lam, boxes, soft, scalar_lam)

    # -- applying ------------------------------------------------------------------------------

    def _blends(self, plan: MixPlan) -> list:
        """The op calls that make the plan's blended samples: one ``Blend`` per mask profile
        present (MixUp's constant, the soft mask's)."""
        blends = []
        if (plan.kind == BLEND).any():
            params = torch.zeros(len(plan.kind), mix_ops.MIX_PARAMS, dtype=torch.float32)
            params[:, 0] = torch.from_numpy(plan.lam.astype(np.float32))
            blends.append(Blend(torch.from_numpy(plan.kind == BLEND), params, "constant", False))
        if (plan.kind == SOFT).any():
            blends.append(Blend(torch.from_numpy(plan.kind == SOFT), plan.soft,
                                _SOFT[self.cutmix_mask][2], True))
        return blends

    def _mix_blends(self, dst: torch.Tensor, src: torch.Tensor, blends: list) -> None:
        """``dst`` (not ``src``) = ``src`` with each blended sample mixed with its flipped
        partner; the other samples copied."""
        if not blends:
            dst.copy_(src)
            return
        n = src.shape[0]
        flip, own = torch.arange(n - 1, -1, -1), torch.arange(n)
        for g, blend in enumerate(blends):
            partner = torch.where(blend.rows, flip, own)
            into = dst if g == 0 else self._scratch.take(src)
            mix_ops.mix(src, partner, blend.params, blend.profile, blend.invert, out=into)
            if g:  # MixUp and a soft mask in one batch: one more pass, its rows taken
                index = blend.rows.nonzero()[:, 0].to(src.device)
                dst.index_copy_(0, index, into.index_select(0, index))

    def _mix_into(self, dst: torch.Tensor, src: torch.Tensor, plan: MixPlan) -> None:
        """Write the mixed batch of ``src`` (flipped partners) into ``dst`` (not ``src``)."""
        self._mix_blends(dst, src, self._blends(plan))
        _write_patches(dst, _box_patches(src, plan))

    def _pair_args(self, plan: MixPlan, boxes: bool) -> Optional[tuple]:
        """``(params, modes, invert)`` of ``mix_pairs_`` for the plan's blended samples (MixUp's
        constant and the soft mask's profile side by side, one call) and, with ``boxes``, its box
        samples as hard-edged inverted trapezoids (a mask of exact 0s and 1s: the box copied bit
        for bit); None when there is nothing to mix."""
        blend, soft = plan.kind == BLEND, plan.kind == SOFT
        box = (plan.kind == BOX) if boxes else np.zeros_like(blend)
        if not (blend.any() or soft.any() or box.any()):
            return None
        n = len(plan.kind)
        params = torch.zeros(n, mix_ops.MIX_PARAMS, dtype=torch.float32)
        modes = torch.full((n,), -1, dtype=torch.long)
        invert = torch.zeros(n, dtype=torch.bool)
        if blend.any():
            rows = torch.from_numpy(blend)
            modes[rows] = mix_ops.MASK_MODES.index("constant")
            params[rows, 0] = torch.from_numpy(plan.lam[blend].astype(np.float32))
        if soft.any():
            rows = torch.from_numpy(soft)
            modes[rows] = mix_ops.MASK_MODES.index(_SOFT[self.cutmix_mask][2])
            invert[rows] = True
            params[rows] = plan.soft[rows]
        if box.any():
            rows = torch.from_numpy(box)
            modes[rows] = mix_ops.MASK_MODES.index("trapezoid")
            invert[rows] = True
            yl, yh, xl, xh = torch.from_numpy(plan.boxes[box].astype(np.float32)).unbind(1)
            # centre and half-side: pixel k (at k + 1/2) is inside iff xl <= k < xh, exactly.
            params[rows, :4] = torch.stack(((xl + xh) / 2, (yl + yh) / 2, (xh - xl) / 2, (yh - yl) / 2), 1)
        return params, modes, invert

    def _mix_in_place(self, x: torch.Tensor, plan: MixPlan) -> None:
        """Mix ``x`` into itself with ``mix_pairs_``, each pair read once and written once (a
        box: only its rows and columns)."""
        args = self._pair_args(plan, boxes=True)
        if args is not None:
            dense = x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)
            target = x if dense else x.contiguous()
            mix_ops.mix_pairs_(target, *args)
            if not dense:
                x.copy_(target)

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> tuple:
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ValueError(f"x should be a 4-D (N, C, H, W) tensor, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        n, _, height, width = x.shape
        plan = self.plan(n, height, width)
        self._mix_in_place(x, plan)
        return x, self._targets(target, plan, x.device)

    def _targets(self, target: torch.Tensor, plan: MixPlan, device) -> torch.Tensor:
        target = torch.as_tensor(target)
        if plan.scalar_lam is not None:
            lam = plan.scalar_lam
        else:
            lam = torch.from_numpy(plan.lam.astype(np.float32)).to(target.device)[:, None]
        return mixup_target(target, self.num_classes, lam, self.label_smoothing, self.multi_label)


def _one_box(plan: MixPlan) -> bool:
    """Whether every sample is a BOX sample with the same box (batch-mode CutMix)."""
    return bool(len(plan.kind) and (plan.kind == BOX).all() and (plan.boxes == plan.boxes[0]).all())


def _box_patches(src: torch.Tensor, plan: MixPlan) -> list:
    """``(index, patch)`` for each BOX sample i: the region of ``dst[index]`` that receives
    ``src[N - 1 - i]``'s box (views of ``src``, written into another tensor)."""
    rows = np.flatnonzero(plan.kind == BOX)
    if rows.size == 0:
        return []
    n = src.shape[0]
    if _one_box(plan):  # one box for all: one copy
        yl, yh, xl, xh = (int(v) for v in plan.boxes[0])
        return [((slice(None), slice(None), slice(yl, yh), slice(xl, xh)),
                 src[:, :, yl:yh, xl:xh].flip(0))]
    return [((i, slice(None), slice(yl, yh), slice(xl, xh)), src[n - 1 - i, :, yl:yh, xl:xh])
            for i, (yl, yh, xl, xh) in zip(rows.tolist(), plan.boxes[rows].tolist())]


def _write_patches(dst: torch.Tensor, patches: list) -> None:
    for index, patch in patches:
        dst[index] = patch


class FastCollateMixup(Mixup):
    """Collate uint8 samples into a mixed uint8 batch, as timm's ``FastCollateMixup``.

    Same arguments as ``Mixup``; ``mode`` may also be ``"half"``. Call:
    ``collate(batch) -> (images (N, C, H, W) uint8, targets (N, K) float32)`` with ``batch`` a list
    of ``(image, target)``, each image a ``C x H x W`` uint8 tensor or numpy array. In a
    DataLoader worker the batch is made in shared memory, as ``default_collate`` makes it.
    """

    @staticmethod
    def _modes() -> tuple:
        return (*MODES, "half")

    def __call__(self, batch: list, _=None) -> tuple:
        n = len(batch)
        first = torch.as_tensor(batch[0][0])
        if first.dim() != 3:
            raise ValueError(f"samples should be C x H x W, got shape {tuple(first.shape)}")
        samples = [torch.as_tensor(b[0]) for b in batch]
        plan = self.plan(n, first.shape[1], first.shape[2])
        if self.mode == "half":  # the first half of the mixed batch: mixed from a stacked copy
            size = n // 2
            stacked = self._scratch.take(first.expand(n, *first.shape))
            torch.stack(samples, out=stacked)
            output = _new_batch(stacked[:size])
            full = self._scratch.take(stacked)
            self._mix_into(full, stacked, plan)
            output.copy_(full[:size])
        else:  # stacked into the new batch, then mixed in place as Mixup does (a box: its span)
            size = n
            output = _new_batch(first.expand(n, *first.shape))
            torch.stack(samples, out=output)
            self._mix_in_place(output, plan)
        target = default_collate([b[1] for b in batch])
        return output, self._targets(target, plan, output.device)[:size]


def _new_batch(like: torch.Tensor) -> torch.Tensor:
    """An empty batch laid out as ``like``, in shared memory inside a DataLoader worker (where
    the main process would otherwise copy it there)."""
    shared = _shared_output(like) if get_worker_info() is not None else None
    return torch.empty_like(like) if shared is None else shared
