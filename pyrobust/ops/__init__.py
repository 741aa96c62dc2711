"""Typed wrappers over pyrobust's compiled ops (``torch.ops.pyrobust.*``).

Importing this package loads the compiled core. Each op family has one module here holding
its wrapper, its fake (meta) kernel for ``torch.compile`` and its autograd formula.
"""

from pyrobust.ops import _library  # noqa: F401  (loads the core, checks versions)
