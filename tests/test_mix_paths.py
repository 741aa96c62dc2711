"""Where users meet the mixers: the default call's reused outputs, torchvision v2, torch.compile."""

import pickle

import pytest
import torch

from pyrobust.augment import CutMix, MixUp, SmoothMix
from tests.mix_helpers import random_images


def make(seed=0, **kw):
    return SmoothMix(5, generator=torch.Generator().manual_seed(seed), **kw)


def batches(count, dtype=torch.float32):
    return [(random_images(6, 3, 10, 12, dtype, seed=s), torch.arange(6) % 5) for s in range(count)]


# -- the default call reuses only what nobody holds --------------------------------------------


def test_a_released_output_is_reused():
    mixer = make()
    (x1, y1), (x2, y2) = batches(2)
    first, _ = mixer(x1, y1)
    ptr = first.data_ptr()
    del first
    second, _ = mixer(x2, y2)
    assert second.data_ptr() == ptr


@pytest.mark.parametrize("hold", ["name", "view", "list", "numpy", "storage", "saved for backward"])
def test_a_held_output_is_never_overwritten(hold):
    mixer = make()
    data = batches(4)
    out, _ = mixer(*data[0])
    expected = out.clone()
    w = torch.ones((), requires_grad=True)
    kept = {"name": lambda: out, "view": lambda: out[1:, :, 2:],
            "list": lambda: [out], "numpy": lambda: out.numpy(),
            "storage": lambda: out.untyped_storage(),
            "saved for backward": lambda: (out * w).sum()}[hold]()
    ptr = out.data_ptr()
    if hold != "name":
        del out
    later = [mixer(x, y)[0] for x, y in data[1:]]  # the pool's buffers all in use at once
    assert all(t.data_ptr() != ptr for t in later)
    if hold == "saved for backward":
        kept.backward()  # d/dw sum(out * w) = sum(out): the saved output must be intact
        torch.testing.assert_close(w.grad, expected.sum(), rtol=0, atol=0)
    else:
        value = {"list": lambda: kept[0], "numpy": lambda: torch.from_numpy(kept),
                 "storage": lambda: torch.empty(0).set_(kept, 0, expected.shape, expected.stride())
                 }.get(hold, lambda: kept)()
        assert torch.equal(value, expected[1:, :, 2:] if hold == "view" else expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_both_loops_give_what_out_gives(dtype):
    data = batches(5, dtype)
    reference = make()
    buffer = torch.empty_like(data[0][0])
    expected = [tuple(t.clone() for t in reference(x, y, out=buffer)) for x, y in data]
    loop1, loop2 = make(), make()
    seen1, seen2 = [], []
    for (x, y), want in zip(data, expected):
        x, t = loop1(x, y)  # the previous output is released before the next call
        seen1.append(x.data_ptr())
        assert torch.equal(x, want[0]) and torch.equal(t, want[1])
    xm = None
    for (x, y), want in zip(data, expected):
        previous = None if xm is None else xm.clone()
        held = xm
        xm, t = loop2(x, y)  # the previous result is still bound while the next is made
        assert torch.equal(xm, want[0]) and torch.equal(t, want[1])
        if held is not None:
            assert torch.equal(held, previous) and held.data_ptr() != xm.data_ptr()
        seen2.append(xm.data_ptr())
        del held
    assert len(set(seen1)) == 1  # one buffer, reused every time
    assert len(set(seen2)) == 2  # two buffers, alternating


def test_outputs_sent_to_another_process_leave_the_pool():
    mixer = make()
    (x1, y1), (x2, y2) = batches(2)
    out, _ = mixer(x1, y1)
    out.share_memory_()  # what a DataLoader worker does to send it
    del out
    mixer(x2, y2)
    buffers = [b for group in mixer._outputs._buffers.values() for b in group]
    assert buffers and not any(b.is_shared() for b in buffers)


def test_paths_that_allocate():
    (x, y), = batches(1)
    # autograd needs the functional op; so does reuse_outputs=False
    xg = x.clone().requires_grad_(True)
    out, _ = make()(xg, y)
    assert out.grad_fn is not None
    fresh = make(reuse_outputs=False)
    a, _ = fresh(x, y)
    assert not fresh._outputs._buffers
    with torch.inference_mode():
        b, _ = make()(x, y)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # a mixer pickles (DataLoader workers) without its buffers, and mixes the same afterwards
    mixer = make()
    mixer(x, y)
    copy = pickle.loads(pickle.dumps(mixer))
    assert not copy._outputs._buffers
    assert torch.equal(copy(x, y)[0], mixer(x, y)[0])


# -- torchvision v2 ----------------------------------------------------------------------------


def test_mixers_stand_in_torchvision_v2_pipelines():
    v2 = pytest.importorskip("torchvision.transforms.v2")
    tv_tensors = pytest.importorskip("torchvision.tv_tensors")
    x = random_images(4, 3, 8, 8, torch.float32)
    y = torch.tensor([0, 1, 2, 0])
    for pipeline in (v2.RandomChoice([CutMix(3), SmoothMix(3), v2.MixUp(num_classes=3)]),
                     v2.Compose([MixUp(3)])):
        for _ in range(4):
            images, targets = pipeline(x, y)  # v2's two-argument form
            assert images.shape == x.shape and targets.shape == (4, 3)
            sample = pipeline((tv_tensors.Image(x), y))  # one sample, as v2 passes it on
            assert type(sample) is tuple and type(sample[0]) is tv_tensors.Image
    gen = lambda: torch.Generator().manual_seed(1)
    assert torch.equal(SmoothMix(3, generator=gen())((x, y))[0], SmoothMix(3, generator=gen())(x, y)[0])
    assert type(SmoothMix(3)([x, y])) is list
    with pytest.raises(TypeError, match="3 items"):
        SmoothMix(3)((x, y, y))
    with pytest.raises(TypeError, match="mixer\\(images, labels\\)"):
        SmoothMix(3)(x)


# -- torch.compile -----------------------------------------------------------------------------


def test_a_training_step_compiles_fullgraph_without_a_generator():
    mixer = SmoothMix(5)
    x, y = batches(1)[0]

    def step(images, labels):
        mixed, targets = mixer(images, labels)
        return (mixed * 2).sum((1, 2, 3)), targets

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    torch.manual_seed(3)
    expected = step(x, y)
    torch.manual_seed(3)
    for got, want in zip(compiled(x, y), expected):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_a_mixer_with_a_generator_compiles_with_one_graph_break():
    x, y = batches(1)[0]
    for mixer_class in (SmoothMix, CutMix):
        def step(images, labels, mixer):
            mixed, targets = mixer(images, labels)
            return (mixed * 2).sum((1, 2, 3)), targets

        expected = step(x, y, mixer_class(5, generator=torch.Generator().manual_seed(7)))
        compiled = torch.compile(step, backend="aot_eager")
        got = compiled(x, y, mixer_class(5, generator=torch.Generator().manual_seed(7)))
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        explained = torch._dynamo.explain(step)(x, y, mixer_class(5, generator=torch.Generator()))
        assert explained.graph_break_count == 1
