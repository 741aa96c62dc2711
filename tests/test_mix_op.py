"""The mixing ops (``torch.ops.pyrobust.mix*``) against the float64 reference in ``pyrobust.reference``."""

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyrobust import reference
from pyrobust.ops import mix as mix_ops
from tests.conftest import needs_cuda
from tests.mix_helpers import (DTYPES, LARGE_UINT8, check_close, check_uint8_rounding, large_uint8_case, random_images,
                               random_params)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(0, 5),
    c=st.integers(1, 4),
    h=st.integers(1, 13),
    w=st.integers(1, 13),
    dtype=st.sampled_from(DTYPES),
    channels_last=st.booleans(),
    mode=st.sampled_from(mix_ops.MASK_MODES),
    invert=st.booleans(),
    use_fill=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_mix_matches_reference(n, c, h, w, dtype, channels_last, mode, invert, use_fill, seed):
    x = random_images(n, c, h, w, dtype, channels_last, seed=seed)
    partner = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))
    params = random_params(n, h, w, mode, seed)
    fill = (77.0 if dtype == torch.uint8 else 0.3) if use_fill else None
    out = mix_ops.mix(x, partner, params, mode, invert, fill)
    expected = reference.mix(x, partner, params, mode, invert, fill)
    assert out.dtype == x.dtype and out.shape == x.shape
    if channels_last and n:
        assert out.is_contiguous(memory_format=torch.channels_last)
    check_close(out, expected, dtype)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("use_fill", [False, True])
def test_large_float32_batch_matches_reference(channels_last, use_fill):
    # float32 outputs of 8 MiB and more take the CPU kernel's streaming-store path; an odd width
    # leaves rows that start off the 16-byte grid, and sample 2 is its own partner (a copy).
    n, c, h, w = 4, 3, 419, 421
    assert n * c * h * w * 4 >= 8 << 20
    x = random_images(n, c, h, w, torch.float32, channels_last, seed=5)
    partner = torch.tensor([1, 0, 2, 1])
    params = random_params(n, h, w, "gaussian", seed=6)
    fill = 0.3 if use_fill else None
    out = mix_ops.mix(x, partner, params, "gaussian", False, fill)
    check_close(out, reference.mix(x, partner, params, "gaussian", False, fill), torch.float32)
    if not use_fill:
        assert torch.equal(out[2], x[2])


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("use_fill", [False, True])
@pytest.mark.parametrize("mode", mix_ops.MASK_MODES)
@pytest.mark.parametrize("invert", [False, True])
def test_uint8_rows_round_to_nearest(channels_last, use_fill, mode, invert):
    # Rows of 71 and 213 values: the CPU's 32-wide uint8 loop, then its scalar tail.
    n, c, h, w = 5, 3, 37, 71
    x = random_images(n, c, h, w, torch.uint8, channels_last, seed=11)
    partner = torch.tensor([3, 0, 2, 4, 1])
    params = random_params(n, h, w, mode, seed=12)
    fill = 301.0 if use_fill else None  # saturated to 255
    out = mix_ops.mix(x, partner, params, mode, invert, fill)
    check_close(out, reference.mix(x, partner, params, mode, invert, fill), torch.uint8)
    check_uint8_rounding(out, x, partner, params, mode, invert, fill)
    if not use_fill:
        assert torch.equal(out[2], x[2])  # its own partner: copied


@pytest.mark.parametrize("lam", [-3.0, 5.0, 1e12, -1e12, -1e30])
def test_uint8_rows_saturate_a_lambda_outside_0_1(lam):
    # MixUp with a user's lam beyond [0, 1] (the constant mode takes it): lam a + (1 - lam) b
    # saturated to [0, 255] on rows of 71 values (the 32-wide loop and the tail), including blends
    # far beyond int32's range, whose float -> int conversion the clamp guards.
    n, c, h, w = 4, 3, 5, 71
    x = random_images(n, c, h, w, torch.uint8, seed=13)
    partner = torch.tensor([1, 2, 3, 0])
    params = torch.zeros(n, 6)
    params[:, 0] = lam
    out = mix_ops.mix(x, partner, params, "constant")
    a, b = x.double(), x[partner].double()
    expected = (b + lam * (a - b)).clamp(0, 255)  # whole numbers: no rounding to argue about
    assert torch.equal(out, expected.to(torch.uint8))
    assert ((expected == 0) | (expected == 255)).any() and (expected == a).any()


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("fill", [None, 77.0])
def test_large_uint8_batch_rounds_to_nearest(channels_last, fill):
    assert math.prod(LARGE_UINT8) >= 8 << 20
    x, partner, params = large_uint8_case(channels_last)
    out = mix_ops.mix(x, partner, params, "gaussian", False, fill)
    check_uint8_rounding(out, x, partner, params, "gaussian", False, fill)
    if fill is None:
        assert torch.equal(out[6], x[6])


