"""The mixer registry: each name builds its mixer with the mixer's own defaults; overrides pass through."""

import pytest
import torch

from pyrobust.augment import MIXER_NAMES, CutMix, Cutout, MixUp, SmoothMix, make_mixer

# each name's mixer built directly, with the same keyword arguments
EXPECTED = {
    "cutout": lambda k, **kw: Cutout(k, **kw),
    "mixup": lambda k, **kw: MixUp(k, **kw),
    "cutmix": lambda k, **kw: CutMix(k, **kw),
    "smoothmix-circle": lambda k, **kw: SmoothMix(k, "circle", **kw),
    "smoothmix-square": lambda k, **kw: SmoothMix(k, "square", **kw),
}


def test_names_are_the_registry():
    assert set(MIXER_NAMES) == set(EXPECTED) and len(MIXER_NAMES) == len(EXPECTED)
    assert "none" not in MIXER_NAMES  # a study's baseline, not a mixer


def _settings(mixer) -> dict:
    """A mixer's attributes less its output pool, which is its own per instance."""
    return {k: v for k, v in vars(mixer).items() if k != "_outputs"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_name_builds_its_mixer_with_its_defaults(name):
    mixer, expected = make_mixer(name, 7), EXPECTED[name](7)
    assert type(mixer) is type(expected)
    assert repr(mixer) == repr(expected)  # every constructor setting, the defaults included
    assert _settings(mixer) == _settings(expected)
    assert mixer.num_classes == 7 and mixer.generator is None


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_overrides_pass_through(name):
    gen = torch.Generator().manual_seed(3)
    mixer = make_mixer(name, 5, generator=gen, p=0.5, label_smoothing=0.1)
    assert mixer.generator is gen and mixer.p == 0.5 and mixer.label_smoothing == 0.1
    x = torch.rand(8, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8) % 5
    a = mixer(x, y)
    b = EXPECTED[name](5, generator=torch.Generator().manual_seed(3), p=0.5, label_smoothing=0.1)(x, y)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_mixer_specific_overrides():
    assert make_mixer("mixup", 10, alpha=0.2).alpha == 0.2
    assert make_mixer("cutmix", 10, alpha=0.5).alpha == 0.5
    cutout = make_mixer("cutout", 10, size=0.25, fill=0.5)
    assert (cutout.size, cutout.fill) == (0.25, 0.5)
    assert make_mixer("smoothmix-circle", 10, sigma_range=(0.1, 0.2)).sigma_range == (0.1, 0.2)
    assert make_mixer("smoothmix-square", 10, smooth=0.1).smooth == 0.1
    with pytest.raises(TypeError):
        make_mixer("smoothmix-circle", 10, mode="square")  # the name fixes the mode
    with pytest.raises(ValueError, match="alpha"):
        make_mixer("mixup", 10, alpha=-1.0)  # the mixer's own checks still apply


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown mixer 'supermix'") as info:
        make_mixer("supermix", 10)
    for name in MIXER_NAMES:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="unknown mixer 'none'"):
        make_mixer("none", 10)


def test_studies_keep_their_settings_and_seeds():
    from pyrobust.study import lpft_study, mixstudy_train

    lp = lpft_study.study_mixer("mixup", 10, seed=4)
    assert isinstance(lp, MixUp) and lp.alpha == 0.2
    ref = torch.Generator().manual_seed(4)
    assert torch.equal(lp.generator.get_state(), ref.get_state())
    assert lpft_study.make_mixer is lpft_study.study_mixer
    assert mixstudy_train.study_mixer("none", 10, 0) is None
    cut = mixstudy_train.study_mixer("cutout", 10, seed=2)
    assert (cut.size, cut.fill) == (0.5, 0.0)
    assert mixstudy_train.study_mixer("mixup", 10, 2).alpha == 1.0
    ref = torch.Generator().manual_seed(1_000_003 * 2 + 17)
    assert torch.equal(cut.generator.get_state(), ref.get_state())
    assert mixstudy_train.MIXER_NAMES == ("none", *MIXER_NAMES)
    assert mixstudy_train.make_mixer is mixstudy_train.study_mixer
