"""Numbers behind the QAA paper's claim of "stronger generalisation across diverse downstream tasks".

Two measurements, each with its rule:

* **Held-out categories** (:func:`difference_of_differences`): on a task whose test inputs are flagged seen /
  held-out (WebNLG's categories), the reference-minus-method gap on held-out inputs minus the gap on seen ones.
  Negative in NLL: the reference loses less than the method when the category is new.
* **Across tasks** (:func:`task_contrast`): the reference-minus-method gap of each task (the comparison's own
  paired difference), combined with stated weights: the macro mean (each task weighted equally, the usual
  "average over tasks" of multi-task benchmarks) and the last-minus-first task contrast (does the gap change
  from the first task to another?). Tasks have different inputs, so each task's inputs are resampled on their
  own; the training seeds are drawn once per replicate for every task when all have the same seeds (seed ``s``
  initialises the adapter on every task, so a seed's runs may be correlated across tasks), and the seed-level
  interval is Student's t over the combined per-seed values (seed ``s`` of every task together).

The claims row (:func:`generalisation_verdict`) compares QAA with the PEFT baselines the paper names
(:data:`GENERALISATION_BASELINES`; controls such as bias-only are reported in the tables, not judged here) and
calls a measurement significant only when the bootstrap and the seed-level intervals both exclude 0.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

__all__ = ["difference_of_differences", "generalisation_lines", "task_contrast", "cross_task_lines",
           "generalisation_verdict", "GENERALISATION_BASELINES", "TABLE_METHODS"]

#: The PEFT baselines the paper names, which the claims row judges the reference against (present ones only).
GENERALISATION_BASELINES = ("lora_r4", "lora", "prefix", "sora")
#: The methods the report's tables compare the reference with (the baselines and the bias-only control).
TABLE_METHODS = GENERALISATION_BASELINES + ("bias",)


def _check_boot(n_boot: int, level: float) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 100:
        raise ValueError(f"n_boot must be an integer >= 100, got {n_boot!r}")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")


def _label(method: str) -> str:
    from . import registry

    return registry.label(method)


def difference_of_differences(a, b, unseen: Sequence[bool], spec, n_boot: int = 2000, seed: int = 0,
                              level: float = 0.95) -> dict:
    """The test of "stronger generalisation": ``(metric(a) - metric(b))`` on the unseen inputs minus the same on
    the seen inputs, for two methods scored on the same inputs with the same seeds (rows paired by seed).

    Args:
        a, b: per-input data ``[seeds, inputs, ...]`` as :func:`qaa.experiments.stats.paired_difference` takes.
        unseen: one flag per input (True: from a category held out of training).
        spec: the metric (:class:`qaa.experiments.stats.MetricSpec`).

    Returns:
        ``{"value", "lo", "hi", "seed_lo", "seed_hi", "per_seed", "n_unseen", "n_seen"}``: the point estimate
        (seeds averaged), a two-level bootstrap interval (inputs drawn with replacement within each group, the
        same draw for both methods; seeds drawn with replacement, paired), and a Student-t interval over the
        per-seed values (``None`` with one seed). Positive means ``a``'s advantage over ``b`` (in the metric's
        units, before orientation) is larger on unseen inputs.

    Raises:
        ValueError: shapes differ, the seed counts differ, a group is empty, non-finite or malformed data
            (:func:`qaa.experiments.stats.bootstrap`'s checks), ``n_boot < 100`` or ``level`` outside (0, 1).
    """
    import numpy as np
    from .stats import _check, seed_level_factor

    _check_boot(n_boot, level)
    x, y = _check(a), _check(b)
    mask = np.asarray(unseen, dtype=bool)
    if x.shape != y.shape or x.shape[1] != mask.shape[0]:
        raise ValueError(f"a {x.shape}, b {y.shape} and unseen ({mask.shape[0]}) must agree")
    iu, iseen = np.flatnonzero(mask), np.flatnonzero(~mask)
    if not len(iu) or not len(iseen):
        raise ValueError("both the seen and the unseen group need inputs")

    def stat(s, idx_u, idx_s):
        return ((spec.reduce(x[s][idx_u]) - spec.reduce(y[s][idx_u]))
                - (spec.reduce(x[s][idx_s]) - spec.reduce(y[s][idx_s])))

    per_seed = np.array([stat(s, iu, iseen) for s in range(x.shape[0])])
    rng = np.random.default_rng(seed)
    reps = np.empty(n_boot)
    for r in range(n_boot):
        du = iu[rng.integers(0, len(iu), len(iu))]
        ds = iseen[rng.integers(0, len(iseen), len(iseen))]
        seeds = rng.integers(0, x.shape[0], x.shape[0])
        reps[r] = np.mean([stat(s, du, ds) for s in seeds])
    alpha = (1 - level) / 2
    out = {"value": float(per_seed.mean()), "lo": float(np.quantile(reps, alpha)),
           "hi": float(np.quantile(reps, 1 - alpha)), "seed_lo": None, "seed_hi": None,
           "per_seed": [float(v) for v in per_seed], "n_unseen": int(len(iu)), "n_seen": int(len(iseen))}
    if len(per_seed) >= 2:
        half = seed_level_factor(len(per_seed), level) * float(per_seed.std(ddof=1))
        out["seed_lo"], out["seed_hi"] = out["value"] - half, out["value"] + half
    return out


def _dod_sign(d: dict) -> int:
    """-1 / +1 when the bootstrap and the seed-level intervals of a difference of differences both lie below /
    above 0, else 0 (also with no seed-level interval)."""
    if d["seed_lo"] is None:
        return 0
    if d["hi"] < 0 and d["seed_hi"] < 0:
        return -1
    if d["lo"] > 0 and d["seed_lo"] > 0:
        return 1
    return 0


def generalisation_lines(entries: Dict[str, dict], seen: Sequence[bool], metrics: Dict[str, object],
                         reference: str = "qaa", against: Sequence[str] = TABLE_METHODS) -> List[str]:
    """The difference-of-differences table of a task with seen / held-out test inputs (``seen`` flags, as
    recorded in ``results["tasks"][task]["test_seen"]``): for each method of ``against`` present with as many
    seeds as the reference, the reference-minus-method gap on unseen inputs minus the gap on seen ones, per
    metric of ``metrics`` (name -> MetricSpec), with its bootstrap and seed-level intervals. Empty when the
    task has no such groups."""
    if not seen or all(seen) or not any(seen) or reference not in entries:
        return []
    unseen = [not s for s in seen]
    ref = entries[reference].get("arrays", {})
    rows = []
    for m in against:
        arr = entries.get(m, {}).get("arrays", {})
        cells = []
        for key, spec in metrics.items():
            if key not in ref or key not in arr or ref[key].shape != arr[key].shape:
                cells.append("-")
                continue
            d = difference_of_differences(ref[key], arr[key], unseen, spec)
            seed = "" if d["seed_lo"] is None else f"; seed-level [{d['seed_lo']:+.3f}, {d['seed_hi']:+.3f}]"
            both = _dod_sign(d) != 0
            cells.append(f"{'**' if both else ''}{d['value']:+.3f}{'**' if both else ''} "
                         f"[{d['lo']:+.3f}, {d['hi']:+.3f}{seed}]")
        if any(c != "-" for c in cells):
            rows.append(f"| {_label(m)} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    head = " | ".join(getattr(spec, "label", key) for key, spec in metrics.items())
    return ["", f"**Generalisation** ({_label(reference)} − method on held-out-category inputs, minus the same on "
                "seen-category inputs; in each metric's units: a higher value for a higher-is-better metric, a lower "
                "one for NLL, means the reference generalises better than the method; bold where the bootstrap and "
                "the seed-level intervals both exclude 0):", "",
            f"| method | {head} |", "|---|" + "---:|" * len(metrics)] + rows


def task_contrast(pairs: Sequence[Tuple[object, object]], weights: Sequence[float], spec, n_boot: int = 2000,
                  seed: int = 0, level: float = 0.95) -> dict:
    """A weighted sum over tasks of ``metric(a) - metric(b)``, with intervals (see the module docstring).

    Args:
        pairs: per task, ``(a, b)``: per-input data ``[seeds, inputs, ...]`` of the reference and the method on
            that task's test inputs (same inputs, same seed order within a task; tasks may differ in inputs).
        weights: one per task, e.g. ``[1/T] * T`` for the macro mean or ``[-1, 0, ..., 1]`` for the
            last-minus-first contrast.
        spec: the metric (:class:`qaa.experiments.stats.MetricSpec`).

    Returns:
        ``{"value", "lo", "hi", "seed_lo", "seed_hi", "per_task", "per_seed"}``: the point estimate (seeds
        averaged within each task), the bootstrap interval (``n_boot`` replicates; each task's inputs drawn on
        their own, the same draw for both methods; when every array has the same seed count, one seed draw per
        replicate shared by all tasks, else each array's seeds drawn on their own), the Student-t interval over
        the per-seed combined values (``None`` unless every task has the same number ``>= 2`` of seeds for both
        methods), each task's gap, and the per-seed combined values.

    Raises:
        ValueError: no tasks, a weight count that differs from the tasks, malformed or non-finite per-task
            data, ``n_boot < 100`` or ``level`` outside (0, 1).
    """
    import numpy as np
    from .stats import _check, _per_seed, seed_level_factor

    _check_boot(n_boot, level)
    if not pairs or len(pairs) != len(weights):
        raise ValueError(f"{len(pairs)} tasks and {len(weights)} weights: give one weight per task (at least one)")
    data = []
    for k, (a, b) in enumerate(pairs):
        x, y = _check(a), _check(b)
        if x.shape[1] != y.shape[1]:
            raise ValueError(f"task {k}: paired data need the same inputs: {x.shape[1]} vs {y.shape[1]}")
        data.append((x, y))
    rng = np.random.default_rng(seed)
    counts = {arr.shape[0] for pair in data for arr in pair}
    shared = len(counts) == 1
    seed_draws = rng.integers(0, counts.pop(), size=(n_boot, len(next(iter(data))[0]))) if shared else None
    reps = np.zeros(n_boot)
    gaps, per_seed_gaps = [], []
    for (x, y), w in zip(data, weights):
        full = np.arange(x.shape[1])
        px, py = _per_seed(x, spec, full), _per_seed(y, spec, full)
        gaps.append(float(px.mean() - py.mean()))
        per_seed_gaps.append(px - py if len(px) == len(py) else None)
        inputs = rng.integers(0, x.shape[1], size=(n_boot, x.shape[1]))
        for r in range(n_boot):
            rx, ry = _per_seed(x, spec, inputs[r]), _per_seed(y, spec, inputs[r])
            if shared:
                sx = sy = seed_draws[r]
            else:
                sx, sy = rng.integers(0, len(rx), len(rx)), rng.integers(0, len(ry), len(ry))
            reps[r] += float(w) * (rx[sx].mean() - ry[sy].mean())
    alpha = (1 - level) / 2
    value = float(sum(float(w) * g for w, g in zip(weights, gaps)))
    out = {"value": value, "lo": float(np.quantile(reps, alpha)), "hi": float(np.quantile(reps, 1 - alpha)),
           "seed_lo": None, "seed_hi": None, "per_task": gaps, "per_seed": None}
    lengths = {None if g is None else len(g) for g in per_seed_gaps}
    if len(lengths) == 1 and None not in lengths and lengths.pop() >= 2:
        combined = sum(float(w) * g for w, g in zip(weights, per_seed_gaps))
        half = seed_level_factor(len(combined), level) * float(np.std(combined, ddof=1))
        out.update(seed_lo=float(combined.mean() - half), seed_hi=float(combined.mean() + half),
                   per_seed=[float(v) for v in combined])
    return out


def _sign(d: dict) -> int:
    """-1 / +1 when the bootstrap and the seed-level intervals both lie below / above 0, else 0."""
    return _dod_sign(d)


def _cross_task_pairs(per_task: Dict[str, Dict[str, dict]], reference: str, method: str, key: str, n_seeds: int
                      ) -> Tuple[List[str], list]:
    """The tasks where both methods have ``n_seeds`` scored seeds of ``key`` on the same inputs, and their data."""
    tasks, pairs = [], []
    for task, entries in per_task.items():
        a = entries.get(reference, {}).get("arrays", {}).get(key)
        b = entries.get(method, {}).get("arrays", {}).get(key)
        if a is None or b is None or a.shape != b.shape or a.shape[0] != n_seeds:
            continue
        tasks.append(task)
        pairs.append((a, b))
    return tasks, pairs


def _fmt(d: dict, digits: int = 3) -> str:
    seed = "" if d["seed_lo"] is None else f"; seed-level [{d['seed_lo']:+.{digits}f}, {d['seed_hi']:+.{digits}f}]"
    return f"{d['value']:+.{digits}f} [{d['lo']:+.{digits}f}, {d['hi']:+.{digits}f}{seed}]"


def cross_task_lines(per_task: Dict[str, Dict[str, dict]], metrics: Dict[str, object], n_seeds: int,
                     reference: str = "qaa", against: Sequence[str] = TABLE_METHODS) -> List[str]:
    """The across-tasks table: for each method of ``against`` scored with ``n_seeds`` seeds beside the reference
    on at least two tasks, per metric of ``metrics`` (name -> MetricSpec): each task's gap, the macro mean and
    the last-minus-first contrast (:func:`task_contrast`). Empty when no method qualifies."""
    rows = []
    for m in against:
        for key, spec in metrics.items():
            tasks, pairs = _cross_task_pairs(per_task, reference, m, key, n_seeds)
            if len(tasks) < 2:
                continue
            macro = task_contrast(pairs, [1.0 / len(tasks)] * len(tasks), spec)
            contrast = task_contrast(pairs, [-1.0] + [0.0] * (len(tasks) - 2) + [1.0], spec)
            gaps = "; ".join(f"{t} {g:+.3f}" for t, g in zip(tasks, macro["per_task"]))
            rows.append(f"| {_label(m)} | {getattr(spec, 'label', key)} | {gaps} | {_fmt(macro)} | "
                        f"{tasks[-1]} − {tasks[0]}: {_fmt(contrast)} |")
    if not rows:
        return []
    return ["", "## Across tasks", "",
            f"{_label(reference)} − method on each task (seeds averaged), their macro mean (tasks weighted "
            "equally) and the change of the gap from the first task to the last, with a 95% bootstrap interval "
            "(each task's inputs resampled on their own, the training seeds drawn once for every task) and a "
            "seed-level Student-t interval; "
            "negative NLL / positive BLEU and ROUGE-L favour the reference. Only methods with every planned seed "
            "on at least two tasks.", "",
            "| method | metric | gap per task | macro mean | change of the gap |", "|---|---|---|---:|---:|"] + rows


def generalisation_verdict(per_task: Dict[str, Dict[str, dict]], seen_by_task: Dict[str, Sequence[bool]], spec,
                           n_seeds: int, reference: str = "qaa",
                           against: Sequence[str] = GENERALISATION_BASELINES) -> Optional[Tuple[str, str, str]]:
    """``(what was measured, verdict, numbers)`` for the claims table's generalisation row, in test NLL
    (``spec``), or ``None`` when the run holds neither held-out categories nor a baseline on two tasks (each
    with ``n_seeds`` scored seeds beside the reference).

    Measurements, against each baseline of ``against`` (the paper's PEFT baselines):

    * across tasks (two or more): the macro mean of the gaps; it counts as below 0 only if its bootstrap and
      seed-level intervals both lie below 0 *and* no single task's gap lies significantly above 0 (and
      conversely), so an average cannot hide a task where the reference is worse;
    * held-out categories: the difference of differences, below or above 0 by both intervals.

    Rule: "stronger" only if every measurement lies below 0; "weaker" only if every one lies above 0; else
    "not shown"."""
    signs, numbers = [], []
    for m in against:
        tasks, pairs = _cross_task_pairs(per_task, reference, m, "nll", n_seeds)
        if len(tasks) < 2:
            continue
        macro = task_contrast(pairs, [1.0 / len(tasks)] * len(tasks), spec)
        per = [_sign(task_contrast([pair], [1.0], spec, seed=k)) for k, pair in enumerate(pairs)]
        sign = _sign(macro)
        signs.append(sign if -sign not in per else 0)
        gaps = ", ".join(f"{t} {g:+.4f}" for t, g in zip(tasks, macro["per_task"]))
        numbers.append(f"vs {_label(m)}: macro mean over {', '.join(tasks)} {_fmt(macro, 4)} (gaps {gaps})")
    for task, seen in seen_by_task.items():
        if not seen or all(seen) or not any(seen):
            continue
        entries = per_task.get(task, {})
        ref = entries.get(reference, {}).get("arrays", {}).get("nll")
        for m in against:
            arr = entries.get(m, {}).get("arrays", {}).get("nll")
            if ref is not None and arr is not None and arr.shape == ref.shape and ref.shape[0] == n_seeds:
                d = difference_of_differences(ref, arr, [not s for s in seen], spec)
                signs.append(_dod_sign(d))
                numbers.append(f"{task} held-out minus seen categories, vs {_label(m)}: {_fmt(d, 4)}")
    if not signs:
        return None
    verdict = "stronger" if set(signs) == {-1} else "weaker" if set(signs) == {1} else "not shown"
    return ("QAA − PEFT baseline test NLL: the macro mean over tasks (with no task significantly the other way), "
            "and on held-out categories minus on seen ones (negative: QAA generalises better; rule: every one "
            "below 0 for \"stronger\", every one above 0 for \"weaker\", with the bootstrap and seed-level "
            "intervals both excluding 0)", verdict, "; ".join(numbers))