_PORTABLE_UINT8_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from pyrobust.ops import mix as mix_ops
    from tests.mix_helpers import check_uint8_rounding, large_uint8_case
    x, partner, params = large_uint8_case()
    out = mix_ops.mix(x, partner, params, "gaussian", False, None)
    check_uint8_rounding(out, x, partner, params, "gaussian", False, None)
    torch.save(out, sys.argv[1])
    """
)


def test_uint8_portable_rows_round_to_nearest(tmp_path):
    # ATEN_CPU_CAPABILITY=default keeps the uint8 rows off AVX2: the portable loop, which rounds
    # three times where the AVX2 rows round once, meets the same bound; on an AVX2 machine the two
    # differ by one level at a few near-ties of these 8.5M values (so the switch took effect).
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default")
    path = tmp_path / "portable.pt"
    proc = subprocess.run([sys.executable, "-c", _PORTABLE_UINT8_SCRIPT, str(path)], env=env,
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    portable = torch.load(path)
    x, partner, params = large_uint8_case()
    here = mix_ops.mix(x, partner, params, "gaussian", False, None)
    diff = (here.int() - portable.int()).abs()
    assert diff.max().item() <= 1
    if torch.backends.cpu.get_cpu_capability() != "DEFAULT":
        assert 0 < (diff > 0).sum().item() < 1e-3 * diff.numel()


@pytest.mark.parametrize("mode", mix_ops.MASK_MODES)
@pytest.mark.parametrize("invert", [False, True])
def test_mask_and_lambda_match_reference(mode, invert):
    params = random_params(7, 11, 17, mode, seed=3)
    masks = mix_ops.mix_mask(params, mode, invert, 11, 17)
    expected = reference.mix_mask(params, mode, invert, 11, 17)
    assert masks.shape == (7, 11, 17) and masks.dtype == torch.float32
    torch.testing.assert_close(masks.double(), expected, atol=2e-6, rtol=0)
    lam = mix_ops.mix_lambda(params, mode, invert, 11, 17)
    torch.testing.assert_close(lam.double(), expected.mean((1, 2)), atol=1e-6, rtol=0)


def test_gaussian_centres_far_off_the_image():
    # The CPU walks a Gaussian row from the pixel nearest its centre; a centre beyond int64's
    # range once made that pixel wrong and the row NaN.
    params = torch.tensor([[1e19, 3.0, 50.0, 4.0, 0, 0], [-1e30, 3.0, 1e29, 4.0, 0, 0], [230.0, 3.0, 9.0, 4.0, 0, 0]])
    masks = mix_ops.mix_mask(params, "gaussian", False, 6, 224)
    torch.testing.assert_close(masks.double(), reference.mix_mask(params, "gaussian", False, 6, 224), atol=1e-6, rtol=0)
    assert torch.isfinite(mix_ops.mix_lambda(params, "gaussian", False, 6, 224)).all()


def test_non_contiguous_input_is_handled():
    x = random_images(4, 3, 10, 12, torch.float32)[:, :, ::2, 1:]
    partner, params = torch.tensor([2, 3, 0, 1]), random_params(4, 5, 11, "gaussian")
    out = mix_ops.mix(x, partner, params, "gaussian")
    check_close(out, reference.mix(x, partner, params, "gaussian"), torch.float32)


def _layouts():
    """4-D tensors of many stride patterns: permuted, sliced, expanded, with 1- and 0-sized dims."""
    base = torch.zeros(2, 3, 4, 5)
    for perm in ((0, 1, 2, 3), (0, 2, 3, 1), (0, 3, 1, 2), (1, 0, 2, 3), (3, 2, 1, 0), (0, 1, 3, 2)):
        x = base.permute(*perm).contiguous().permute(*[perm.index(d) for d in range(4)])
        yield x
        yield x[:, :, ::2]
        yield x[:, 1:, :, 1:]
        yield x[:1]
        yield x[:, :1]
        yield x[:, :, :1, :1]
        yield x[:0]
    yield torch.zeros(3, 4, 5).expand(6, 3, 4, 5)  # a sample broadcast over the batch (the collate's case)
    yield torch.zeros(4, 5, 3).permute(2, 0, 1).expand(6, 3, 4, 5)  # a channels-last sample broadcast
    yield torch.zeros(2, 1, 4, 5).expand(2, 3, 4, 5)  # a broadcast channel
    yield torch.zeros(4, 1, 1, 1)
    yield torch.zeros(4, 1, 1, 6)[..., :1]
    yield torch.zeros(1, 3, 1, 5).transpose(1, 3)


def test_suggest_memory_format_is_atens():
    # pyrobust's own (no symbolic-shape import) against torch's Python mirror of ATen's and against
    # what the functional op gives a non-dense input (ATen's suggest_memory_format).
    for x in _layouts():
        ours = mix_ops.suggest_memory_format(x)
        assert ours == torch._prims_common.suggest_memory_format(x), (x.shape, x.stride())
        if x.numel() and x.shape[1] == 3:
            n, _, h, w = x.shape
            out = mix_ops.mix(x, torch.arange(n), random_params(n, h, w, "gaussian"), "gaussian")
            assert out.is_contiguous(memory_format=ours), (x.shape, x.stride(), out.stride())
    assert mix_ops.suggest_memory_format(torch.zeros(3, 4, 5)) == torch.contiguous_format


def test_out_buffer_is_reused_and_aliasing_refused():
    x = random_images(3, 3, 8, 8, torch.float32)
    partner, params = torch.tensor([1, 2, 0]), random_params(3, 8, 8, "trapezoid")
    buf = torch.empty_like(x)
    out = mix_ops.mix(x, partner, params, "trapezoid", out=buf)
    assert out.data_ptr() == buf.data_ptr()
    check_close(buf, reference.mix(x, partner, params, "trapezoid"), torch.float32)
    with pytest.raises(RuntimeError, match="alias"):
        mix_ops.mix(x, partner, params, "trapezoid", out=x)
    # an output overlapping the input in part (views of one buffer, one sample apart)
    whole = torch.empty(4, 3, 8, 8)
    whole[:3] = x
    with pytest.raises(RuntimeError, match="alias"):
        mix_ops.mix(whole[:3], partner, params, "trapezoid", out=whole[1:])
    with pytest.raises(RuntimeError, match="shape"):
        mix_ops.mix(x, partner, params, "trapezoid", out=torch.empty(3, 3, 8, 9))


def test_op_rejects_bad_arguments():
    x = random_images(2, 3, 4, 4, torch.float32)
    p = random_params(2, 4, 4, "gaussian")
    with pytest.raises(RuntimeError, match="partner\\[1\\]"):
        mix_ops.mix(x, torch.tensor([0, 5]), p, "gaussian")
    with pytest.raises(ValueError, match="mode"):
        mix_ops.mix(x, torch.tensor([1, 0]), p, "hexagon")
    with pytest.raises(RuntimeError, match="params"):
        mix_ops.mix(x, torch.tensor([1, 0]), p[:, :4], "gaussian")
    with pytest.raises(RuntimeError, match="4-D"):
        mix_ops.mix(x[0], torch.tensor([1, 0]), p, "gaussian")


@pytest.mark.parametrize("mode", mix_ops.MASK_MODES)
def test_opcheck(mode):
    x = random_images(3, 2, 5, 6, torch.float32)
    partner, params = torch.tensor([2, 0, 1]), random_params(3, 5, 6, mode)
    x.requires_grad_(True)
    torch.library.opcheck(torch.ops.pyrobust.mix.default, (x, partner, params, mode, False, None))
    torch.library.opcheck(torch.ops.pyrobust.mix.default, (x, partner, params, mode, True, 0.5))
    torch.library.opcheck(torch.ops.pyrobust.mix_mask.default, (params, mode, False, 5, 6))
    torch.library.opcheck(torch.ops.pyrobust.mix_lambda.default, (params, mode, True, 5, 6))
    labels = torch.tensor([1, 0, 3])
    torch.library.opcheck(torch.ops.pyrobust.mix_targets.default, (x, labels, partner, params, mode, True, 4, 0.1, True))


def expected_targets(labels, partner, params, mode, invert, h, w, k, smoothing, mix_labels):
    """lam from the reference masks (1 where unmixed) and the reference targets, float64."""
    n = labels.shape[0]
    unmixed = (partner == torch.arange(n)) | (not mix_labels)
    lam = torch.where(unmixed, 1.0, reference.mix_mask(params, mode, invert, h, w).mean((1, 2)))
    return reference.mixed_targets(labels, partner, lam, k, smoothing), lam


@pytest.mark.parametrize("mode", mix_ops.MASK_MODES)
@pytest.mark.parametrize("invert", [False, True])
@pytest.mark.parametrize("smoothing,mix_labels", [(0.0, True), (0.1, True), (0.2, False)])
def test_mix_targets_match_reference(mode, invert, smoothing, mix_labels):
    n, h, w, k = 9, 13, 7, 5
    x = random_images(n, 3, h, w, torch.float32)
    labels = torch.tensor([0, 4, 2, 2, 1, 3, 0, 4, 2])
    partner = torch.tensor([3, 1, 3, 2, 8, 0, 6, 5, 4])  # self-pairs 1, 3, 6; 2 and 3 share a class
    params = random_params(n, h, w, mode)
    targets, lam = mix_ops.mix_targets(x, labels, partner, params, mode, invert, k, smoothing, mix_labels)
    expected, expected_lam = expected_targets(labels, partner, params, mode, invert, h, w, k, smoothing, mix_labels)
    assert targets.dtype == lam.dtype == torch.float32 and targets.shape == (n, k)
    torch.testing.assert_close(lam.double(), expected_lam, atol=1e-6, rtol=0)
    torch.testing.assert_close(targets.double(), expected, atol=1e-6, rtol=0)
    # lam of a mixed sample is mix_lambda's, bit for bit; int32 labels give the same targets
    mixed = partner != torch.arange(n)
    if mix_labels:
        assert torch.equal(lam[mixed], mix_ops.mix_lambda(params, mode, invert, h, w)[mixed])
    assert torch.equal(mix_ops.mix_targets(x, labels.int(), partner, params, mode, invert, k, smoothing, mix_labels)[0], targets)


def test_mix_targets_rejects_bad_arguments():
    x = random_images(3, 1, 4, 4, torch.float32)
    partner, params = torch.tensor([1, 2, 0]), random_params(3, 4, 4, "gaussian")
    call = lambda labels, k=5, s=0.0, p=partner: mix_ops.mix_targets(x, labels, p, params, "gaussian", False, k, s)
    with pytest.raises(ValueError, match="got 5"):
        call(torch.tensor([0, 5, 1]))
    with pytest.raises(ValueError, match="got -2"):
        call(torch.tensor([0, -2, 9]))
    with pytest.raises(ValueError, match="length N=3"):
        call(torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="integer"):
        call(torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="num_classes"):
        call(torch.tensor([0, 0, 0]), k=0)
    with pytest.raises(ValueError, match="label_smoothing"):
        call(torch.tensor([0, 0, 0]), s=1.0)
    with pytest.raises(RuntimeError, match="partner\\[2\\]"):
        call(torch.tensor([0, 0, 0]), p=torch.tensor([1, 2, 3]))
    empty = mix_ops.mix_targets(x[:0], torch.zeros(0, dtype=torch.long), partner[:0], params[:0], "gaussian", False, 5, 0.0)
    assert empty[0].shape == (0, 5) and empty[1].shape == (0,)


@pytest.mark.parametrize("fill", [None, 0.25])
def test_gradcheck(fill):
    x = random_images(4, 2, 5, 4, torch.float64).requires_grad_(True)
    partner = torch.tensor([1, 1, 3, 0])  # not a permutation: gradients must accumulate
    params = random_params(4, 5, 4, "gaussian")
    assert torch.autograd.gradcheck(lambda t: mix_ops.mix(t, partner, params, "gaussian", False, fill), (x,))
    # The backward is the op itself, so it is differentiable in turn.
    assert torch.autograd.gradgradcheck(lambda t: mix_ops.mix(t, partner, params, "gaussian", False, fill), (x,))
    xl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: mix_ops.mix(t, partner, params, "gaussian", True, fill), (xl,))


def test_non_finite_fill_is_refused():
    x = random_images(2, 1, 3, 3, torch.float32)
    params = random_params(2, 3, 3, "trapezoid")
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="fill should be finite"):
            mix_ops.mix(x, torch.tensor([1, 0]), params, "trapezoid", True, bad)


def test_autograd_graph_only_when_needed():
    x = random_images(3, 2, 4, 4, torch.float32)
    partner, params = torch.tensor([2, 0, 1]), random_params(3, 4, 4, "trapezoid")
    assert mix_ops.mix(x, partner, params, "trapezoid").grad_fn is None
    xg = x.clone().requires_grad_(True)
    with torch.no_grad():
        assert not mix_ops.mix(xg, partner, params, "trapezoid").requires_grad
    out = mix_ops.mix(xg, partner, params, "trapezoid")
    assert out.requires_grad and out.grad_fn is not None
    torch.testing.assert_close(out.detach(), mix_ops.mix(x, partner, params, "trapezoid"), rtol=0, atol=0)
    # params never get a gradient, but one that asks keeps the output in the graph.
    out = mix_ops.mix(x, partner, params.clone().requires_grad_(True), "trapezoid")
    assert out.requires_grad
    assert torch.autograd.grad(out.sum(), out)[0] is not None


def test_compile_fullgraph():
    x = random_images(4, 3, 8, 8, torch.float32)
    partner, params = torch.tensor([3, 2, 1, 0]), random_params(4, 8, 8, "gaussian")

    labels = torch.tensor([0, 1, 1, 2])

    def step(images):
        lam = mix_ops.mix_lambda(params, "gaussian", False, 8, 8)
        targets, _ = mix_ops.mix_targets(images, labels, partner, params, "gaussian", False, 3)
        return mix_ops.mix(images, partner, params, "gaussian") * 2, lam, targets

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    for got, expected in zip(compiled(x), step(x)):
        torch.testing.assert_close(got, expected)

    # The one-op mixing call: a composite of the three, traced through them (global RNG here).
    def whole(images):
        return mix_ops.mix_batch(images, labels, "circle", [0.25, 0.5, 0.0], 1.0, True, "permute",
                                 None, "gaussian", False, None, 3)

    torch.manual_seed(3)
    expected = whole(x)
    torch.manual_seed(3)
    for got, want in zip(torch.compile(whole, fullgraph=True, backend="aot_eager")(x), expected):
        assert torch.equal(got, want)

    # Backward through the compiled graph: the op's autograd (C++) is traced into it.
    xg = x.clone().requires_grad_(True)
    compiled(xg)[0].square().sum().backward()
    xe = x.clone().requires_grad_(True)
    step(xe)[0].square().sum().backward()
    torch.testing.assert_close(xg.grad, xe.grad)


def test_mix_draw_follows_its_stream_and_definitions():
    args = {"circle": [0.25, 0.5, 0.0], "square": [0.0, 1.0, 0.2], "cutmix": [1.0], "mixup": [0.4],
            "cutout": [6.0, 0.0]}
    for family, a in args.items():
        gen = torch.Generator().manual_seed(11)
        first = mix_ops.mix_draw(64, 20, 30, family, a, 0.5, True, "permute", family != "cutout", gen)
        again = mix_ops.mix_draw(64, 20, 30, family, a, 0.5, True, "permute", family != "cutout",
                                 torch.Generator().manual_seed(11))
        later = mix_ops.mix_draw(64, 20, 30, family, a, 0.5, True, "permute", family != "cutout", gen)
        assert all(torch.equal(u, v) for u, v in zip(first, again))  # same seed, same draws
        assert not torch.equal(first[1], later[1])  # the generator moves on
        partner, params, active = first
        assert partner.dtype == torch.long and params.dtype == torch.float32 and active.dtype == torch.bool
        assert 0 < int(active.sum()) < 64
        assert torch.equal(partner[~active], torch.arange(64)[~active])  # unmixed: paired with itself
        if family == "cutout":
            assert (params[~active] == 0).all() and (params[active, 2] > 0).all()  # empty boxes
    # boxes: integer corners inside the image; MixUp's lam follows Beta(alpha, alpha)
    _, boxes, _ = mix_ops.mix_draw(500, 20, 30, "cutmix", [1.0], generator=torch.Generator().manual_seed(1))
    x0, x1 = boxes[:, 0] - boxes[:, 2], boxes[:, 0] + boxes[:, 2]
    y0, y1 = boxes[:, 1] - boxes[:, 3], boxes[:, 1] + boxes[:, 3]
    for lo, hi, size in ((x0, x1, 30), (y0, y1, 20)):
        assert (lo >= 0).all() and (hi <= size).all() and torch.equal(lo, lo.round()) and torch.equal(hi, hi.round())
    for alpha in (0.4, 1.0, 2.5):  # var of Beta(a, a) = 1 / (4 (2a + 1)); a = 1 is drawn as a uniform
        _, lam, _ = mix_ops.mix_draw(20000, 4, 4, "mixup", [alpha], generator=torch.Generator().manual_seed(2))
        lam = lam[:, 0].double()
        assert abs(lam.mean().item() - 0.5) < 0.01 and abs(lam.var().item() - 1 / (4 * (2 * alpha + 1))) < 0.005
    # per batch: one draw for every sample; fixed pairings need no generator
    partner, params, _ = mix_ops.mix_draw(5, 8, 8, "square", args["square"], per_sample=False, pairing="roll")
    assert (params == params[0]).all() and partner.tolist() == [4, 0, 1, 2, 3]
    for bad, match in ((("hexagon", [1.0]), "family"), (("mixup", [1.0, 2.0]), "args"), (("mixup", [0.0]), "alpha")):
        with pytest.raises(ValueError, match=match):
            mix_ops.mix_draw(4, 8, 8, *bad)
    with pytest.raises(ValueError, match="1.5"):
        mix_ops.mix_draw(4, 8, 8, "mixup", [1.0], p=1.5)
    with pytest.raises(ValueError, match="zip"):
        mix_ops.mix_draw(4, 8, 8, "mixup", [1.0], pairing="zip")


# --- CUDA against CPU ------------------------------------------------------------------------


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("mode", mix_ops.MASK_MODES)
@pytest.mark.parametrize("h,w", [(17, 23), (6, 301)])  # rows within and beyond one unrolled warp stride
def test_cuda_matches_cpu_and_reference(dtype, channels_last, mode, h, w):
    x = random_images(5, 3, h, w, dtype, channels_last)
    partner, params = torch.tensor([4, 2, 0, 1, 3]), random_params(5, h, w, mode)
    for invert, fill in [(False, None), (True, None), (True, 0.5)]:
        cpu = mix_ops.mix(x, partner, params, mode, invert, fill)
        gpu = mix_ops.mix(x.cuda(), partner.cuda(), params.cuda(), mode, invert, fill)
        check_close(gpu.cpu(), reference.mix(x, partner, params, mode, invert, fill), dtype)
        check_close(gpu.cpu(), cpu.double(), dtype)
    torch.testing.assert_close(mix_ops.mix_lambda(params.cuda(), mode, True, 17, 23).cpu(),
                               mix_ops.mix_lambda(params, mode, True, 17, 23))
    torch.testing.assert_close(mix_ops.mix_mask(params.cuda(), mode, False, 17, 23).cpu(),
                               mix_ops.mix_mask(params, mode, False, 17, 23), atol=1e-6, rtol=0)


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_edge_cases(dtype, channels_last):
    x = random_images(5, 3, 9, 11, dtype, channels_last)
    params = random_params(5, 9, 11, "trapezoid")
    # a sample paired with itself is copied bit for bit (1 and 3 here)
    partner = torch.tensor([4, 1, 0, 3, 2])
    gpu = mix_ops.mix(x.cuda(), partner.cuda(), params.cuda(), "trapezoid")
    for i in (1, 3):
        assert torch.equal(gpu[i].cpu(), x[i])
    check_close(gpu.cpu(), reference.mix(x, partner, params, "trapezoid"), dtype)
    # a fill value that float32 does not hold exactly, with and without inversion: the GPU and
    # the CPU write the same filled pixels
    for invert in (False, True):
        cpu = mix_ops.mix(x, partner, params, "trapezoid", invert, 0.3)
        gpu = mix_ops.mix(x.cuda(), partner.cuda(), params.cuda(), "trapezoid", invert, 0.3)
        check_close(gpu.cpu(), cpu.double(), dtype)
        check_close(gpu.cpu(), reference.mix(x, partner, params, "trapezoid", invert, 0.3), dtype)
        if dtype.is_floating_point:  # (uint8 may differ by one level at .5 ties under FMA)
            filled = cpu == torch.tensor(0.3, dtype=torch.float64).to(dtype)  # mask weight 0
            assert filled.any() or not invert  # inverted: the plateaus are filled
            assert torch.equal(gpu.cpu()[filled], cpu[filled])
    # out= on the device, and its refusals
    buf = torch.empty_like(x.cuda())
    out = mix_ops.mix(x.cuda(), partner.cuda(), params.cuda(), "trapezoid", out=buf)
    assert out.data_ptr() == buf.data_ptr() and torch.equal(out, gpu)
    with pytest.raises(RuntimeError, match="alias"):
        xg = x.cuda()
        mix_ops.mix(xg, partner.cuda(), params.cuda(), "trapezoid", out=xg)
    with pytest.raises(RuntimeError, match=r"partner should hold indices in \[0, 5\)"):
        mix_ops.mix(x.cuda(), torch.tensor([0, 1, 2, 3, 5]).cuda(), params.cuda(), "trapezoid")
    empty = mix_ops.mix(x[:0].cuda(), partner[:0].cuda(), params[:0].cuda(), "trapezoid")
    assert empty.shape == (0, 3, 9, 11) and empty.is_cuda


@needs_cuda
def test_cuda_op_takes_host_parameters():
    # the mixers' way: partner and params drawn on the host, checked there, copied with the launch
    x = random_images(5, 3, 9, 11, torch.float32, device="cuda")
    partner, params = torch.tensor([4, 2, 0, 1, 3]), random_params(5, 9, 11, "gaussian")
    host = mix_ops.mix(x, partner, params, "gaussian")
    device = mix_ops.mix(x, partner.cuda(), params.cuda(), "gaussian")
    assert host.is_cuda and torch.equal(host, device)
    with pytest.raises(RuntimeError, match=r"partner\[4\] should be in \[0, 5\)"):
        mix_ops.mix(x, torch.tensor([0, 1, 2, 3, 5]), params, "gaussian")
    xg = random_images(4, 2, 5, 4, torch.float64, device="cuda").requires_grad_(True)
    p4, q4 = torch.tensor([1, 1, 3, 0]), random_params(4, 5, 4, "trapezoid")
    assert torch.autograd.gradcheck(lambda t: mix_ops.mix(t, p4, q4, "trapezoid", True, None), (xg,))


@needs_cuda
@pytest.mark.parametrize("mode", mix_ops.MASK_MODES)
def test_cuda_mix_targets_match_cpu(mode):
    n, h, w, k = 9, 13, 300, 1100  # rows longer than a block, more classes than threads
    x = random_images(n, 3, h, w, torch.float32)
    labels = torch.tensor([0, 1099, 2, 2, 1, 3, 0, 4, 2])
    partner = torch.tensor([3, 1, 3, 2, 8, 0, 6, 5, 4])
    params = random_params(n, h, w, mode)
    for mix_labels in (True, False):
        expected = mix_ops.mix_targets(x, labels, partner, params, mode, True, k, 0.1, mix_labels)
        for yy, pp, qq in ((labels, partner, params), (labels.cuda(), partner, params),
                           (labels.int().cuda(), partner.cuda(), params.cuda())):
            got = mix_ops.mix_targets(x.cuda(), yy, pp, qq, mode, True, k, 0.1, mix_labels)
            assert got[0].device.type == got[1].device.type == "cuda"
            torch.testing.assert_close(got[1].cpu(), expected[1], atol=1e-6, rtol=0)
            torch.testing.assert_close(got[0].cpu(), expected[0], atol=1e-6, rtol=0)
    for position, value in ((8, 1100), (1, -1)):  # device labels: checked with one sync
        bad = labels.clone()
        bad[position] = value
        with pytest.raises(ValueError, match=f"got {value}"):
            mix_ops.mix_targets(x.cuda(), bad.cuda(), partner, params, mode, True, k, 0.1)
    with pytest.raises(RuntimeError, match="partner"):
        mix_ops.mix_targets(x.cuda(), labels, torch.full((n,), 9, device="cuda"), params, mode, True, k, 0.1)


@needs_cuda
def test_cuda_gradients():
    x = random_images(4, 2, 5, 4, torch.float64, device="cuda").requires_grad_(True)
    partner = torch.tensor([1, 1, 3, 0], device="cuda")
    params = random_params(4, 5, 4, "trapezoid").cuda()
    assert torch.autograd.gradcheck(lambda t: mix_ops.mix(t, partner, params, "trapezoid", True, None), (x,))


# -- mix_pairs_: the in-place flipped-pair mix -------------------------------------------------

def _pair_decisions(n, h, w, seed, mode=None, invert=None):
    """Per-sample params, modes (-1 left as is, or a random profile) and invert flags."""
    g = torch.Generator().manual_seed(seed)
    modes = torch.randint(-1, 3, (n,), generator=g) if mode is None else \
        torch.full((n,), mix_ops.MASK_MODES.index(mode), dtype=torch.long)
    flags = torch.randint(0, 2, (n,), generator=g).bool() if invert is None else torch.full((n,), invert)
    params = torch.zeros(n, mix_ops.MIX_PARAMS)
    for k, name in enumerate(mix_ops.MASK_MODES):
        rows = modes == k
        params[rows] = random_params(n, h, w, name, seed + k)[rows]
    return params, modes, flags


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(0, 7),
    c=st.integers(1, 4),
    h=st.integers(1, 13),
    w=st.integers(1, 13),
    dtype=st.sampled_from(DTYPES),
    channels_last=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_mix_pairs_matches_reference(n, c, h, w, dtype, channels_last, seed):
    x = random_images(n, c, h, w, dtype, channels_last, seed=seed)
    params, modes, invert = _pair_decisions(n, h, w, seed)
    expected = reference.mix_pairs(x, params, modes, invert)
    out = x.clone()
    assert mix_ops.mix_pairs_(out, params, modes, invert) is out
    check_close(out, expected, dtype)
    flip = torch.arange(n - 1, -1, -1)
    for k in range(n):  # untouched samples stay bit for bit
        if modes[k] < 0 or flip[k] == k:
            assert torch.equal(out[k], x[k])
    if channels_last and n:
        assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("mode", mix_ops.MASK_MODES)
@pytest.mark.parametrize("invert", [False, True])
def test_mix_pairs_equals_mix_with_the_flipped_batch(dtype, channels_last, mode, invert):
    # The same rows as mix(): bit for bit the functional op's result with partner = flip, the
    # middle sample of the odd batch copied. Rows of 71 and 213 values: uint8's 32-wide loop and
    # its tail.
    n, c, h, w = 5, 3, 37, 71
    x = random_images(n, c, h, w, dtype, channels_last, seed=13)
    params, modes, flags = _pair_decisions(n, h, w, 14, mode, invert)
    flip = torch.arange(n - 1, -1, -1)
    expected = mix_ops.mix(x, flip, params, mode, invert)
    out = mix_ops.mix_pairs_(x.clone(), params, modes, flags)
    assert torch.equal(out, expected)
    if dtype == torch.uint8:
        check_uint8_rounding(out, x, flip, params, mode, invert, None)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_mix_pairs_rows_longer_than_a_chunk(dtype):
    # channels_last rows of 3 * 2900 values: several of the kernel's chunks, and a partial one.
    # In the pair (2, 3), sample 3 is left as is while 2 mixes with it.
    n, c, h, w = 6, 3, 5, 2900
    x = random_images(n, c, h, w, dtype, True, seed=15)
    params, modes, flags = _pair_decisions(n, h, w, 16, "gaussian", True)
    modes[3] = -1
    out = mix_ops.mix_pairs_(x.clone(), params, modes, flags)
    check_close(out, reference.mix_pairs(x, params, modes, flags), dtype)
    assert torch.equal(out[3], x[3])


def test_mix_pairs_rejects_bad_arguments():
    x = random_images(4, 3, 5, 6, torch.float32)
    params, modes, flags = _pair_decisions(4, 5, 6, 0, "constant", False)
    with pytest.raises(RuntimeError, match="mixed in place"):
        mix_ops.mix_pairs_(x.transpose(2, 3), params, modes, flags)
    with pytest.raises(ValueError, match="modes"):
        mix_ops.mix_pairs_(x, params, torch.tensor([0, 1, 3, -1]), flags)
    with pytest.raises(RuntimeError, match="invert should be bool"):
        mix_ops.mix_pairs_(x, params, modes, flags.long())
    with pytest.raises(RuntimeError, match="params"):
        mix_ops.mix_pairs_(x, params[:3], modes, flags)


def test_mix_pairs_opcheck():
    x = random_images(5, 3, 5, 6, torch.float32)
    params, modes, flags = _pair_decisions(5, 5, 6, 1)
    # A mutating op returning nothing: schema, fake kernel, and functionalized under AOT dispatch.
    torch.library.opcheck(torch.ops.pyrobust.mix_pairs_.default, (x, params, modes, flags))
    torch.library.opcheck(torch.ops.pyrobust.mix_pairs_.default,
                          (x.contiguous(memory_format=torch.channels_last), params, modes, flags))


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("h,w", [(17, 23), (6, 301)])
def test_cuda_mix_pairs_matches_cpu(dtype, channels_last, h, w):
    for n in (5, 6):
        x = random_images(n, 3, h, w, dtype, channels_last, seed=n)
        params, modes, flags = _pair_decisions(n, h, w, n + 1)
        cpu = mix_ops.mix_pairs_(x.clone(), params, modes, flags)
        gpu = mix_ops.mix_pairs_(x.cuda(), params, modes, flags)  # host params travel with the launch
        check_close(gpu.cpu(), reference.mix_pairs(x, params, modes, flags), dtype)
        check_close(gpu.cpu(), cpu.double(), dtype)
        gpu = mix_ops.mix_pairs_(x.cuda(), params.cuda(), modes, flags)
        check_close(gpu.cpu(), cpu.double(), dtype)


def _misaligned_copy(x):
    """``x``'s values in a tensor whose data starts one byte off any vector boundary."""
    flat = torch.empty(x.numel() + 1, dtype=x.dtype, device=x.device)[1:]
    return flat.view(x.shape).copy_(x)


