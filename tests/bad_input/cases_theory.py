"""The linear toy model of the LP-FT paper."""

from pyrobust.theory import format_linear_toy, linear_toy, linear_toy_seeds, plot_linear_toy
from tests.bad_input.harness import bad, table

V, T = ValueError, TypeError
SMALL = dict(d=12, k=2, m=5, n=6, steps=5)


def toy(**kw):
    return linear_toy(**{**SMALL, **kw})


CASES = table(
    bad("d string", lambda: toy(d="12"), V, r"d must be a positive int"),
    bad("k zero", lambda: toy(k=0), V, r"k must be a positive int"),
    bad("k m d order", lambda: toy(m=20), V, r"k < m < d"),
    bad("2k > d", lambda: toy(d=7, k=4, m=6), V, r"2k <= d"),
    bad("eps NaN", lambda: toy(eps=float("nan")), V, r"eps .*nan"),
    bad("eps 2", lambda: toy(eps=2.0), V, r"eps .*2"),
    bad("eps string", lambda: toy(eps="0.1"), (V, T), r"eps"),
    bad("lr string", lambda: toy(lr="0.3"), (V, T), r"lr"),
    bad("lr inf", lambda: toy(lr=float("inf")), V, r"lr"),
    bad("lr diverges", lambda: toy(lr=1e6, steps=200), V, r"diverged.*lr"),
    bad("head_init_std negative", lambda: toy(head_init_std=-1.0), V, r"head_init_std"),
    bad("head_init_std string", lambda: toy(head_init_std="0"), (V, T), r"head_init_std"),
    bad("seed negative", lambda: toy(seed=-1), V, r"seed .*-1"),
    bad("seed string", lambda: toy(seed="a"), T, r"seed"),
    bad("seeds empty", lambda: linear_toy_seeds([], **SMALL), V, r"seeds is empty"),
    bad("seeds strings", lambda: linear_toy_seeds(["a"], **SMALL), (V, T), r"seeds .*'a'"),
    bad("seeds unknown kwarg", lambda: linear_toy_seeds([0], dd=3), T, r"dd"),
    bad("format not a summary", lambda: format_linear_toy({"lp": 1}), (V, T), r"summary"),
    bad("plot not a result", lambda: plot_linear_toy({}, "x.png"), V, r"result lacks method"),
)
