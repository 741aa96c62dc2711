"""A gallery of the batch mixers on real photos: what each mask looks like and does.

Uses scikit-learn's two bundled sample photos (china.jpg, flower.jpg), so it works offline.
"""

from __future__ import annotations

import torch

from pyrobust.report import new_figure

MIXER_ROWS = ("smoothmix-circle", "smoothmix-square", "cutmix", "mixup", "cutout")


def sample_photos(height: int = 160, width: int = 224) -> torch.Tensor:
    """scikit-learn's two sample photos as a ``(2, 3, height, width)`` float32 batch in [0, 1]."""
    from sklearn.datasets import load_sample_image

    photos = [torch.from_numpy(load_sample_image(n)).permute(2, 0, 1).float() / 255 for n in ("china.jpg", "flower.jpg")]
    batch = torch.stack(photos)
    return torch.nn.functional.interpolate(batch, size=(height, width), mode="bilinear", antialias=True,
                                           align_corners=False).clamp(0, 1)


def mask_gallery_figure(seed: int = 0, columns: int = 3):
    """One column per draw, two rows per mixer: the mixed first photo and the mask G applied to it."""
    from pyrobust.augment import CutMix, Cutout, MixUp, SmoothMix
    from pyrobust.ops.mix import mix_mask

    photos = sample_photos()
    _, _, h, w = photos.shape
    labels = torch.tensor([0, 1])
    makers = {
        "smoothmix-circle": lambda g: SmoothMix(2, "circle", pairing="flip", generator=g),
        "smoothmix-square": lambda g: SmoothMix(2, "square", pairing="flip", generator=g),
        "cutmix": lambda g: CutMix(2, pairing="flip", generator=g),
        "mixup": lambda g: MixUp(2, alpha=1.0, pairing="flip", generator=g),
        "cutout": lambda g: Cutout(2, size=0.4, fill=0.5, generator=g),
    }
    fig = new_figure(2.2 * columns, 1.55 * 2 * len(makers))
    axes = fig.subplots(2 * len(makers), columns)
    for r, name in enumerate(MIXER_ROWS):
        gen = torch.Generator().manual_seed(seed + r)
        mixer = makers[name](gen)
        for col in range(columns):
            res = mixer.mix(photos, labels)
            g = mix_mask(res.params, mixer.profile, mixer.invert, h, w)[0]
            top, bottom = axes[2 * r, col], axes[2 * r + 1, col]
            top.imshow(res.images[0].permute(1, 2, 0).numpy())
            bottom.imshow(g.numpy(), cmap="gray", vmin=0, vmax=1)
            top.set_title(f"{name}  λ={res.lam[0]:.2f}", fontsize=7)
            for ax in (top, bottom):
                ax.set_xticks([])
                ax.set_yticks([])
    return fig
