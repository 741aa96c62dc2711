"""Small exact models of the phenomena pyrobust measures on real networks.

:func:`linear_toy` simulates the LP-FT paper's linear overparameterised setting (Kumar et al., ICLR 2022,
section 3) and shows, with numbers, that fine-tuning distorts features only on the ID subspace and so keeps
a large OOD error, while LP-FT does not; :func:`pyrobust.theory.linear_toy.main` prints the figures over
20 seeds. Pure numpy; no compiled core.
"""

# The function shadows its submodule of the same name on the package: importing it here, after the
# submodule, is what makes `from pyrobust.theory import linear_toy` give the function.
from pyrobust.theory.linear_toy import format_linear_toy, linear_toy, linear_toy_seeds, plot_linear_toy

__all__ = ["format_linear_toy", "linear_toy", "linear_toy_seeds", "plot_linear_toy"]
