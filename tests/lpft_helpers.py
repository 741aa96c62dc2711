"""Small models and data for the feature-cache / LP-FT tests, plus subprocess entry points.

Run as a script it is the worker of the SIGKILL and torch.distributed tests (``python tests/lpft_helpers.py MODE ...``).
"""

from __future__ import annotations

import os
import signal
import sys

import torch
from torch import nn
from torch.utils.data import Dataset


class TinyCNN(nn.Module):
    """Two conv+BN layers, global average pool, linear head: the FeatureModel contract in miniature."""

    def __init__(self, num_classes: int = 3, width: int = 8, dropout: float = 0.0, seed: int = 0):
        super().__init__()
        g = torch.random.fork_rng()
        with g:
            torch.manual_seed(seed)
            self.backbone = nn.Sequential(
                nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            )
            self.drop = nn.Dropout(dropout)
            self.head = nn.Linear(2 * width, num_classes)
            # non-trivial running statistics, as in a pretrained network
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 1.5)
        self.feature_dim = 2 * width
        self.forward_calls = 0

    def features(self, x):
        self.forward_calls += 1
        return self.drop(self.backbone(x).mean(dim=(2, 3)))

    def forward(self, x):
        return self.head(self.features(x))


class Blobs(Dataset):
    """``n`` images (3, size, size) in [0, 1]: a class-specific pattern plus noise; deterministic in ``seed``."""

    def __init__(self, n: int = 64, num_classes: int = 3, size: int = 8, seed: int = 0, label_shift: int = 0,
                 kill_at: int | None = None, fail_at: int | None = None):
        g = torch.Generator().manual_seed(seed)
        patterns = torch.rand(num_classes, 3, size, size, generator=torch.Generator().manual_seed(1234))
        self.labels = torch.randint(0, num_classes, (n,), generator=g)
        noise = torch.rand(n, 3, size, size, generator=g)
        self.images = (0.6 * patterns[self.labels] + 0.4 * noise).clamp(0, 1)
        self.labels = (self.labels + label_shift) % num_classes
        self.kill_at, self.fail_at = kill_at, fail_at

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        if self.kill_at is not None and i == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.fail_at is not None and i == self.fail_at:
            raise RuntimeError(f"injected failure at item {i}")
        return self.images[i], int(self.labels[i])


def _kill_worker(path):
    from pyrobust.features import extract_features

    torch.set_num_threads(1)
    extract_features(TinyCNN(), Blobs(n=70, kill_at=45), path, batch_size=8, device="cpu", progress=False)


def _ddp_worker(out_dir, rank, world, port):
    """One rank of the distributed extraction + fine-tuning test (gloo on CPU)."""
    import torch.distributed as dist
    from safetensors.torch import save_file
    from torch.utils.data import DataLoader

    from pyrobust.features import extract_features
    from pyrobust.lpft import finetune

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        extract_features(TinyCNN(), Blobs(n=70), os.path.join(out_dir, "cache"), batch_size=8, device="cpu",
                         progress=False)
        model = TinyCNN()
        train = DataLoader(Blobs(n=64), batch_size=16 // world, shuffle=False)
        val = DataLoader(Blobs(n=30, seed=1), batch_size=8)
        model, hist = finetune(model, None, train, val, epochs=2, lr=0.05, device="cpu", progress=False, seed=0,
                               checkpoint_dir=os.path.join(out_dir, "ckpt"))
        if rank == 0:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                      os.path.join(out_dir, "weights.safetensors"))
            with open(os.path.join(out_dir, "val.txt"), "w") as f:
                f.write(repr(hist["val_accuracy"]))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "kill":
        _kill_worker(sys.argv[2])
    elif mode == "ddp":
        _ddp_worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
