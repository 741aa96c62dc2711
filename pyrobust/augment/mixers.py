"""Batch mixers: SmoothMix (soft circle and square masks), CutMix, MixUp and Cutout.

One convention everywhere (SmoothMix, Lee et al., CVPRW 2020; REFERENCES.md §1):

    out[i]     = G_i * x[i] + (1 - G_i) * x[j]            j = partner of i
    targets[i] = lam_i * onehot(y[i]) + (1 - lam_i) * onehot(y[j]),   lam_i = mean(G_i)

with ``lam_i`` the mean of the mask actually applied to ``x[i]`` (a published
re-implementation weighted the wrong label). Every mask is separable,
``G = gy(y) * gx(x)`` (or ``1 - gy * gx``), so the mixing op computes it per pixel from two
1-D profiles in the same pass that blends the images, and ``lam`` is exact in O(H + W).

Masks, with pixel (h, w) at continuous coordinates (w + 0.5, h + 0.5):

- SmoothMix circle: ``G = exp(-(x - cx)^2 / (2 sx^2) - (y - cy)^2 / (2 sy^2))``, peak 1, centre
  uniform over the image, ``sx = s W``, ``sy = s H``, ``s ~ U(0.25, 0.5)`` (``ellipse=True`` draws
  an independent ``s`` per axis).
- SmoothMix square: the product of two 1-D trapezoids. Along x: 1 on the plateau
  ``|x - cx| <= s W / 2``, falling linearly to 0 at ``|x - cx| = s W / 2 + k W``
  (``s ~ U(0, 1)``, smooth edge ``k = 0.2``); likewise along y with H.
- CutMix: a hard box of area ``(1 - lam0) H W`` for ``lam0 ~ Beta(alpha, alpha)``, centre uniform
  (timm's ``rand_bbox``), clipped to the image; ``G = 1 - box`` so the partner is pasted into the
  box, and ``lam`` is corrected to the clipped box (timm's ``correct_lam``).
- MixUp: constant ``G = lam ~ Beta(alpha, alpha)``.
- Cutout: ``G = 1 - box`` against a constant fill; targets are the sample's own label.
"""

from __future__ import annotations

import abc
import math
import numbers
from typing import NamedTuple, Optional, Sequence, Union

import torch

from pyrobust.augment.output_pool import OutputPool
from pyrobust.ops import mix as mix_ops

PAIRINGS = ("permute", "flip", "roll")


class MixOutput(NamedTuple):
    """Everything one mixing call decided and produced.

    ``images``: ``(N, C, H, W)`` in the input's dtype; ``targets``: ``(N, num_classes)`` float32;
    ``lam``: ``(N,)`` float32 weight of each sample's own label (1 for unmixed samples: those
    paired with themselves, every sample of Cutout); these three on the images' device.
    ``partner``: ``(N,)`` int64 and ``params``: ``(N, 6)`` float32 mask parameters, on the CPU.
    """

    images: torch.Tensor
    targets: torch.Tensor
    lam: torch.Tensor
    partner: torch.Tensor
    params: torch.Tensor


def _check_probability(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} should be a probability in [0, 1], got {value!r}")
    return float(value)


def _check_range(name: str, value: Sequence[float], low: float, high: float) -> tuple:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} should be a pair (low, high), got {value!r}") from None
    if not (low <= lo <= hi <= high and math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} should be finite and satisfy {low} <= low <= high <= {high}, "
                         f"got {value!r}")
    return lo, hi


