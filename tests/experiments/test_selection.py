"""Rate sweeps: the registered grid, widened by factors of three past an edge whose rate is the best
(qaa.experiments.selection)."""
import math

import pytest

from qaa.experiments.selection import widen_sweep


@pytest.mark.parametrize("nll, max_widen, expected", [
    # best inside the grid: nothing added
    ({1e-3: 2.0, 3e-3: 1.0, 1e-2: 1.5}, 4, [1e-3, 3e-3, 1e-2]),
    # falling with the rate: the high edge is followed 3x at a time until max_widen is spent
    (lambda lr: -lr, 2, [1e-3, 3e-3, 1e-2, 3e-2, 9e-2]),
    # falling, then rising past 0.27: widening stops at the first rate that is worse than the edge
    (lambda lr: abs(math.log(lr / 0.09)), 4, [1e-3, 3e-3, 1e-2, 3e-2, 9e-2, 0.27]),
    # best on the low edge: the low side is widened first; the high edge is no longer the best
    (lambda lr: lr, 1, [1e-3, 3e-3, 1e-2, 1e-3 / 3]),
    # every run failed: no edge to follow
    (lambda lr: math.inf, 4, [1e-3, 3e-3, 1e-2]),
    # max_widen 0: the registered grid only
    (lambda lr: -lr, 0, [1e-3, 3e-3, 1e-2]),
])
def test_widen_sweep_follows_an_edge_best_by_factors_of_three(nll, max_widen, expected):
    calls = []

    def val_nll(lr):
        calls.append(lr)
        return nll(lr) if callable(nll) else nll[lr]

    tried = widen_sweep([1e-3, 3e-3, 1e-2], val_nll, max_widen)
    assert tried == pytest.approx(expected, rel=1e-12)
    assert calls == tried  # each rate trained once, in the order tried
