"""The probe sweep's distributed cases, shared by the test (one process) and its rank processes.

Run as ``python probe_dist_helpers.py OUT_DIR RANK WORLD PORT [--bad]``: joins a gloo group on
127.0.0.1, sweeps each case on this rank's rows and saves the results to OUT_DIR/rank<RANK>.npz;
with ``--bad``, sweeps with a NaN in rank 1's rows, which every rank should report.
"""

from __future__ import annotations

import os
import sys

import numpy as np

CS = np.logspace(-3, 1, 5)


def problem(binary: bool, seed: int = 0):
    """Train and val rows; in the multinomial case class 3 lies only in the first 70 train rows
    (rank 0's), so the label set must be gathered."""
    rng = np.random.default_rng(seed)
    k = 2 if binary else 4
    centres = rng.normal(size=(k, 6)) * 1.5
    y = rng.integers(0, k, size=230)
    y[70:][y[70:] == 3] = 2 if not binary else 1
    X = (centres[y] + rng.normal(size=(230, 6)) * 2 + 3).astype(np.float32)
    labels = np.array([10, 20, 30, 40])[y]  # not codes: the encoding goes through the union
    return X[:160], labels[:160], X[160:], labels[160:]


CASES = {  # name -> (binary, probe_sweep options)
    "multinomial": (False, dict(standardize="feature", class_weight="balanced")),
    "binomial": (True, dict(standardize="none", joint=2)),  # two C per solve
}


def rows(n: int, rank: int, world: int) -> slice:
    """Rank ``rank``'s block of ``n`` rows; of two ranks the first takes 7/16 (70 of the 160
    train rows: every row of class 3)."""
    cuts = [0, n * 7 // 16, n] if world == 2 else np.linspace(0, n, world + 1).astype(int)
    return slice(int(cuts[rank]), int(cuts[rank + 1]))


def sweep(case: str, process_group=None, rank: int = 0, world: int = 1):
    from pyrobust.probe import probe_sweep

    binary, opts = CASES[case]
    Xt, yt, Xv, yv = problem(binary)
    rt, rv = rows(len(yt), rank, world), rows(len(yv), rank, world)
    return probe_sweep(Xt[rt], yt[rt], Xv[rv], yv[rv], CS, progress=False,
                       process_group=process_group, **opts)


def flat(res) -> dict:
    return {"val_accuracy": res.val_accuracy, "val_loss": res.val_loss,
            "train_loss": res.train_loss, "best_C": np.array(res.best_C),
            "coefs": np.stack(res.coefs), "intercepts": np.stack(res.intercepts),
            "classes": res.classes}


def bad_rank_sweep(rank: int, world: int, process_group) -> None:
    """The multinomial case with a NaN in rank 1's training rows: every rank should raise."""
    from pyrobust.probe import probe_sweep

    Xt, yt, Xv, yv = problem(False)
    rt, rv = rows(len(yt), rank, world), rows(len(yv), rank, world)
    Xt = Xt[rt].copy()
    if rank == 1:
        Xt[3, 2] = np.nan
    try:
        probe_sweep(Xt, yt[rt], Xv[rv], yv[rv], CS, progress=False, process_group=process_group)
    except ValueError as exc:
        print(f"rank {rank} raised: {exc}", flush=True)
        raise


def main(out: str, rank: int, world: int, port: int, bad: bool = False) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        if bad:
            bad_rank_sweep(rank, world, dist.group.WORLD)
            return
        saved = {}
        for case in CASES:
            for k, v in flat(sweep(case, dist.group.WORLD, rank, world)).items():
                saved[f"{case}.{k}"] = v
        np.savez(os.path.join(out, f"rank{rank}.npz"), **saved)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), "--bad" in sys.argv[5:])
