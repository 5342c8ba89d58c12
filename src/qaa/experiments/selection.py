"""Learning-rate selection on validation data: the sweep's widening rule and the choice of the best
configuration (the comparison's protocol, docs/design.md section 5)."""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Sequence, Tuple

__all__ = ["widen_sweep", "select_best"]


def widen_sweep(grid: Sequence[float], val_nll: Callable[[float], float], max_widen: int) -> List[float]:
    """Rates tried by a validation sweep: ``grid``, then, while the best rate sits on the low (then the high)
    edge, one more rate a factor 3 past that edge, at most ``max_widen`` times per side.

    Args:
        grid: the registered rates (> 0). val_nll: rate -> validation NLL (``inf`` for a failed run); called
            once per rate tried, in order. max_widen: widenings per side (>= 0).
    Returns:
        Every rate tried, in the order tried (the best is the one with the lowest ``val_nll``).
    """
    tried = list(grid)
    nll = {lr: val_nll(lr) for lr in tried}
    best = lambda: min(tried, key=lambda lr: (nll[lr], lr))  # noqa: E731  (ties: the smaller rate)
    for low in (True, False):
        for _ in range(max_widen):
            if not math.isfinite(nll[best()]) or best() != (min(tried) if low else max(tried)):
                break  # nothing trained (no edge to follow) or the best is inside
            new = min(tried) / 3.0 if low else max(tried) * 3.0
            tried.append(new)
            nll[new] = val_nll(new)
    return tried


def select_best(records: Dict[Tuple[float, float], dict]) -> Tuple[float, float]:
    """The (rate, ratio) with the lowest validation NLL (ties: the smaller rate, then the smaller ratio)."""
    ok = {k: r for k, r in records.items() if r and math.isfinite(r.get("val_nll", math.inf))}
    if not ok:
        raise RuntimeError("no learning rate of the sweep trained to a finite validation NLL")
    return min(ok, key=lambda k: (ok[k]["val_nll"], k[0], k[1]))
