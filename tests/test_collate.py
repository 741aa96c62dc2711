"""MixCollate: mixing inside DataLoader workers."""

import subprocess
import sys
import textwrap

import pytest
import torch

from pyrobust.augment import MixCollate, SmoothMix
from tests.mix_helpers import random_images


_FORK_SCRIPT = textwrap.dedent(
    """
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    from pyrobust.augment import MixCollate, SmoothMix

    torch.manual_seed(0)
    torch.ones(256, 256) @ torch.ones(256, 256)  # start the parent's thread pool before forking
    x = torch.rand(64, 3, 16, 16)
    y = torch.randint(0, 5, (64,))
    ds = TensorDataset(x, y)
    for gen in (None, torch.Generator().manual_seed(3)):
        loader = DataLoader(ds, batch_size=8, num_workers=2, collate_fn=MixCollate(SmoothMix(5, generator=gen)),
                            multiprocessing_context="fork")
        masks = []
        for images, targets in loader:
            assert images.shape == (8, 3, 16, 16) and targets.shape == (8, 5)
            masks.append(images.sum().item())
        assert len(masks) == 8
        # Batches 0 and 1 come from different workers: identical draws would repeat the output
        # pattern of the two workers' first batches with different data, so compare lambdas.
        assert len(set(round(m, 4) for m in masks)) == 8, masks
    print("ok")
    """
)


def test_dataloader_fork_workers_do_not_hang_or_repeat():
    proc = subprocess.run([sys.executable, "-c", _FORK_SCRIPT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ok" in proc.stdout


def test_workers_with_one_generator_draw_different_masks():
    """Two workers seeded from one user generator must not draw the same parameters."""
    from torch.utils.data import DataLoader, TensorDataset

    x = torch.zeros(16, 1, 8, 8)
    x[1::2] = 1.0
    ds = TensorDataset(x, torch.zeros(16, dtype=torch.long))
    collate = MixCollate(SmoothMix(2, pairing="flip", generator=torch.Generator().manual_seed(11)))
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate, multiprocessing_context="fork")
    first, second = [b[0] for b, _ in zip(loader, range(2))]
    assert not torch.equal(first, second)


def test_collate_in_a_worker_mixes_the_samples_where_they_lie_into_shared_memory(monkeypatch):
    """The worker path (each sample read where it lies by mix_gather, no stacking pass, output in
    shared memory) gives what mixing default_collate's batch gives; earlier batches survive."""
    from types import SimpleNamespace

    from pyrobust.augment import collate as collate_module
    from pyrobust.ops import mix as mix_ops
    from torch.utils.data import default_collate

    monkeypatch.setattr(collate_module, "get_worker_info", lambda: SimpleNamespace(seed=1234))
    gathers = []
    gather = mix_ops.mix_gather
    monkeypatch.setattr(mix_ops, "mix_gather", lambda samples, *a, **k: gathers.append(samples) or gather(samples, *a, **k))
    x = random_images(11, 3, 9, 7, torch.float32, seed=3)
    samples = [(x[i], i % 4, f"name{i}") for i in range(11)]
    fast = MixCollate(SmoothMix(4, generator=torch.Generator().manual_seed(5)))
    plain = MixCollate(SmoothMix(4, generator=torch.Generator().manual_seed(5)),
                       collate_fn=lambda b: default_collate(b))  # not the default: no gather path
    results = []
    for chunk in (samples[:6], samples[6:], samples[2:8]):  # full, partial, full again
        got, expected = fast(chunk), plain(chunk)
        assert got[0].is_shared() and got[0].is_contiguous()
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
        assert got[2] == expected[2] == tuple(s[2] for s in chunk)
        assert all(a is s[0] for a, s in zip(gathers[-1], chunk))  # read where they lie
        results.append((got[0].clone(), got[0]))
    assert len(gathers) == 3
    for kept, returned in results:
        assert torch.equal(kept, returned)  # not overwritten by a later batch
    x8 = random_images(4, 3, 9, 7, torch.uint8, seed=4)
    got = fast([(x8[i], i) for i in range(4)])
    expected = plain([(x8[i], i) for i in range(4)])
    assert got[0].dtype == torch.uint8 and got[0].is_shared() and torch.equal(got[0], expected[0])
    assert "_buffer" not in fast.__getstate__()
    # A collate of its own yielding channels-last batches: the shared output follows the layout.
    def collate_cl(b):
        images, *rest = default_collate(b)
        return [images.contiguous(memory_format=torch.channels_last), *rest]
    cl = MixCollate(SmoothMix(4, generator=torch.Generator().manual_seed(5)), collate_fn=collate_cl)
    got = cl(samples[:6])
    assert got[0].is_shared() and got[0].is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got[0], results[0][0], rtol=0, atol=0)
    # Samples the private path does not take (a dict) go through the collate as before.
    with pytest.raises(TypeError, match="images, labels"):
        fast([{"x": x[0]}, {"x": x[1]}])
