"""Full fine-tuning (FT, and the FT stage of LP-FT) with the LP-FT authors' protocol as defaults.

Defaults follow Kumar et al. (ICLR 2022, official code; see REFERENCES.md §LP-FT): SGD with momentum 0.9, weight decay
0, cosine learning-rate schedule, BatchNorm kept in eval mode (running statistics frozen, affine parameters trained).
"""

from __future__ import annotations

import copy
import math
import os
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from pyrobust.lpft import checkpoint as ckpt
from pyrobust.lpft.distributed import (all_reduce_sum, distributed_train_loader, is_main_process, rank_world,
                                       sharded_eval_loader)
from pyrobust.checks import check_bool, check_choice, check_int, check_real
from pyrobust.lpft.evaluate import autocast_for, check_label_range, correct_and_total, resolve_device, split_batch
from pyrobust.models.adapter import model_input

_SCHEDULES = ("cosine", "constant", "linear")
_OPTIMIZERS = ("sgd", "adamw")


def lr_at(step: int, *, lr: float, total: int, warmup: int, schedule: str) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warm-up over ``warmup`` steps, then ``schedule``
    (``"cosine"``, ``"linear"`` or ``"constant"``) decaying from ``lr`` (cosine / linear reach 0 after ``total``
    steps)."""
    check_choice(schedule, "schedule", _SCHEDULES)
    step, total = check_int(step, "step", min=0), check_int(total, "total", min=1)
    warmup, lr = check_int(warmup, "warmup", min=0), check_real(lr, "lr", min=0)
    if step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant":
        return lr
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return 0.5 * lr * (1.0 + math.cos(math.pi * t))
    return lr * (1.0 - t)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum_k targets[:, k] * log_softmax(logits)[:, k]``; targets ``(N, K)`` soft labels,
    the shape of ``logits`` (no broadcasting: a ``(K,)`` target would silently be every row's)."""
    if logits.dim() != 2 or targets.shape != logits.shape:
        raise ValueError(f"targets should have the shape of the (N, K) logits {tuple(logits.shape)}, "
                         f"got {tuple(targets.shape)}")
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def set_train_mode(model: nn.Module, bn_eval: bool) -> None:
    model.train()
    if bn_eval:
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                m.eval()