@needs_cuda
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("w", [224, 20, 21])  # 16-byte rows, 4-byte rows, byte rows
@pytest.mark.parametrize("fill", [None, 77.0])
def test_cuda_uint8_vector_rows_are_bit_identical(channels_last, w, fill):
    # Aligned rows take the 4- or 16-byte loads; the same values one byte off take the
    # byte-per-lane rows: the results agree bit for bit, and round as the CPU's rows do.
    n, c, h = 5, 3, 9
    x = random_images(n, c, h, w, torch.uint8, channels_last, device="cuda", seed=w)
    partner, params = torch.tensor([4, 2, 0, 1, 3]), random_params(n, h, w, "gaussian", seed=w)
    vec = mix_ops.mix(x, partner, params, "gaussian", False, fill)
    off = _misaligned_copy(x.contiguous())
    if channels_last:
        off = _misaligned_copy(x.permute(0, 2, 3, 1).contiguous()).permute(0, 3, 1, 2)
    assert off.data_ptr() % 4 != 0 and torch.equal(off, x)
    byte = mix_ops.mix(off, partner, params, "gaussian", False, fill)
    assert torch.equal(vec.cpu(), byte.cpu())
    check_uint8_rounding(vec.cpu(), x.cpu(), partner, params, "gaussian", False, fill)