class BatchMixer(abc.ABC):
    """Shared machinery: argument checks, partner choice, sampling with a generator, targets.

    Subclasses name the parameter family they draw (``family`` and ``_draw_args``, see
    ``mix_ops.mix_draw``) and the mask the op applies: its ``profile`` (``"gaussian"``,
    ``"trapezoid"`` or ``"constant"``, the ``mode`` argument of ``mix_ops.mix``) and ``invert``.
    One that draws otherwise overrides ``sample``.

    Keyword arguments shared by every mixer:
        p: probability that a sample is mixed.
        per_sample: own mask parameters per sample, or one draw for the batch.
        label_smoothing: ``s`` in ``[0, 1)``: targets ``s / K + (1 - s) * mixed one-hot``.
        pairing: ``"permute"``, ``"flip"`` (i with N - 1 - i) or ``"roll"`` (i with i - 1).
        generator: a CPU ``torch.Generator`` for the draws; None uses torch's global one.
        reuse_outputs: without ``out=``, mix a CPU batch into an earlier output that nobody
            references any more (see ``pyrobust.augment.output_pool``); False always allocates.

    Call: ``mixer(images, labels)`` or, as torchvision's v2 transforms pass a sample,
    ``mixer((images, labels))``; both return ``(images, targets)``.
    """

    family: str = "circle"
    profile: str = "gaussian"
    invert: bool = False
    mixes_labels: bool = True

    @property
    def mode(self) -> str:
        """The mask ``profile`` under its former name. (``SmoothMix.mode`` is not this: there it is
        the shape the user chose, ``"circle"`` or ``"square"``.)"""
        return self.profile

    def __init__(
        self,
        num_classes: int,
        *,
        p: float = 1.0,
        per_sample: bool = True,
        label_smoothing: float = 0.0,
        pairing: str = "permute",
        generator: Optional[torch.Generator] = None,
        reuse_outputs: bool = True,
    ) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes should be a positive int, got {num_classes!r}")
        if pairing not in PAIRINGS:
            raise ValueError(f"pairing should be one of {PAIRINGS}, got {pairing!r}")
        if not isinstance(label_smoothing, (int, float)) or not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing should be in [0, 1), got {label_smoothing!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator should be a torch.Generator, got {type(generator).__name__}")
        if generator is not None and generator.device.type != "cpu":
            raise ValueError(
                f"generator should be a CPU torch.Generator (parameters are drawn on the CPU), "
                f"got one on {generator.device}"
            )
        self.num_classes = num_classes
        self.p = _check_probability("p", p)
        self.per_sample = bool(per_sample)
        self.label_smoothing = float(label_smoothing)
        self.pairing = pairing
        self.generator = generator
        self.reuse_outputs = bool(reuse_outputs)
        self._outputs = OutputPool()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_outputs", None)  # buffers and a lock: each copy keeps its own
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("reuse_outputs", True)
        self._outputs = OutputPool()

    # -- drawing -------------------------------------------------------------------------------

    # Drawing runs once per batch on a handful of values, so its cost is the calls that make
    # them: one op draws everything (csrc/ops/mix_draw.cpp), lam and the targets are one op, the
    # blend one more, and a mixer's call makes all three from C++ in one op (mix_batch).

    @abc.abstractmethod
    def _draw_args(self) -> list:
        """The arguments of ``family`` for ``mix_ops.mix_draw``."""

    def sample(self, n: int, height: int, width: int) -> tuple:
        """Draw ``(partner, params, active)`` for a batch of ``n`` images of ``height x width``:
        ``(N,)`` int64, ``(N, 6)`` float32 and ``(N,)`` bool, on the CPU."""
        return mix_ops.mix_draw(n, height, width, self.family, self._draw_args(), self.p,
                                self.per_sample, self.pairing, self.mixes_labels, self.generator)

    # -- validation ----------------------------------------------------------------------------

    def _check_inputs(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images should be a torch.Tensor, got {type(images).__name__}")
        if images.dim() != 4:
            raise ValueError(f"images should be 4-D (N, C, H, W), got shape {tuple(images.shape)}")
        if images.dtype not in (torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64):
            raise TypeError(
                f"images should be uint8, float16, bfloat16, float32 or float64, got {images.dtype}"
            )
        if not isinstance(labels, torch.Tensor):
            raise TypeError(f"labels should be a torch.Tensor, got {type(labels).__name__}")
        # Their shape, dtype and range are checked by mix_targets (ValueError / TypeError): on
        # the host for CPU labels, with one sync for labels on a GPU.

    # -- mixing --------------------------------------------------------------------------------

    def _fill(self) -> Optional[float]:
        return None

    def mix(self, images: torch.Tensor, labels: torch.Tensor, *, out: Optional[torch.Tensor] = None) -> MixOutput:
        """Mix a batch and return everything that was decided (see ``MixOutput``).

        Args:
            images: ``(N, C, H, W)`` uint8 / float16 / bfloat16 / float32 / float64, any device,
                contiguous or channels_last.
            labels: ``(N,)`` integer class ids in ``[0, num_classes)``.
            out: optional preallocated output (same shape, dtype, memory format; not ``images``).
                Without it, a CPU batch is mixed into an earlier output of this mixer that
                nobody references any more, or a new one (``reuse_outputs``; see
                ``pyrobust.augment.output_pool``): a result still held anywhere is never written.
        """
        self._check_inputs(images, labels)
        compiling = torch.compiler.is_compiling()
        if out is None and not compiling and self._reuses_output_for(images):
            out = self._outputs.take(images)
        # A generator cannot enter a traced graph (dynamo has no proxy for it): while compiling,
        # a mixer given one draws outside the graph (one graph break) and the rest is traced.
        draw_outside = compiling and self.generator is not None
        if type(self).sample is BatchMixer.sample and not draw_outside:
            # The three ops below in one call: the same results, ~2 calls' worth of host time less.
            return MixOutput(*mix_ops.mix_batch(
                images, labels, self.family, self._draw_args(), self.p, self.per_sample,
                self.pairing, self.generator, self.profile, self.invert, self._fill(),
                self.num_classes, self.label_smoothing, self.mixes_labels, out=out))
        n, _, height, width = images.shape
        if draw_outside:
            partner, params, _ = _sample_outside_graph(self, n, height, width)
        else:
            partner, params, _ = self.sample(n, height, width)
        # One op for lam and the targets, made on the images' device (labels checked first, so a
        # bad label leaves `out` untouched), one for the images. partner and params stay on the
        # CPU: each op checks them there and copies them with its launch.
        targets, lam = mix_ops.mix_targets(images, labels, partner, params, self.profile,
                                           self.invert, self.num_classes, self.label_smoothing,
                                           self.mixes_labels)
        mixed = mix_ops.mix(images, partner, params, self.profile, self.invert, self._fill(), out=out)
        return MixOutput(mixed, targets, lam, partner, params)

    def _reuses_output_for(self, images: torch.Tensor) -> bool:
        """Whether the default call takes its output from the pool: CPU tensors, when no
        gradient has to flow through the output (``mix.out`` records none)."""
        return (getattr(self, "reuse_outputs", False) and OutputPool.accepts(images)
                and not (images.requires_grad and torch.is_grad_enabled()))

    def __call__(self, images, labels: Optional[torch.Tensor] = None, *,
                 out: Optional[torch.Tensor] = None):
        """``(images, labels) -> (mixed images, float32 (N, num_classes) targets)``.

        As torchvision's v2 ``CutMix`` and ``MixUp``, a mixer also takes the pair as one sample,
        ``mixer((images, labels))``, and returns it in the same container, so it can stand in
        ``v2.Compose`` and ``v2.RandomChoice``; a torchvision ``TVTensor`` batch (``tv_tensors.Image``)
        comes back as the same subclass.
        """
        container = None
        if labels is None and isinstance(images, (tuple, list)):
            if len(images) != 2:
                raise TypeError(f"a mixer takes a sample (images, labels), got a {type(images).__name__} "
                                f"of {len(images)} items")
            container, (images, labels) = type(images), images
        if labels is None:
            raise TypeError("a mixer is called as mixer(images, labels) or mixer((images, labels))")
        result = self.mix(images, labels, out=out)
        pair = (_like(result.images, images), result.targets)
        return pair if container in (None, tuple) else container(pair)

    def _extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        extra = self._extra_repr()
        return (
            f"{type(self).__name__}(num_classes={self.num_classes}{', ' + extra if extra else ''}, "
            f"p={self.p}, per_sample={self.per_sample}, label_smoothing={self.label_smoothing}, "
            f"pairing={self.pairing!r})"
        )


def _like(result: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """``result`` as the tensor subclass of ``images`` where that subclass knows how to wrap
    (torchvision's ``TVTensor.wrap``), as v2's transforms return it; else as it is."""
    wrap = None if type(images) is torch.Tensor else getattr(type(images), "wrap", None)
    return result if wrap is None else wrap(result, like=images)


def _sample_outside_graph(mixer: BatchMixer, n: int, height: int, width: int) -> tuple:
    """``mixer.sample(n, height, width)`` run eagerly even inside a compiled function."""
    return torch.compiler.disable(type(mixer).sample)(mixer, n, height, width)


class SmoothMix(BatchMixer):
    """SmoothMix: blend each image with its partner through a soft-edged mask.

    Args:
        num_classes: number of classes K of the one-hot targets.
        mode: ``"circle"`` (Gaussian blob) or ``"square"`` (product of two 1-D trapezoids).
        sigma_range: circle only, range of ``s`` with ``sigma = s * size`` (default (0.25, 0.5)).
        ellipse: circle only, draw ``s`` independently for x and y.
        size_range: square only, range of the plateau's side as a fraction of the image
            (default (0, 1)).
        smooth: square only, width of the linear edge as a fraction of the image (default 0.2).
        p, per_sample, label_smoothing, pairing, generator: see ``BatchMixer``.

    Attributes: ``mode`` is the shape chosen (``"circle"`` or ``"square"``); ``profile`` the mask
    profile the op draws it with (``"gaussian"`` for a circle, ``"trapezoid"`` for a square).

    Call: ``mixer(images (N, C, H, W), labels (N,)) -> (images, targets (N, K) float32)``.
    """

    def __init__(
        self,
        num_classes: int,
        mode: str = "circle",
        *,
        sigma_range: Sequence[float] = (0.25, 0.5),
        ellipse: bool = False,
        size_range: Sequence[float] = (0.0, 1.0),
        smooth: float = 0.2,
        **kwargs,
    ) -> None:
        super().__init__(num_classes, **kwargs)
        if mode not in ("circle", "square"):
            raise ValueError(f"mode should be 'circle' or 'square', got {mode!r}")
        lo, hi = _check_range("sigma_range", sigma_range, 0.0, math.inf)
        if lo <= 0.0:
            raise ValueError(f"sigma_range should be positive, got {sigma_range!r}")
        self.sigma_range = (lo, hi)
        self.size_range = _check_range("size_range", size_range, 0.0, 1.0)
        if not isinstance(smooth, (int, float)) or not 0.0 < smooth < math.inf:
            raise ValueError(f"smooth should be a finite positive fraction of the image size, got {smooth!r}")
        self.smooth = float(smooth)
        self.ellipse = bool(ellipse)
        self.family = mode  # mix_draw's parameter families are named after the shapes
        self.profile = "gaussian" if mode == "circle" else "trapezoid"

    @property
    def mode(self) -> str:
        """The shape chosen: ``"circle"`` or ``"square"``."""
        return self.family

    def _draw_args(self) -> list:
        if self.mode == "circle":
            return [*self.sigma_range, float(self.ellipse)]
        return [*self.size_range, self.smooth]

    def _extra_repr(self) -> str:
        if self.mode == "circle":
            return f"mode='circle', sigma_range={self.sigma_range}, ellipse={self.ellipse}"
        return f"mode='square', size_range={self.size_range}, smooth={self.smooth}"


class _BetaMixer(BatchMixer):
    """A mixer whose mixing ratio is drawn from Beta(alpha, alpha) (CutMix, MixUp)."""

    def __init__(self, num_classes: int, alpha: float = 1.0, **kwargs) -> None:
        super().__init__(num_classes, **kwargs)
        if not isinstance(alpha, (int, float)) or not alpha > 0:
            raise ValueError(f"alpha should be > 0, got {alpha!r}")
        self.alpha = float(alpha)

    def _draw_args(self) -> list:
        return [self.alpha]

    def _extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class CutMix(_BetaMixer):
    """CutMix: paste a box of the partner image, ``lam`` corrected to the clipped box.

    Args:
        num_classes: number of classes K.
        alpha: Beta(alpha, alpha) concentration of the uncorrected ``lam`` (default 1.0).
        p, per_sample, label_smoothing, pairing, generator: see ``BatchMixer``.
    """

    family = "cutmix"
    profile = "trapezoid"
    invert = True


class MixUp(_BetaMixer):
    """MixUp: blend whole images with a constant ``lam ~ Beta(alpha, alpha)``.

    Args:
        num_classes: number of classes K.
        alpha: Beta concentration (default 1.0).
        p, per_sample, label_smoothing, pairing, generator: see ``BatchMixer``.
    """

    family = "mixup"
    profile = "constant"


class Cutout(BatchMixer):
    """Cutout: fill a square box with a constant; targets stay the sample's own label.

    The box side is given one of two ways:

    - ``size``: a **fraction** of each image side, a float in (0, 1] (default 0.5): sides of
      ``floor(size * H)`` and ``floor(size * W)`` pixels, following the image's aspect ratio;
    - ``size_px``: a side in **pixels**, an int >= 1, the same for height and width.

    For older code, an int ``size`` also means pixels (``size=16`` is ``size_px=16``); beware that
    ``size=1`` is then a box of at most one pixel while ``size=1.0`` is the whole image. Prefer
    ``size_px``. The box is placed as CutMix's (timm's ``rand_bbox``): it reaches ``side // 2``
    pixels either side of a uniformly drawn pixel and is clipped to the image, so an odd side
    loses one pixel (``size_px=7`` cuts at most 6 x 6, ``size_px=1`` nothing).

    Args:
        num_classes: number of classes K.
        size: side of the box as a fraction of each image side (see above).
        fill: the value written into the box (in the images' units: 0-255 for uint8).
        size_px: side of the box in pixels, instead of ``size``.
        p, per_sample, label_smoothing, generator: see ``BatchMixer`` (no partner is used).
    """

    family = "cutout"
    profile = "trapezoid"
    invert = True
    mixes_labels = False

    def __init__(self, num_classes: int, size: Union[float, int, None] = None, fill: float = 0.0, *,
                 size_px: Optional[int] = None, **kwargs) -> None:
        super().__init__(num_classes, **kwargs)
        if size_px is not None:
            if size is not None:
                raise TypeError(f"give the box side once, as size (a fraction) or size_px (pixels), "
                                f"got size={size!r} and size_px={size_px!r}")
            if isinstance(size_px, bool) or not isinstance(size_px, numbers.Integral) or size_px < 1:
                raise ValueError(f"size_px should be a pixel count, an int >= 1, got {size_px!r}")
            size = int(size_px)
        elif size is None:
            size = 0.5
        elif isinstance(size, bool) or not isinstance(size, numbers.Real) or not size > 0:
            raise ValueError(f"size should be a fraction in (0, 1] (or, as size_px, a pixel count), "
                             f"got {size!r}")
        elif isinstance(size, numbers.Integral):
            size = int(size)  # pixels, as size_px
        else:
            size = float(size)
            if size > 1.0:
                raise ValueError(f"size as a fraction should be in (0, 1], got {size!r} (a side in "
                                 f"pixels is size_px=)")
        if not isinstance(fill, (int, float)) or not math.isfinite(fill):
            raise ValueError(f"fill should be a finite number, got {fill!r}")
        self.size = size
        self.fill = float(fill)

    @property
    def size_px(self) -> Optional[int]:
        """The box side in pixels, or None when ``size`` is a fraction."""
        return self.size if isinstance(self.size, int) else None

    def _fill(self) -> Optional[float]:
        return self.fill

    def _draw_args(self) -> list:
        return [float(self.size), float(isinstance(self.size, float))]

    def _extra_repr(self) -> str:
        side = f"size_px={self.size}" if isinstance(self.size, int) else f"size={self.size}"
        return f"{side}, fill={self.fill}"
