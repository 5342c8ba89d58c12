"""Uncertainty of the comparison's numbers: paired bootstrap confidence intervals over test inputs.

Every method is scored on the same test inputs with several training seeds. A metric's point estimate is its
value on all inputs averaged over the seeds. Its 95% interval is a two-level (hierarchical) bootstrap: each
replicate draws the training seeds with replacement and the *test inputs* with replacement (Koehn 2004,
"Statistical significance tests for machine translation evaluation", for the inputs), recomputes the metric on
the drawn inputs for every drawn seed and averages; so the interval covers both the choice of test inputs and
the training seed's luck (with 3 seeds the seed level is coarse). ``resample_seeds=False`` keeps the seeds
fixed (the inputs-only interval). A difference between two methods is *paired*: both are recomputed on the same
drawn inputs and, when both have the same seeds, the same drawn seeds (seed ``s`` of every method shares the
training data order), which removes the variance they share. Intervals are percentile intervals of ``n_boot``
replicates from a fixed generator, so a report is reproducible.

A metric is described by per-input values of shape ``[seeds, inputs]`` (averaged per input: ROUGE, BERTScore,
NLL) or, for corpus BLEU, by per-input sacrebleu sufficient statistics of shape ``[seeds, inputs, K]`` summed
before the score is computed (:func:`qaa.experiments.metrics.bleu_from_stats`).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np

__all__ = ["Interval", "MetricSpec", "estimate", "bootstrap", "paired_difference", "verdict", "mean_reduce",
           "N_BOOT", "BOOT_SEED"]

#: Bootstrap replicates and generator seed used by the reports.
N_BOOT = 2000
BOOT_SEED = 12345


@dataclasses.dataclass(frozen=True)
class Interval:
    """A point estimate with a 95% percentile-bootstrap interval ``[lo, hi]`` and the spread over seeds."""

    value: float
    lo: float
    hi: float
    seed_sd: Optional[float] = None

    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """How to turn per-input data into a metric: ``reduce(data[seed, idx]) -> float`` for one seed and a set of
    input indices (with repeats). ``higher_is_better`` orients the verdicts."""

    name: str
    label: str
    reduce: Callable[[np.ndarray], float]
    higher_is_better: bool = True


def _per_seed(data: np.ndarray, spec: MetricSpec, idx: np.ndarray) -> np.ndarray:
    return np.array([spec.reduce(data[s][idx]) for s in range(data.shape[0])])


def _check(data) -> np.ndarray:
    arr = np.asarray(data, dtype=np.float64)
    if arr.ndim < 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"per-input data must have shape [seeds, inputs, ...] with both >= 1, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("per-input data hold non-finite values")
    return arr


def estimate(data, spec: MetricSpec) -> tuple:
    """``(value averaged over seeds, standard deviation over seeds or None for one seed)`` on all inputs."""
    arr = _check(data)
    vals = _per_seed(arr, spec, np.arange(arr.shape[1]))
    sd = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
    return float(vals.mean()), sd


def _draws(n_boot: int, seed: int, n_inputs: int, *seed_counts: int):
    """Per replicate: input indices ``[n_inputs]`` and, per seed count, seed indices (all 0..S-1 drawn with
    replacement; identical draws for equal counts, so equal seed sets stay paired)."""
    rng = np.random.default_rng(seed)
    inputs = rng.integers(0, n_inputs, size=(n_boot, n_inputs))
    seeds = {s: rng.integers(0, s, size=(n_boot, s)) for s in sorted(set(seed_counts))}
    return inputs, seeds


def _replicates(arrs, spec: MetricSpec, n_boot: int, seed: int, resample_seeds: bool) -> np.ndarray:
    """``[n_boot, len(arrs)]``: each array's metric on every replicate (seeds averaged)."""
    counts = [a.shape[0] for a in arrs]
    inputs, seed_draws = _draws(n_boot, seed, arrs[0].shape[1], *counts)
    out = np.empty((n_boot, len(arrs)))
    for r in range(n_boot):
        for j, arr in enumerate(arrs):
            per_seed = _per_seed(arr, spec, inputs[r])
            out[r, j] = per_seed[seed_draws[arr.shape[0]][r]].mean() if resample_seeds else per_seed.mean()
    return out


def bootstrap(data, spec: MetricSpec, n_boot: int = N_BOOT, seed: int = BOOT_SEED, level: float = 0.95,
              resample_seeds: bool = True) -> Interval:
    """Percentile bootstrap interval of a metric over test inputs and training seeds (see the module docstring).

    Args:
        data: ``[seeds, inputs]`` or ``[seeds, inputs, K]`` array-like of finite numbers.
        spec: the metric. n_boot: replicates (>= 100). seed: generator seed. level: interval coverage.
        resample_seeds: also draw the seeds with replacement (default); False keeps them fixed.

    Raises:
        ValueError: malformed data, too few replicates, ``level`` outside (0, 1).
    """
    arr = _check(data)
    if n_boot < 100:
        raise ValueError(f"n_boot must be >= 100, got {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    value, sd = estimate(arr, spec)
    reps = _replicates([arr], spec, n_boot, seed, resample_seeds)[:, 0]
    alpha = (1 - level) / 2
    return Interval(value, float(np.quantile(reps, alpha)), float(np.quantile(reps, 1 - alpha)), sd)


def paired_difference(a, b, spec: MetricSpec, n_boot: int = N_BOOT, seed: int = BOOT_SEED,
                      level: float = 0.95, resample_seeds: bool = True) -> Interval:
    """Interval of ``metric(a) - metric(b)`` for two methods scored on the same inputs (same order): every
    replicate draws one set of input indices for both, and one set of seed indices when both have as many
    seeds. The seed counts of ``a`` and ``b`` may differ (their seeds are then drawn independently).

    Raises:
        ValueError: different input counts, or malformed data (see :func:`bootstrap`).
    """
    x, y = _check(a), _check(b)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"paired data need the same inputs: {x.shape[1]} vs {y.shape[1]}")
    full = np.arange(x.shape[1])
    value = float(_per_seed(x, spec, full).mean() - _per_seed(y, spec, full).mean())
    both = _replicates([x, y], spec, n_boot, seed, resample_seeds)
    reps = both[:, 0] - both[:, 1]
    alpha = (1 - level) / 2
    return Interval(value, float(np.quantile(reps, alpha)), float(np.quantile(reps, 1 - alpha)))


def verdict(a: str, b: str, spec: MetricSpec, diff: Interval, digits: int = 2) -> str:
    """One sentence on ``a - b`` for a metric, generated from the interval: "no significant difference" when it
    includes zero, else which method is better, with the difference and its interval (``digits`` decimals)."""
    f = lambda x: f"{x:+.{digits}f}"  # noqa: E731
    text = f"{spec.label}: {a} − {b} = {f(diff.value)} (95% CI [{f(diff.lo)}, {f(diff.hi)}])"
    if not diff.excludes_zero():
        return f"{text}: no significant difference."
    a_better = (diff.value > 0) == spec.higher_is_better
    return f"{text}: {a if a_better else b} is better."


def mean_reduce(values: np.ndarray) -> float:
    """Mean of per-input values (one seed)."""
    return float(np.mean(values))