# -- mix_gather.out: the mix of a list of samples ----------------------------------------------

@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("fill", [None, 0.25])
def test_mix_gather_equals_mix_of_the_stacked_batch(dtype, channels_last, fill):
    n, c, h, w = 5, 3, 9, 37
    x = random_images(n, c, h, w, dtype, channels_last, seed=17)
    partner, params = torch.tensor([3, 0, 2, 4, 1]), random_params(n, h, w, "gaussian", seed=18)
    expected = mix_ops.mix(x, partner, params, "gaussian", True, fill)
    for samples in ([x[i].clone() for i in range(n)],  # laid out as a row of the batch
                    [x[i].contiguous() for i in range(n)]):  # (C, H, W): copied first for a channels_last out
        out = torch.empty_like(x)
        mix_ops.mix_gather(samples, partner, params, "gaussian", True, fill, out=out)
        assert torch.equal(out, expected)


def test_mix_gather_rejects_bad_arguments():
    x = random_images(4, 3, 5, 6, torch.float32)
    partner, params = torch.tensor([1, 0, 3, 2]), random_params(4, 5, 6, "constant")
    samples = [x[i].clone() for i in range(4)]
    out = torch.empty_like(x)
    with pytest.raises(RuntimeError, match="samples should hold 4"):
        mix_ops.mix_gather(samples[:3], partner, params, "constant", out=out)
    with pytest.raises(RuntimeError, match=r"samples\[1\] should have shape"):
        mix_ops.mix_gather([samples[0], samples[1][:, :4]] + samples[2:], partner, params, "constant", out=out)
    with pytest.raises(RuntimeError, match=r"samples\[2\] should be"):
        mix_ops.mix_gather(samples[:2] + [samples[2].double()] + samples[3:], partner, params, "constant", out=out)
    with pytest.raises(RuntimeError, match=r"must not alias samples\[0\]"):
        mix_ops.mix_gather([out[0]] + samples[1:], partner, params, "constant", out=out)
    with pytest.raises(RuntimeError, match="partner"):
        mix_ops.mix_gather(samples, torch.tensor([1, 0, 3, 4]), params, "constant", out=out)
