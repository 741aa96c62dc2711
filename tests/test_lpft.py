"""pyrobust.lpft: fine-tuning (resume, BatchNorm, mixers, early stopping, clipping), evaluation, WiSE-FT, the LP
head and the LP / FT / LP-FT study, on a few-layer CNN and random images."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from pyrobust.lpft import (LPFT_DEFAULTS, evaluate, finetune, interpolate, linear_probe, lr_at, run_lpft,
                           soft_cross_entropy, wise_sweep)
from tests.lpft_helpers import Blobs, TinyCNN


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def loaders(n=64, batch=16, shuffle=True, val_shift=0):
    return (DataLoader(Blobs(n=n), batch_size=batch, shuffle=shuffle),
            DataLoader(Blobs(n=30, seed=1, label_shift=val_shift), batch_size=10))


def run(model=None, head=None, train=None, val=None, **kw):
    if train is None:
        train, val = loaders()
    kw.setdefault("epochs", 3)
    kw.setdefault("lr", 0.1)
    return finetune(model or TinyCNN(), head, train, val, device="cpu", progress=False, **kw)


def assert_same_state(a, b, exact=True):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        if exact:
            assert torch.equal(sa[k], sb[k]), k
        else:
            torch.testing.assert_close(sa[k], sb[k], rtol=1e-5, atol=1e-6, msg=k)


class _FailAfter(Dataset):
    """Raises on the ``limit``-th item access: an interruption in the middle of an epoch."""

    def __init__(self, base, limit):
        self.base, self.limit, self.calls = base, limit, 0

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        self.calls += 1
        if self.calls == self.limit:
            raise KeyboardInterrupt("injected interruption")
        return self.base[i]


def test_lr_schedule_matches_definition():
    assert lr_at(0, lr=1.0, total=10, warmup=0, schedule="cosine") == 1.0
    assert lr_at(5, lr=1.0, total=10, warmup=0, schedule="cosine") == pytest.approx(0.5)
    assert lr_at(1, lr=1.0, total=10, warmup=4, schedule="cosine") == pytest.approx(0.5)  # warm-up: (1+1)/4
    assert lr_at(4 + 3, lr=2.0, total=10, warmup=4, schedule="cosine") == pytest.approx(1 + math.cos(math.pi / 2))
    assert lr_at(7, lr=2.0, total=10, warmup=0, schedule="linear") == pytest.approx(2.0 * 0.3)
    assert lr_at(9, lr=2.0, total=10, warmup=0, schedule="constant") == 2.0


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_resume_equals_uninterrupted(tmp_path, optimizer):
    """Interrupted mid-epoch, then resumed from the last checkpoint: bitwise the same weights and history, with
    shuffling, dropout and a random batch mixer all drawing random numbers."""
    from pyrobust.augment import MixUp

    def attempt(train_ds, ckpt):
        train = DataLoader(train_ds, batch_size=16, shuffle=True)
        val = DataLoader(Blobs(n=30, seed=1), batch_size=10)
        mixer = MixUp(num_classes=3, generator=torch.Generator().manual_seed(7))
        return finetune(TinyCNN(dropout=0.3), None, train, val, epochs=3, lr=0.05, optimizer=optimizer,
                        weight_decay=1e-3, warmup=2, mixer=mixer, checkpoint_dir=ckpt, device="cpu",
                        progress=False, seed=3)

    ref, ref_hist = attempt(Blobs(n=64), str(tmp_path / "a"))
    with pytest.raises(KeyboardInterrupt):
        attempt(_FailAfter(Blobs(n=64), limit=64 + 40), str(tmp_path / "b"))  # dies in epoch 1
    resumed, hist = attempt(Blobs(n=64), str(tmp_path / "b"))
    assert_same_state(ref, resumed)
    assert hist["train_loss"] == ref_hist["train_loss"] and hist["val_accuracy"] == ref_hist["val_accuracy"]
    plain, _ = attempt(Blobs(n=64), None)  # checkpointing does not perturb the run
    assert_same_state(ref, plain)
    # a finished run resumes to itself without training
    again, _ = attempt(Blobs(n=64), str(tmp_path / "a"))
    assert_same_state(ref, again)


def test_checkpoint_refuses_other_arguments(tmp_path):
    run(epochs=1, checkpoint_dir=str(tmp_path))
    with pytest.raises(ValueError, match="lr"):
        run(epochs=1, lr=0.2, checkpoint_dir=str(tmp_path))


def _bn_stats(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


def test_bn_eval_keeps_running_stats():
    model = TinyCNN()
    before = _bn_stats(model)
    bn_weight = model.backbone[1].weight.detach().clone()
    model, _ = run(model, bn_eval=True)
    for k, v in _bn_stats(model).items():
        assert torch.equal(v, before[k]), k
    assert not torch.equal(model.backbone[1].weight, bn_weight)  # affine parameters still train
    moved, _ = run(TinyCNN(), bn_eval=False)
    assert not torch.equal(moved.backbone[1].running_mean, before["backbone.1.running_mean"])
    assert int(moved.backbone[1].num_batches_tracked) == 3 * 4


def test_soft_cross_entropy_matches_torch():
    logits = torch.randn(5, 4, dtype=torch.float64)
    targets = torch.softmax(torch.randn(5, 4, dtype=torch.float64), dim=1)
    torch.testing.assert_close(soft_cross_entropy(logits, targets), F.cross_entropy(logits, targets))


def test_one_hot_mixer_equals_plain_training():
    calls = []

    def one_hot(images, labels):
        calls.append(len(labels))
        return images, F.one_hot(labels, 3).float()

    plain, _ = run()
    mixed, hist = run(mixer=one_hot)
    assert calls == [16] * 12
    assert_same_state(plain, mixed, exact=False)
    assert all(0 <= a <= 1 for a in hist["train_accuracy"])


def test_early_stopping_restores_best_epoch():
    """Val labels are the train labels shifted by one, so learning the task lowers val accuracy."""
    train, val = loaders(shuffle=False, val_shift=1)
    model, hist = run(train=train, val=val, epochs=10, lr=0.3, schedule="constant", early_stopping=2)
    best = hist["best_epoch"]
    assert hist["stopped_early"] and len(hist["epoch"]) == best + 3
    assert hist["best_val_accuracy"] == max(hist["val_accuracy"])
    assert evaluate(model, {"val": val})["val"] == hist["best_val_accuracy"]
    reference, _ = run(train=train, val=val, epochs=best + 1, lr=0.3, schedule="constant")
    assert_same_state(model, reference)


def test_clip_grad_bounds_each_step():
    model = TinyCNN()
    start = torch.cat([p.detach().flatten() for p in model.parameters()])
    model, _ = run(model, epochs=1, lr=1.0, momentum=0.0, schedule="constant", clip_grad=1e-3)
    moved = torch.cat([p.detach().flatten() for p in model.parameters()]) - start
    # 4 steps of at most lr * clip each; the head is re-initialised (head=None), so only the backbone is compared
    n_backbone = sum(p.numel() for p in model.backbone.parameters())
    assert 0 < moved[:n_backbone].norm() <= 4 * 1.0 * 1e-3 * (1 + 1e-5)


def test_heads():
    model = TinyCNN()
    fresh, _ = run(copy.deepcopy(model), epochs=1, lr=1e-12)
    fresh2, _ = run(copy.deepcopy(model), epochs=1, lr=1e-12)
    assert not torch.allclose(fresh.head.weight, model.head.weight)  # head=None: re-initialised
    torch.testing.assert_close(fresh.head.weight, fresh2.head.weight)  # ... deterministically
    head = torch.nn.Linear(16, 3)
    tuned, _ = run(copy.deepcopy(model), head=head, epochs=1)
    assert tuned.head is head
    with pytest.raises(ValueError, match="in_features=5"):
        run(copy.deepcopy(model), head=torch.nn.Linear(5, 3))


def test_bad_arguments():
    with pytest.raises(ValueError, match="epochs"):
        run(epochs=0)
    with pytest.raises(ValueError, match="optimizer"):
        run(optimizer="adam")
    with pytest.raises(ValueError, match="schedule"):
        run(schedule="step")
    with pytest.raises(ValueError, match="amp=True needs a CUDA"):
        run(amp=True)
    with pytest.raises(ValueError, match="mixer targets have shape"):
        run(mixer=lambda x, y: (x, F.one_hot(y, 5).float()))
    train, _ = loaders()
    with pytest.raises(ValueError, match="early_stopping needs a val_loader"):
        run(train=train, val=None, early_stopping=2)
    with pytest.raises(ValueError, match="labels must be an integer tensor"):
        bad = [(torch.rand(4, 3, 8, 8), torch.rand(4))]
        run(train=bad, val=None)


def test_evaluate_matches_manual_accuracy():
    model = TinyCNN().eval()
    train, val = loaders(shuffle=False)
    with torch.no_grad():
        logits = model(val.dataset.images)
    expected = float((logits.argmax(1) == val.dataset.labels).double().mean())
    accs = evaluate(model, {"val": val, "train": train})
    assert accs["val"] == pytest.approx(expected, abs=1e-12) and set(accs) == {"val", "train"}
    with pytest.raises(TypeError, match="dict"):
        evaluate(model, val)


def test_interpolate_definition():
    pre, ft = TinyCNN(seed=0).state_dict(), TinyCNN(seed=1).state_dict()
    ft["backbone.1.num_batches_tracked"] = torch.tensor(17)
    zero, one, half = interpolate(pre, ft, 0.0), interpolate(pre, ft, 1), interpolate(pre, ft, 0.5)
    for k in ft:
        if ft[k].dtype.is_floating_point:
            assert torch.equal(zero[k], pre[k]) and torch.equal(one[k], ft[k]), k
            torch.testing.assert_close(half[k], (pre[k] + ft[k]) / 2)
        else:
            assert torch.equal(half[k], ft[k]) and torch.equal(zero[k], ft[k]), k
    with pytest.raises(ValueError, match="alpha"):
        interpolate(pre, ft, 1.5)
    with pytest.raises(ValueError, match="different keys"):
        interpolate({k: v for k, v in pre.items() if k != "head.bias"}, ft, 0.5)
    with pytest.raises(ValueError, match="shape"):
        interpolate(pre, TinyCNN(width=4).state_dict(), 0.5)


def test_wise_sweep_endpoints():
    _, val = loaders(shuffle=False)
    pre_model = TinyCNN()
    tuned, _ = run(copy.deepcopy(pre_model), epochs=2)
    pre_state = copy.deepcopy(pre_model.state_dict())
    pre_state["head.weight"], pre_state["head.bias"] = pre_model.head.weight, pre_model.head.bias
    rows = wise_sweep(pre_model, pre_state, tuned.state_dict(), {"val": val}, alphas=(0.0, 0.5, 1.0))
    assert [r["alpha"] for r in rows] == [0.0, 0.5, 1.0]
    assert rows[0]["val"] == evaluate(pre_model, {"val": val})["val"]
    assert rows[2]["val"] == evaluate(tuned, {"val": val})["val"]


def _feature_arrays(n, d=6, k=3, seed=0):
    g = np.random.default_rng(seed)
    y = g.integers(0, k, n)
    X = (g.normal(size=(n, d)) + 2.0 * np.eye(k, d)[y] + 3.0).astype(np.float32)
    return X, y


# The head must reproduce the fitted probe whether or not the solver met its tolerance (convergence is
# pyrobust.probe's business, tested there), so a short iteration cap keeps this test fast.
@pytest.mark.filterwarnings("ignore:probe_sweep did not reach tol")
def test_linear_probe_head_acts_on_raw_features():
    train, val = _feature_arrays(120), _feature_arrays(60, seed=1)
    head, result = linear_probe(train, val, Cs=np.logspace(-3, 1, 5), progress=False, max_iter=100)
    assert isinstance(head, torch.nn.Linear) and head.weight.dtype == torch.float32
    with torch.no_grad():
        pred = head(torch.from_numpy(val[0])).argmax(1).numpy()
    np.testing.assert_array_equal(pred, result.best_estimator.predict(val[0]))
    np.testing.assert_array_equal(LPFT_DEFAULTS["Cs"], np.logspace(-7, 2, 50))
    assert LPFT_DEFAULTS["standardize"] == "scalar"
    with pytest.raises(ValueError, match="different dims"):
        linear_probe(train, (val[0][:, :4], val[1]))


@pytest.mark.filterwarnings("ignore:probe_sweep did not reach tol")
def test_run_lpft_table(tmp_path):
    train, val = loaders(n=48)
    study = run_lpft(TinyCNN(), train=train, val=val, id_test=val,
                     ood={"noisy": DataLoader(Blobs(n=20, seed=2), batch_size=10)}, epochs=1, ft_lrs=(0.1,),
                     lpft_lrs=(0.01, 0.03), Cs=np.logspace(-2, 1, 3), cache_dir=str(tmp_path),
                     probe_kwargs={"max_iter": 100}, progress=False)
    assert [r["method"] for r in study.rows] == ["lp", "ft", "lpft"]
    lp, ft, lpft = (study.row(m) for m in ("lp", "ft", "lpft"))
    assert lp["feature_change_id"] == 0.0 and ft["feature_change_id"] > 0 and lpft["feature_change_id"] > 0
    assert lpft["lr"] == max((r for r in study.runs if r["method"] == "lpft"), key=lambda r: r["id_val"])["lr"]
    assert len(study.runs) == 1 + 1 + 2
    md = study.to_markdown()
    assert md.count("\n") == 4 and "LP-FT" in md and "noisy" in md


def test_run_lpft_given_lp_head_skips_the_sweep_and_starts_from_it(tmp_path):
    train, val = loaders(n=48)
    common = dict(train=train, val=val, id_test=val, ood={}, epochs=1, ft_lrs=(0.1,), lpft_lrs=(0.01,),
                  Cs=np.logspace(-2, 1, 3), probe_kwargs={"max_iter": 100}, progress=False)
    first = run_lpft(TinyCNN(), methods=("lpft",), cache_dir=str(tmp_path / "a"), **common)
    assert isinstance(first.lp_head, torch.nn.Linear) and first.probe is not None
    again = run_lpft(TinyCNN(), methods=("lp", "lpft"), cache_dir=str(tmp_path / "b"), lp_head=first.lp_head,
                     **common)
    assert again.probe is None and not (tmp_path / "b").exists()  # no features extracted, no sweep
    assert again.lp_head is first.lp_head
    # the same head and seed: LP-FT retraces the first study's run; LP scores that head
    assert again.row("lpft")["id_val"] == first.row("lpft")["id_val"]
    assert again.row("lpft")["head_norm"] == pytest.approx(float(first.lp_head.weight.norm()))
    manual = copy.deepcopy(TinyCNN())
    manual.head = copy.deepcopy(first.lp_head)
    assert again.row("lp")["id_val"] == pytest.approx(evaluate(manual, {"v": val})["v"])
    with pytest.raises(TypeError, match="lp_head"):
        run_lpft(TinyCNN(), methods=("lpft",), lp_head="head", **common)
