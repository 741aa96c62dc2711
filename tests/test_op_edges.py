"""The compiled ops at the edges of their input space, on every backend: targets outside the
model's classes, K = 0, devices mixed up, uint8 blends beyond [0, 255], softmax precision at
large log-partition values and more values of C than one CUDA grid holds. Each CPU test has its
CUDA twin (the same body on ``devices()``)."""

import os
import subprocess
import sys

import pytest
import torch

from pyrobust import reference
from tests.conftest import devices, needs_cuda

probe_ops = pytest.importorskip("pyrobust.ops.probe")
mix_ops = pytest.importorskip("pyrobust.ops.mix")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _probe_args(n, m, k, device, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, m, k, generator=g, dtype=dtype) * 3
    d = torch.randn(n, m, k, generator=g, dtype=dtype)
    w = torch.rand(n, generator=g, dtype=dtype) + 0.5
    step = torch.linspace(0, 1, m, dtype=torch.float64)
    return z.to(device), d.to(device), w.to(device), step.to(device)


def _solve_args(y, k, device):
    n, d, m = y.numel(), 3, 2
    X = torch.randn(n, d, dtype=torch.float64)
    f64 = dict(dtype=torch.float64, device=device)
    return (X.to(device), y.to(device), torch.ones(n, **f64), torch.tensor([0.1, 0.01], **f64),
            torch.zeros(m, d, k, **f64), torch.zeros(m, k, **f64), torch.zeros(d, **f64),
            torch.ones(d, **f64), torch.eye(d, **f64), torch.ones(d, **f64), 1e-6, 20, 5, 0)


# --- targets outside the model's classes ---------------------------------------------------------

@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("k, bad", [(3, 3), (3, -1), (10, 1010), (3, -10**8), (1, 2), (1, -3), (1, 5)])
def test_probe_kernels_refuse_targets_outside_the_classes(device, k, bad):
    z, d, w, step = _probe_args(4, 2, k, device)
    y = torch.tensor([0, 1 if k > 1 else 0, bad, 0], device=device)
    match = "target should hold" + (" 0 or 1" if k == 1 else " class indices")
    with pytest.raises(ValueError, match=match):
        probe_ops.loss_grad(z, y, w)
    with pytest.raises(ValueError, match=match):
        probe_ops.line_stats(z, d, y, w, step)
    with pytest.raises(ValueError, match=match):
        probe_ops.solve(*_solve_args(y, k, device))


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("k", [1, 4])
def test_unchecked_probe_kernels_give_nan_for_a_bad_target(device, k):
    # check_target=False (the solver's calls, its targets checked once) never reads outside a row:
    # the bad row's loss is NaN, the other rows' gradients are untouched.
    z, d, w, step = _probe_args(5, 2, k, device)
    y = torch.tensor([0, 1, 7, 0, 1], device=device)
    grad, stats = probe_ops.loss_grad(z, y, w, check_target=False)
    assert torch.isnan(stats[:, 0]).all()
    assert torch.isnan(grad[2]).all()
    good = torch.tensor([0, 1, 3, 4], device=device)
    rgrad, _ = reference.probe_loss_grad(z[good].cpu(), y[good].cpu(), w[good].cpu())
    torch.testing.assert_close(grad[good].cpu(), rgrad, atol=1e-12, rtol=1e-12)
    line = probe_ops.line_stats(z, d, y, w, step, check_target=False)
    assert torch.isnan(line[:, 0]).all()


@pytest.mark.parametrize("device", devices())
def test_probe_kernels_refuse_zero_classes(device):
    z = torch.zeros(64, 1, 0, dtype=torch.float64, device=device)
    y = torch.arange(64, device=device)
    w = torch.ones(64, dtype=torch.float64, device=device)
    step = torch.zeros(1, dtype=torch.float64, device=device)
    with pytest.raises(ValueError, match="K >= 1"):
        probe_ops.loss_grad(z, y, w)
    with pytest.raises(ValueError, match="K >= 1"):
        probe_ops.line_stats(z, z, y, w, step)
    with pytest.raises(ValueError, match="K >= 1"):
        probe_ops.solve(*_solve_args(torch.zeros(8, dtype=torch.long), 0, device))


# --- softmax precision ---------------------------------------------------------------------------

@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("k", [10, 100])
def test_softmax_precision_at_large_log_partition(device, k):
    # Confident heads at weak regularisation have |lse| of tens (here ~40-60, where float32's
    # rounding of lse alone would be 2e-6 relative in every p): p must stay within 1e-6
    # (relative) of float64 and every row of the gradient sum to 0 within 1e-6 w.
    g = torch.Generator().manual_seed(k)
    z64 = torch.randn(256, 3, k, generator=g, dtype=torch.float64) * 4
    z64 += torch.tensor([-45.0, 40.0, 60.0], dtype=torch.float64).view(1, 3, 1)
    y = torch.randint(0, k, (256,), generator=g)
    w = torch.rand(256, generator=g) + 0.5
    grad, stats = probe_ops.loss_grad(z64.float().to(device), y.to(device), w.to(device))
    grad = grad.cpu().double()
    rgrad, rstats = reference.probe_loss_grad(z64.float().double(), y, w.double())
    # p itself off the target class (g = w p there): within 1e-6 relative, plus what rounding
    # z - max to float32 costs a small p (exp of an argument off by |log p| 2^-24), down to
    # float32's smallest normal numbers. At the target, g = w (p - 1) holds p - 1 to within
    # float32's absolute rounding.
    on_target = torch.nn.functional.one_hot(y, k).bool().unsqueeze(1).expand_as(grad)
    wv = w.double().view(-1, 1, 1).expand_as(grad)
    p, p_ref = grad[~on_target] / wv[~on_target], rgrad[~on_target] / wv[~on_target]
    normal = p_ref > 1e-37
    rel = (p - p_ref)[normal].abs() / p_ref[normal]
    assert (rel <= 1e-6 + 2**-24 * p_ref[normal].log().abs()).all(), rel.max().item()
    if (~normal).any():
        assert (p - p_ref)[~normal].abs().max().item() <= 1e-37
    assert ((grad - rgrad)[on_target].abs() / wv[on_target]).max().item() <= 1e-6
    row_sums = grad.sum(-1).abs() / w.double().view(-1, 1)
    assert row_sums.max().item() <= 1e-6
    torch.testing.assert_close(stats.cpu()[:, 0], rstats[:, 0], rtol=1e-6, atol=0)