def _fresh_head(model: nn.Module, seed: int) -> nn.Linear:
    old = getattr(model, "head", None)
    if not isinstance(old, nn.Linear):
        raise ValueError("head=None needs a model with an nn.Linear attribute `head` to size the fresh head, "
                         f"got {type(old).__name__}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Linear(old.in_features, old.out_features, bias=old.bias is not None).to(old.weight.device)


def _attach_head(model: nn.Module, head: nn.Module | None, seed: int) -> None:
    if head is None:
        head = _fresh_head(model, seed)
    if not isinstance(head, nn.Module):
        raise TypeError(f"head must be an nn.Module (e.g. nn.Linear) or None, got {type(head).__name__}")
    dim = getattr(model, "feature_dim", None)
    in_features = getattr(head, "in_features", None)
    if dim is not None and in_features is not None and int(dim) != int(in_features):
        raise ValueError(f"head has in_features={in_features} but the model's feature_dim is {dim}")
    ref = next(model.parameters())
    model.head = head.to(device=ref.device, dtype=ref.dtype)


def _check_args(epochs, lr, optimizer, schedule, warmup, clip_grad, early_stopping, momentum, weight_decay, seed,
                flags, mixer, train_loader, val_loader, checkpoint_dir):
    check_int(epochs, "epochs", min=1)
    check_real(lr, "lr", min=0, min_open=True)
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {optimizer!r}")
    if schedule not in _SCHEDULES:
        raise ValueError(f"schedule must be one of {_SCHEDULES}, got {schedule!r}")
    check_int(warmup, "warmup", min=0)
    if clip_grad is not None:
        check_real(clip_grad, "clip_grad", min=0, min_open=True)
    if early_stopping is not None:
        check_int(early_stopping, "early_stopping", min=1)
    check_real(momentum, "momentum", min=0)
    check_real(weight_decay, "weight_decay", min=0)
    check_int(seed, "seed", min=0)
    for name, value in flags.items():
        check_bool(value, name)
    if mixer is not None and not callable(mixer):
        raise TypeError(f"mixer must be callable as mixer(images, labels), got {type(mixer).__name__}")
    if not (hasattr(train_loader, "__iter__") and hasattr(train_loader, "__len__")):
        raise TypeError(f"train_loader must be a DataLoader (iterable, with a length), got {type(train_loader).__name__}")
    if val_loader is not None:
        if not hasattr(val_loader, "__iter__"):
            raise TypeError(f"val_loader must be a DataLoader or None, got {type(val_loader).__name__}")
        if hasattr(val_loader, "__len__") and len(val_loader) == 0:
            raise ValueError("val_loader yields no batches (empty dataset); give a validation set or None")
    if checkpoint_dir is not None:
        if not isinstance(checkpoint_dir, (str, os.PathLike)):
            raise TypeError(f"checkpoint_dir must be a folder path or None, got {type(checkpoint_dir).__name__}")
        if os.path.exists(checkpoint_dir) and not os.path.isdir(checkpoint_dir):
            raise ValueError(f"checkpoint_dir {os.fspath(checkpoint_dir)!r} is a file, not a folder")


def finetune(
    model: nn.Module,
    head: nn.Module | None,
    train_loader,
    val_loader=None,
    *,
    epochs: int,
    lr: float,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    schedule: str = "cosine",
    warmup: int = 0,
    bn_eval: bool = True,
    clip_grad: float | None = None,
    mixer=None,
    amp: bool | None = None,
    checkpoint_dir: str | None = None,
    early_stopping: int | None = None,
    device=None,
    progress: bool = True,
    seed: int = 0,
    channels_last: bool = True,
) -> tuple[nn.Module, dict]:
    """Fine-tune every parameter of ``model`` (backbone and head) on ``train_loader``.

    Args:
        model: classifier mapping ``(N, 3, H, W)`` float32 images in [0, 1] to ``(N, K)`` logits through an
            ``nn.Linear`` attribute ``head`` (``pyrobust.models.FeatureModel``). Trained in place and moved to
            ``device``.
        head: the LP head (LP-FT), installed as ``model.head`` and trained in place; or None for FT: a freshly
            initialised ``nn.Linear`` shaped like ``model.head`` (init seeded by ``seed``).
        train_loader: yields ``(images, int64 labels)``. Under ``torch.distributed`` its batch size is per rank
            and its sampler is replaced by a DistributedSampler (shuffling iff it shuffled).
        val_loader: ID validation set for the per-epoch accuracy and early stopping (optional).
        epochs, lr: number of epochs and peak learning rate.
        optimizer: ``"sgd"`` (with ``momentum``) or ``"adamw"``; ``weight_decay`` for both.
        schedule: ``"cosine"`` (default), ``"linear"`` or ``"constant"``, stepped per optimizer step, after
            ``warmup`` steps of linear warm-up.
        bn_eval: keep BatchNorm layers in eval mode (running statistics frozen), as the LP-FT authors did.
        clip_grad: max global gradient norm, or None.
        mixer: batch mixer ``mixer(images, labels) -> (images, targets, ...)`` with ``(N, K)`` float soft targets
            (``pyrobust.augment``); the loss is then soft-target cross-entropy. A ``mixer.generator``
            (torch.Generator) is checkpointed with the other RNG states.
        amp: autocast (bfloat16, or float16 with loss scaling) on CUDA; default on for CUDA, refused on CPU.
        checkpoint_dir: write a checkpoint after every epoch and resume from the latest one if present; resuming
            gives the same result as an uninterrupted run (bitwise on CPU). Arguments must match the saved run.
        early_stopping: patience in epochs on ID val accuracy; the best epoch's weights are restored at the end.
        device: default: CUDA when available.
        progress: a tqdm bar per epoch (rank 0 only).
        seed: seeds torch's global RNG (and the fresh head) at the start of a new run.
        channels_last: feed 4-D batches in channels-last layout (``pyrobust.models.model_input``: about 1.8x
            faster steps for a CNN on CPU); set False for a model that ``.view``s its 4-D input.

    Returns:
        ``(model, history)``: the model (in eval mode) and a dict of per-epoch lists ``epoch``, ``lr`` (last),
        ``train_loss``, ``train_accuracy``, ``val_accuracy`` (None without ``val_loader``), ``seconds``, plus
        ``best_epoch``, ``best_val_accuracy`` and ``stopped_early``.
    """
    _check_args(epochs, lr, optimizer, schedule, warmup, clip_grad, early_stopping, momentum, weight_decay, seed,
                dict(bn_eval=bn_eval, progress=progress, channels_last=channels_last), mixer, train_loader, val_loader,
                checkpoint_dir)
    if amp is not None:
        check_bool(amp, "amp")
    if early_stopping is not None and val_loader is None:
        raise ValueError("early_stopping needs a val_loader")
    device = resolve_device(device)
    if device.type == "cuda" and device.index is None:  # DDP needs an explicit index; torchrun set the current one
        device = torch.device("cuda", torch.cuda.current_device())
    amp = device.type == "cuda" if amp is None else bool(amp)
    if amp and device.type != "cuda":
        raise ValueError(f"amp=True needs a CUDA device, got device={device}")
    rank, world = rank_world()
    main = is_main_process()

    torch.manual_seed(seed)
    _attach_head(model, head, seed)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    use_scaler = amp and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None

    train_loader = distributed_train_loader(train_loader, seed=seed)
    if val_loader is not None:
        val_loader = sharded_eval_loader(val_loader)
    net = model
    if world > 1:
        net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    generators = {}
    for name, obj in (("loader", train_loader), ("sampler", getattr(train_loader, "sampler", None)),
                      ("mixer", mixer)):
        g = getattr(obj, "generator", None)
        if isinstance(g, torch.Generator):
            generators[name] = g

    head_out = getattr(model.head, "out_features", None)  # labels are checked against it on the host
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise ValueError("train_loader yields no batches (empty dataset, or drop_last with too few items)")
    total = epochs * steps_per_epoch
    config = dict(epochs=epochs, lr=lr, optimizer=optimizer, momentum=momentum, weight_decay=weight_decay,
                  schedule=schedule, warmup=warmup, bn_eval=bn_eval, clip_grad=clip_grad, amp=amp, seed=seed,
                  early_stopping=early_stopping, mixer=type(mixer).__name__ if mixer is not None else None,
                  world_size=world, steps_per_epoch=steps_per_epoch, channels_last=channels_last)
    history = {"epoch": [], "lr": [], "train_loss": [], "train_accuracy": [], "val_accuracy": [], "seconds": [],
               "best_epoch": None, "best_val_accuracy": None, "stopped_early": False}
    start_epoch, step, best_dir, best_state = 0, 0, None, None

    if checkpoint_dir is not None:
        if main:
            os.makedirs(checkpoint_dir, exist_ok=True)
        state = ckpt.load_checkpoint(checkpoint_dir, model=model, optimizer=opt, scaler=scaler,
                                     generators=generators)
        if state is not None:
            saved = {"channels_last": False, **state["config"]}  # older checkpoints fed NCHW batches
            diff = {k: (saved.get(k), v) for k, v in config.items() if saved.get(k) != v}
            if diff:
                raise ValueError(f"checkpoint in {checkpoint_dir!r} was made with other arguments "
                                 f"(saved, now): {diff}; use another checkpoint_dir")
            start_epoch, step, history = state["epoch"] + 1, state["step"], state["history"]
            best_dir = state.get("best_dir")
            if early_stopping is not None and best_dir is not None:
                best_state = ckpt.load_model_state(checkpoint_dir, best_dir)

    for epoch in range(start_epoch, epochs):
        if history["stopped_early"]:
            break
        t0 = time.perf_counter()
        sampler = getattr(train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        set_train_mode(model, bn_eval)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        n_seen = 0
        bar = None
        if progress and main:
            from tqdm.auto import tqdm

            bar = tqdm(total=steps_per_epoch, desc=f"finetune epoch {epoch + 1}/{epochs}", leave=False)
        for batch in train_loader:
            images, labels = split_batch(batch)
            if head_out is not None and labels.device.type == "cpu":
                check_label_range(labels, head_out, "train_loader")
            images, labels = model_input(images, device, channels_last), labels.to(device, non_blocking=True)
            current_lr = lr_at(step, lr=lr, total=total, warmup=warmup, schedule=schedule)
            for group in opt.param_groups:
                group["lr"] = current_lr
            targets = None
            if mixer is not None:
                mixed = mixer(images, labels)  # pyrobust.augment returns a MixOutput (images, targets, ...)
                images, targets = mixed[0], mixed[1]
            with autocast_for(device, amp):
                logits = net(images)
            if targets is not None:
                if targets.shape != logits.shape:
                    raise ValueError(f"mixer targets have shape {tuple(targets.shape)}, logits {tuple(logits.shape)}; "
                                     "build the mixer with num_classes equal to the head's outputs")
                loss = soft_cross_entropy(logits, targets)
                hit_labels = targets.argmax(dim=1)
            else:
                loss = F.cross_entropy(logits.float(), labels)
                hit_labels = labels
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
            else:
                loss.backward()
            if clip_grad is not None:
                torch.nn.utils.clip_grad_norm_(params, clip_grad)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            step += 1
            # running sums stay on the device: no host sync per step
            n_seen += labels.numel()
            loss_sum.add_(loss.detach(), alpha=labels.numel())
            correct.add_((logits.detach().argmax(dim=1) == hit_labels).sum())
            if bar is not None:
                bar.update(1)
        sums = all_reduce_sum(torch.stack([loss_sum, correct.double(),
                                           torch.tensor(float(n_seen), dtype=torch.float64, device=device)]))
        if not math.isfinite(float(sums[0])):
            raise FloatingPointError(f"training loss became non-finite in epoch {epoch} at lr={lr}, momentum={momentum}, "
                                     f"weight_decay={weight_decay}; lower the lr")
        val_acc = None
        if val_loader is not None:
            model.eval()
            counts = all_reduce_sum(correct_and_total(model, val_loader, device, amp, channels_last, "val_loader"))
            if counts[1] == 0:
                raise ValueError("val_loader yielded no samples; give a validation set or None")
            val_acc = float(counts[0] / counts[1])
        history["epoch"].append(epoch)
        history["lr"].append(current_lr)
        history["train_loss"].append(float(sums[0] / sums[2]))
        history["train_accuracy"].append(float(sums[1] / sums[2]))
        history["val_accuracy"].append(val_acc)
        history["seconds"].append(time.perf_counter() - t0)
        improved = val_acc is not None and (history["best_val_accuracy"] is None
                                            or val_acc > history["best_val_accuracy"])
        if improved:
            history["best_epoch"], history["best_val_accuracy"] = epoch, val_acc
            if early_stopping is not None:
                best_state = ckpt.state_tensors(model.state_dict())
        if early_stopping is not None and epoch - history["best_epoch"] >= early_stopping:
            history["stopped_early"] = epoch < epochs - 1
        if bar is not None:
            bar.set_postfix(loss=history["train_loss"][-1], val=val_acc)
            bar.close()
        if checkpoint_dir is not None:
            name = f"epoch-{epoch:04d}"
            if improved and early_stopping is not None:
                best_dir = name
            ckpt.save_checkpoint(checkpoint_dir, epoch=epoch, model=model, optimizer=opt, scaler=scaler,
                                 state={"step": step, "history": history, "config": config, "best_dir": best_dir},
                                 generators=generators, best_dir=best_dir)
        if history["stopped_early"]:
            break

    if early_stopping is not None and best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, copy.deepcopy(history)
