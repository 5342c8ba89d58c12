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

With few seeds the bootstrap's seed level is coarse (3 seeds give 10 distinct seed draws, and resampling them
understates the seed variance by a factor (S - 1) / S), so a difference is called *significant* only when three
checks agree (:meth:`Interval.significant`): its bootstrap interval excludes 0; the seed-level paired t
interval excludes 0 (the per-seed differences on all inputs, mean ± t(S - 1, 0.975) sd / sqrt(S), Student's t
with S - 1 degrees of freedom: the training-seed variance counted in full, inputs held fixed); and its bootstrap
p-value (twice the smaller share of replicates on either side of 0), Holm-adjusted over the family of
comparisons it is reported with (:func:`holm`; Holm 1979, "A simple sequentially rejective multiple test
procedure"), is below 0.05.

A metric is described by per-input values of shape ``[seeds, inputs]`` (averaged per input: ROUGE, BERTScore,
NLL) or, for corpus BLEU, by per-input sacrebleu sufficient statistics of shape ``[seeds, inputs, K]`` summed
before the score is computed (:func:`qaa.experiments.metrics.bleu_from_stats`).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Optional, Tuple

import numpy as np

__all__ = ["Interval", "MetricSpec", "estimate", "bootstrap", "paired_difference", "holm", "signed", "verdict",
           "mean_reduce", "format_p", "seed_level_factor", "N_BOOT", "BOOT_SEED", "ALPHA"]

#: Bootstrap replicates and generator seed used by the reports.
N_BOOT = 2000
BOOT_SEED = 12345
#: Significance level of the verdicts (two-sided).
ALPHA = 0.05


@dataclasses.dataclass(frozen=True)
class Interval:
    """A point estimate with a 95% percentile-bootstrap interval ``[lo, hi]`` and the spread over seeds.

    For a paired difference (:func:`paired_difference`) also: ``seed_diffs``, the difference on all inputs per
    paired seed (in the seeds' order), and ``seed_lo``/``seed_hi``, the seed-level paired t interval over them
    (None with fewer than 2 paired seeds); ``p``, the bootstrap two-sided p-value; ``p_adjusted``, ``p``
    after Holm's adjustment over the family it is reported with (set by the caller with :func:`holm`).
    """

    value: float
    lo: float
    hi: float
    seed_sd: Optional[float] = None
    seed_lo: Optional[float] = None
    seed_hi: Optional[float] = None
    seed_diffs: Optional[Tuple[float, ...]] = None
    p: Optional[float] = None
    p_adjusted: Optional[float] = None

    def excludes_zero(self) -> bool:
        """The bootstrap interval excludes 0."""
        return self.lo > 0 or self.hi < 0

    def seeds_exclude_zero(self) -> Optional[bool]:
        """The seed-level t interval excludes 0 (None when there is none)."""
        if self.seed_lo is None or self.seed_hi is None:
            return None
        return self.seed_lo > 0 or self.seed_hi < 0

    def significant(self, alpha: float = ALPHA) -> bool:
        """All three checks exist and reject 0: the bootstrap interval, the seed-level interval (so one training
        seed is never enough: a difference could be that seed's luck) and the p-value (Holm-adjusted when set)."""
        p = self.p_adjusted if self.p_adjusted is not None else self.p
        return self.excludes_zero() and self.seeds_exclude_zero() is True and p is not None and p < alpha


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
    seeds. The seed counts of ``a`` and ``b`` may differ (their seeds are then drawn independently, and there is
    no seed-level interval). With equal counts ``S >= 2``, row ``s`` of ``a`` is paired with row ``s`` of ``b``
    for the seed-level t interval (the caller keeps the seeds in the same order).

    Returns an :class:`Interval` with the bootstrap interval, ``seed_lo``/``seed_hi`` and the bootstrap ``p``.

    Raises:
        ValueError: different input counts, or malformed data (see :func:`bootstrap`).
    """
    from scipy.stats import t as student_t

    x, y = _check(a), _check(b)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"paired data need the same inputs: {x.shape[1]} vs {y.shape[1]}")
    full = np.arange(x.shape[1])
    per_x, per_y = _per_seed(x, spec, full), _per_seed(y, spec, full)
    value = float(per_x.mean() - per_y.mean())
    both = _replicates([x, y], spec, n_boot, seed, resample_seeds)
    reps = both[:, 0] - both[:, 1]
    alpha = (1 - level) / 2
    p = float(min(1.0, 2 * min(np.mean(reps <= 0), np.mean(reps >= 0))))
    seed_lo = seed_hi = seed_diffs = None
    if len(per_x) == len(per_y) >= 2:
        d = per_x - per_y
        half = float(student_t.ppf(1 - alpha, len(d) - 1) * np.std(d, ddof=1) / np.sqrt(len(d)))
        seed_lo, seed_hi, seed_diffs = float(d.mean() - half), float(d.mean() + half), tuple(map(float, d))
    return Interval(value, float(np.quantile(reps, alpha)), float(np.quantile(reps, 1 - alpha)),
                    seed_lo=seed_lo, seed_hi=seed_hi, seed_diffs=seed_diffs, p=p)


def holm(pvalues) -> list:
    """Holm's step-down adjusted p-values, in the input order: sort ascending, ``p_(i) * (m - i)`` for rank
    ``i = 0..m-1``, made non-decreasing along the ranks, capped at 1 (Holm 1979). Rejecting where the adjusted
    value is below ``alpha`` controls the family-wise error rate at ``alpha``.

    Raises:
        ValueError: a value outside [0, 1] or not finite.
    """
    ps = np.asarray(list(pvalues), dtype=np.float64)
    if ps.size and (not np.all(np.isfinite(ps)) or ps.min() < 0 or ps.max() > 1):
        raise ValueError(f"p-values must lie in [0, 1], got {ps.tolist()}")
    m = ps.size
    order = np.argsort(ps, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, float(ps[i]) * (m - rank)))
        adjusted[i] = running
    return adjusted.tolist()


def signed(x: float, digits: int = 2) -> str:
    """``x`` with an explicit sign and ``digits`` decimals (how differences and their bounds are printed)."""
    return f"{x:+.{digits}f}"


def format_p(p: float) -> str:
    """A p-value as printed: three decimals, and ``"< 0.001"`` below 0.001 (a bootstrap of :data:`N_BOOT`
    replicates resolves no finer; ``"0.000"`` would claim a p of zero).

    Raises:
        ValueError: ``p`` outside [0, 1] or not a number.
    """
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
        raise ValueError(f"a p-value must be a number in [0, 1], got {p!r}")
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def seed_level_factor(n_seeds: int, level: float = 0.95) -> float:
    """Half-width of the seed-level paired t interval with ``n_seeds`` seeds, in units of the standard deviation
    of the per-seed differences: ``t(n_seeds - 1, (1 + level) / 2) / sqrt(n_seeds)`` (12.71 / sqrt(2) = 8.98 for
    2 seeds, 4.30 / sqrt(3) = 2.48 for 3).

    Raises:
        ValueError: ``n_seeds`` < 2 (there is no interval) or ``level`` outside (0, 1).
    """
    from scipy.stats import t as student_t

    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or n_seeds < 2:
        raise ValueError(f"a seed-level interval needs 2 or more seeds, got {n_seeds!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return float(student_t.ppf((1 + level) / 2, n_seeds - 1) / np.sqrt(n_seeds))


def verdict(a: str, b: str, spec: MetricSpec, diff: Interval, digits: int = 2) -> str:
    """One sentence on ``a - b`` for a metric, generated from the interval: which method is better when
    :meth:`Interval.significant`, else "no significant difference" (naming the checks that include 0 when the
    bootstrap interval alone would exclude it); with the difference and its intervals (``digits`` decimals)."""
    f = functools.partial(signed, digits=digits)
    text = f"{spec.label}: {a} − {b} = {f(diff.value)} (95% CI [{f(diff.lo)}, {f(diff.hi)}]"
    if diff.seed_lo is not None:
        text += f"; seed-level [{f(diff.seed_lo)}, {f(diff.seed_hi)}]"
    if diff.p_adjusted is not None:
        text += f"; Holm-adjusted p {format_p(diff.p_adjusted)}"
    text += ")"
    if diff.significant():
        a_better = (diff.value > 0) == spec.higher_is_better
        return f"{text}: {a if a_better else b} is better."
    if diff.excludes_zero():
        reasons = []
        if diff.seeds_exclude_zero() is None:
            reasons.append("there is no seed-level interval (it needs 2 or more seeds of both)")
        elif not diff.seeds_exclude_zero():
            reasons.append("the seed-level interval includes 0")
        if diff.p_adjusted is not None and not diff.p_adjusted < ALPHA:
            reasons.append(f"the Holm-adjusted p is {format_p(diff.p_adjusted)}")
        elif diff.p_adjusted is None and (diff.p is None or not diff.p < ALPHA):
            reasons.append("there is no p-value below 0.05" if diff.p is None else f"the p-value is {format_p(diff.p)}")
        return f"{text}: no significant difference (the bootstrap interval excludes 0, but " \
               + " and ".join(reasons) + ")."
    return f"{text}: no significant difference" + _power(diff, f) + "."


def detectable_difference(diff: Interval) -> float:
    """The half-width of the widest of a difference's intervals (bootstrap and, where there is one, seed-level;
    a difference must clear every check): the resolution of the comparison. A true difference of this size would
    be declared about half the time (the estimate falls on either side of it with roughly equal chance), so it
    is a scale of what the run could tell apart, not a bound on the true difference."""
    half = (diff.hi - diff.lo) / 2
    if diff.seed_lo is not None and diff.seed_hi is not None:
        half = max(half, (diff.seed_hi - diff.seed_lo) / 2)
    return float(half)


def _power(diff: Interval, f) -> str:
    h = detectable_difference(diff)
    return (f"; the widest interval's half-width is about ±{f(h).lstrip('+')}: a true difference of that size "
            "would be missed about half the time")


def mean_reduce(values: np.ndarray) -> float:
    """Mean of per-input values (one seed)."""
    return float(np.mean(values))
