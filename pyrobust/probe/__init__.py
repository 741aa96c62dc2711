"""Linear probes on cached features: scikit-learn's logistic regression, solved in C++/CUDA.

``LogisticProbe`` is a scikit-learn estimator for one C; ``probe_sweep`` solves a whole C grid
with warm starts and returns a ``SweepResult``. The solver and its fused kernels are
``torch.ops.pyrobust.probe_*`` (loaded on first fit, not at import).
"""

from pyrobust.probe.estimator import LogisticProbe
from pyrobust.probe.result import SweepResult
from pyrobust.probe.sweep import probe_sweep

__all__ = ["LogisticProbe", "probe_sweep", "SweepResult"]