@needs_cuda
def test_cuda_probe_kernels_take_more_c_than_one_grid():
    # The CUDA grid holds 65,535 values of C in its y dimension; more are launched in slices.
    z, d, w, step = _probe_args(9, 70_000, 2, "cpu", dtype=torch.float32, seed=4)
    y = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1, 1])
    grad, stats = probe_ops.loss_grad(z.cuda(), y.cuda(), w.cuda())
    cgrad, cstats = probe_ops.loss_grad(z, y, w)
    torch.testing.assert_close(grad.cpu(), cgrad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(stats.cpu(), cstats, atol=1e-6, rtol=1e-5)
    line = probe_ops.line_stats(z.cuda(), d.cuda(), y.cuda(), w.cuda(), step.cuda())
    torch.testing.assert_close(line.cpu(), probe_ops.line_stats(z, d, y, w, step), atol=1e-5, rtol=1e-4)


# --- devices mixed up ----------------------------------------------------------------------------

@needs_cuda
def test_cuda_ops_name_the_argument_on_the_wrong_device():
    images = torch.rand(4, 3, 8, 8)
    partner = torch.tensor([1, 0, 3, 2])
    params = torch.tensor([[0.5, 0, 0, 0, 0, 0]] * 4)
    out = torch.empty(4, 3, 8, 8, device="cuda")
    with pytest.raises(RuntimeError, match="images and out should be on one CUDA device"):
        torch.ops.pyrobust.mix.out(images, partner, params, "constant", False, None, out=out)
    with pytest.raises(RuntimeError, match="images and out should be on one CUDA device"):
        torch.ops.pyrobust.mix.out(images.cuda(), partner, params, "constant", False, None,
                                   out=torch.empty(4, 3, 8, 8))
    z, d, w, step = _probe_args(4, 2, 3, "cpu")
    y = torch.tensor([0, 1, 2, 0])
    with pytest.raises(RuntimeError, match="logits should be on the CUDA device"):
        probe_ops.line_stats(z, d, y, w, step.cuda())


# --- uint8 blends beyond [0, 255] ----------------------------------------------------------------

def _out_of_range_case():
    # Constant mode with a user lam outside [0, 1]: blends below 0 and above 255. Rows of 77
    # values (an AVX2 body of 64 and a tail), NCHW and channels_last.
    g = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, (6, 3, 5, 77), generator=g, dtype=torch.uint8)
    partner = torch.tensor([1, 0, 3, 2, 5, 4])
    lam = torch.tensor([1.7, -0.6, 2.5, -1.5, 40.0, -40.0])
    params = torch.zeros(6, 6)
    params[:, 0] = lam
    return images, partner, params


_SATURATION_SCRIPT = """
import sys, torch
from pyrobust.ops import mix as mix_ops
from tests.test_op_edges import _out_of_range_case
images, partner, params = _out_of_range_case()
for fmt in (torch.contiguous_format, torch.channels_last):
    x = images.contiguous(memory_format=fmt)
    torch.save(mix_ops.mix(x, partner, params, "constant", False, None), sys.argv[1] + str(fmt))
"""


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("channels_last", [False, True])
def test_uint8_blends_saturate(device, channels_last):
    images, partner, params = _out_of_range_case()
    expected = reference.mix(images, partner, params, "constant")
    x = images.to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out = mix_ops.mix(x, partner, params, "constant", False, None).cpu()
    assert (out.int() - expected.int()).abs().max().item() <= 1
    # integer weights blend exactly: the bounds or the exact value, on every path
    assert (out[4:].int() - expected[4:].int()).abs().max().item() == 0


def test_uint8_blends_saturate_on_the_portable_rows(tmp_path):
    # ATEN_CPU_CAPABILITY=default keeps the uint8 rows off AVX2, so the portable loop is tested.
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default")
    prefix = str(tmp_path / "portable")
    proc = subprocess.run([sys.executable, "-c", _SATURATION_SCRIPT, prefix], env=env,
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    images, partner, params = _out_of_range_case()
    expected = reference.mix(images, partner, params, "constant")
    for fmt in (torch.contiguous_format, torch.channels_last):
        out = torch.load(prefix + str(fmt))
        assert (out.int() - expected.int()).abs().max().item() <= 1
        assert (out[4:].int() - expected[4:].int()).abs().max().item() == 0
