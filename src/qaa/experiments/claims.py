"""Numbers behind the QAA paper's claims that a comparison's records already hold: convergence (validation
curves) and stability (learning-rate sensitivity, seed spread, loss spikes, divergences).

Every function reads plain values (lists of numbers, the records of ``results.json``) and states its rule in its
docstring; the report prints the rule beside the number.

Convergence, per run: the validation curve ``[[step, nll], ...]`` (teacher-forced NLL of a fixed validation
subset at fixed optimizer-step counts, step 0 = before training; :func:`qaa.experiments.compare.checkpoint_steps`).

* **Area under the curve** (:func:`curve_area`): the trapezoidal area under NLL over steps, divided by the last
  step, i.e. the mean validation NLL over training (nats/token; lower = faster and/or lower).
* **Steps to target** (:func:`steps_to_target`): the first checkpoint step at which the curve is at or below the
  target, linearly interpolated between the checkpoints around the crossing; ``None`` if never reached.
* **Common target** (:func:`common_target`): the worst (highest) mean final curve NLL among the methods compared,
  so that every method reaches it on average.
* QAA against a method: the per-seed difference (runs paired by training seed), mean and a Student-t interval
  over seeds (:func:`seed_paired_interval`) and the paired t test's p-value (:func:`seed_paired_p`), Holm-adjusted
  over the comparisons of one table or claim; a direction is stated only when the interval excludes 0 and the
  adjusted p-value is below 0.05. With 3 seeds, t(2) = 4.30, so only large effects are resolved.
"""
from __future__ import annotations

import math
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

from .generalisation import generalisation_verdict
from .stats import ALPHA, format_p

__all__ = ["curve_area", "steps_to_target", "common_target", "seed_paired_interval", "seed_paired_p", "loss_spikes",
           "rate_sensitivity", "SPIKE_FACTOR", "SPIKE_WINDOW", "RATE_TOLERANCE"]

#: A loss spike is a step whose loss exceeds SPIKE_FACTOR x the median of the SPIKE_WINDOW steps before it.
SPIKE_FACTOR = 1.5
SPIKE_WINDOW = 8
#: Swept rates whose validation NLL is within RATE_TOLERANCE nats/token of the best count as "good" rates.
RATE_TOLERANCE = 0.02


def _check_curve(curve: Sequence[Sequence[float]]) -> Tuple[List[float], List[float]]:
    if len(curve) < 2:
        raise ValueError(f"a validation curve needs at least 2 points, got {len(curve)}")
    steps = [float(p[0]) for p in curve]
    values = [float(p[1]) for p in curve]
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError(f"curve steps must increase strictly, got {steps}")
    return steps, values


def curve_area(curve: Sequence[Sequence[float]]) -> float:
    """Trapezoidal area under ``curve`` (``[[step, nll], ...]``, steps increasing) divided by the step span:
    the mean NLL over training, nats/token. A non-finite point makes the result ``inf`` (a diverged run).

    Raises:
        ValueError: fewer than 2 points or steps not strictly increasing.
    """
    steps, values = _check_curve(curve)
    if not all(math.isfinite(v) for v in values):
        return math.inf
    area = sum((s1 - s0) * (v0 + v1) / 2 for s0, s1, v0, v1 in zip(steps, steps[1:], values, values[1:]))
    return area / (steps[-1] - steps[0])


def steps_to_target(curve: Sequence[Sequence[float]], target: float) -> Optional[float]:
    """The first step at which ``curve`` reaches ``target`` (NLL <= target), linearly interpolated between the two
    checkpoints around the first crossing; the first step itself if it already is at or below. ``None`` if the
    curve never reaches it.

    Raises:
        ValueError: as :func:`curve_area`; a non-finite ``target``.
    """
    if not math.isfinite(target):
        raise ValueError(f"target must be finite, got {target}")
    steps, values = _check_curve(curve)
    if values[0] <= target:
        return steps[0]
    for s0, s1, v0, v1 in zip(steps, steps[1:], values, values[1:]):
        if math.isfinite(v1) and v1 <= target:
            if not math.isfinite(v0) or v0 == v1:
                return s1
            return s0 + (s1 - s0) * (v0 - target) / (v0 - v1)
    return None


def common_target(final_nll_by_method: Dict[str, Sequence[float]]) -> float:
    """The convergence target: the highest, over methods, of the mean final curve NLL across that method's seeds
    (so every method reaches it on average).

    Raises:
        ValueError: no method, or a method without a finite final value.
    """
    means = []
    for method, values in final_nll_by_method.items():
        finite = [float(v) for v in values if math.isfinite(v)]
        if not finite:
            raise ValueError(f"method {method} has no finite final validation NLL")
        means.append(statistics.fmean(finite))
    if not means:
        raise ValueError("no method to take a target from")
    return max(means)


def _seed_differences(a: Dict[int, float], b: Dict[int, float]) -> Optional[List[float]]:
    """``a[seed] - b[seed]`` over the seeds both have, in seed order; ``None`` with fewer than 2 or a non-finite
    one (no interval or test)."""
    diffs = [float(a[s]) - float(b[s]) for s in sorted(set(a) & set(b))]
    return diffs if len(diffs) >= 2 and all(math.isfinite(d) for d in diffs) else None


def seed_paired_interval(a: Dict[int, float], b: Dict[int, float], level: float = 0.95
                         ) -> Optional[Tuple[float, float, float, int]]:
    """Mean and Student-t interval of ``a[seed] - b[seed]`` over the seeds both have (runs paired by training
    seed): ``(mean, low, high, n)``; ``None`` with fewer than 2 common seeds (no spread to estimate) or a
    non-finite difference.

    The interval is ``mean +- t_{n-1} * sd / sqrt(n)`` (scipy's Student t quantile).
    """
    from scipy import stats as st

    diffs = _seed_differences(a, b)
    if diffs is None:
        return None
    mean = statistics.fmean(diffs)
    half = float(st.t.ppf(0.5 + level / 2, len(diffs) - 1)) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean, mean - half, mean + half, len(diffs)


def seed_paired_p(a: Dict[int, float], b: Dict[int, float]) -> Optional[float]:
    """Two-sided p-value of the paired Student-t test of ``a[seed] - b[seed]`` over the seeds both have (the test
    whose 95% interval is :func:`seed_paired_interval`): ``None`` where that interval is ``None``; 1.0 for
    identical differences of 0, 0.0 for identical nonzero ones (no spread)."""
    from scipy import stats as st

    diffs = _seed_differences(a, b)
    if diffs is None:
        return None
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    if sd == 0.0:
        return 1.0 if mean == 0.0 else 0.0
    t = mean / (sd / math.sqrt(len(diffs)))
    return float(2 * st.t.sf(abs(t), len(diffs) - 1))


def loss_spikes(losses: Sequence[float], factor: float = SPIKE_FACTOR, window: int = SPIKE_WINDOW) -> List[int]:
    """Steps whose training loss exceeds ``factor`` x the median of the ``window`` steps before it (steps with
    fewer than ``window`` predecessors are not judged), plus every non-finite loss.

    Raises:
        ValueError: ``factor`` <= 1 or ``window`` < 1.
    """
    if not factor > 1 or window < 1:
        raise ValueError(f"factor must be > 1 and window >= 1, got {factor} and {window}")
    out = []
    for i, loss in enumerate(losses):
        if not math.isfinite(loss):
            out.append(i)
        elif i >= window:
            ref = statistics.median(losses[i - window:i])
            if math.isfinite(ref) and loss > factor * ref:
                out.append(i)
    return out


def rate_sensitivity(grid: Sequence[dict], tolerance: float = RATE_TOLERANCE) -> Optional[dict]:
    """How forgiving a method is of its learning rate, from its sweep (``selection.grid`` records
    ``{"lr", "theta_lr_ratio", "val_nll"}``; only angle ratio 1 rows, the rate sweep proper, are used).

    Returns ``{"best_lr", "good": [rates within tolerance of the best validation NLL], "span": max/min of the
    good rates (1 = only the best), "tried": number of rates, "failed": rates without a finite NLL}``, or
    ``None`` when no rate trained.
    """
    rows = [g for g in grid if float(g.get("theta_lr_ratio", 1.0)) == 1.0]
    finite = [(float(g["lr"]), float(g["val_nll"])) for g in rows
              if g.get("val_nll") is not None and math.isfinite(float(g["val_nll"]))]
    if not finite:
        return None
    best_lr, best = min(finite, key=lambda x: (x[1], x[0]))
    good = sorted(lr for lr, v in finite if v <= best + tolerance)
    return {"best_lr": best_lr, "good": good, "span": good[-1] / good[0], "tried": len(rows),
            "failed": len(rows) - len(finite)}


# ---------------------------------------------------------------------------------------------- report lines

def _label(method: str) -> str:
    from . import registry

    return registry.label(method)


def _direction(iv, p_adjusted: float) -> str:
    """``"faster"`` / ``"slower"`` / ``"indistinguishable"`` for an interval of reference-minus-method area: a
    direction only when the interval excludes 0 and the Holm-adjusted p-value of its family is below 0.05 (the
    two checks a seed-level comparison has; the difference tables add a bootstrap over inputs)."""
    if p_adjusted >= ALPHA:
        return "indistinguishable"
    return "faster" if iv[2] < 0 else "slower" if iv[1] > 0 else "indistinguishable"


def _holm_directions(pairs: List[Tuple[dict, dict]]) -> List[Optional[Tuple[str, tuple, float]]]:
    """For each ``(reference areas, method areas)`` pair of one family: ``(direction, interval, Holm-adjusted
    p)``, or ``None`` where there is no interval (fewer than 2 common seeds); Holm's adjustment runs over the
    pairs that have one."""
    from .stats import holm

    ivs = [seed_paired_interval(a, b) for a, b in pairs]
    ps = [seed_paired_p(a, b) if iv is not None else None for (a, b), iv in zip(pairs, ivs)]
    adjusted = iter(holm([p for p in ps if p is not None]))
    out = []
    for iv, p in zip(ivs, ps):
        if iv is None or p is None:
            out.append(None)
            continue
        q = float(next(adjusted))
        out.append((_direction(iv, q), iv, q))
    return out


def _fmt_ci(iv, digits: int = 3) -> str:
    mean, lo, hi, _ = iv
    return f"{mean:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def convergence_lines(entries: Dict[str, dict], reference: str = "qaa",
                      families: Optional[Sequence[Sequence[str]]] = None) -> List[str]:
    """The convergence table of one task, from the final runs' validation curves (``entries`` as
    :func:`qaa.experiments.report.collect` returns them). Empty when no run recorded a curve.

    Per method: the mean area under the curve (mean validation NLL over training, :func:`curve_area`) with its
    spread over seeds, the mean steps to the common target (:func:`common_target`, :func:`steps_to_target`) and
    how many runs reached it, and the reference minus the method in area, per seed paired, with its t interval
    and the paired t test's p-value, Holm-adjusted within its family: each of ``families`` (lists of methods, e.g.
    the comparison's declared methods and the size sweep's added configurations, as the difference tables split
    them) is one, the methods in none of them another (all of them one when ``families`` is ``None``). The verdict says
    "faster" / "slower" only when that interval excludes 0 and the adjusted p-value is below 0.05, and otherwise
    states the interval's half-width.
    """
    curves = {m: {r["seed"]: r["val_curve"] for r in e.get("runs", []) if r.get("val_curve")}
              for m, e in entries.items()}
    curves = {m: c for m, c in curves.items() if c}
    if not curves:
        return []
    finals = {m: [c[-1][1] for c in by_seed.values()] for m, by_seed in curves.items()}
    try:
        target = common_target(finals)
    except ValueError:
        return []
    area = {m: {s: curve_area(c) for s, c in by_seed.items()} for m, by_seed in curves.items()}
    points = len(next(iter(next(iter(curves.values())).values())))
    lines = ["", f"**Convergence** (validation curves: teacher-forced NLL of a fixed validation subset at {points} "
                 "checkpoints of each final run, step 0 included). Area = trapezoidal area under the curve divided "
                 "by the steps, i.e. the mean validation NLL over training (lower: faster and/or lower). Target = "
                 f"{target:.4f}, the worst mean final value among the methods, so each reaches it on average; steps "
                 "to target interpolated between checkpoints. Reference minus method: per training seed, paired, "
                 "with a Student-t 95% interval over seeds and the paired t test's p-value, Holm-adjusted within "
                 + ("this table's comparisons" if not families else
                    "its family (the comparison's declared methods; the size sweep's added configurations apart, "
                    "as in the difference tables)")
                 + "; a direction needs both the interval to exclude 0 and the adjusted p-value below 0.05.", "",
             f"| method | area (mean ± sd over seeds) | steps to target (reached) | {_label(reference)} − method, "
             "area |", "|---|---:|---:|---:|"]
    verdicts = []
    others = [m for m in curves if m != reference and reference in area]
    groups = [[m for m in others if m in fam] for fam in (families or [])]
    grouped = {m for g in groups for m in g}
    groups.append([m for m in others if m not in grouped])
    judged = {}
    for group in groups:
        judged.update(zip(group, _holm_directions([(area[reference], area[m]) for m in group])))
    for m, by_seed in curves.items():
        vals = [v for v in area[m].values() if math.isfinite(v)]   # a diverged run's area is inf
        diverged = len(area[m]) - len(vals)
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        reach = [steps_to_target(c, target) for c in by_seed.values()]
        hit = [x for x in reach if x is not None]
        steps = f"{statistics.fmean(hit):.1f} ({len(hit)}/{len(reach)})" if hit else f"- (0/{len(reach)})"
        cell = "—"
        if judged.get(m) is not None:
            direction, iv, q = judged[m]
            cell = _fmt_ci(iv, 4)
            why = ("the interval includes 0" if iv[1] <= 0 <= iv[2] else
                   f"the interval excludes 0 but the Holm-adjusted p-value is {format_p(q)}")
            word = {"faster": "converges faster (lower area)", "slower": "converges slower (higher area)",
                    "indistinguishable": f"is indistinguishable ({why}; the interval's half-width is "
                                         f"±{(iv[2] - iv[1]) / 2:.4f} nats/token)"}[direction]
            verdicts.append(f"- Against {_label(m)}, {_label(reference)} {word}: {cell} over {iv[3]} seeds, "
                            f"Holm-adjusted p {format_p(q)}.")
            cell += f" (p {format_p(q)})"
        mean = f"{statistics.fmean(vals):.4f} ± {sd:.4f}" if vals else "-"
        mean += f" ({diverged} diverged)" if diverged else ""
        lines.append(f"| {_label(m)} | {mean} | {steps} | {cell} |")
    return lines + ([""] + verdicts if verdicts else [])


def stability_lines(entries: Dict[str, dict]) -> List[str]:
    """The stability table of one task: learning-rate sensitivity from each method's sweep
    (:func:`rate_sensitivity`), the spread over seeds of the test NLL (mean of per-input NLLs), loss spikes of the
    final runs (:func:`loss_spikes`) and runs that failed or diverged (non-finite loss) in the sweep or the
    final runs. Empty when no method has a selection."""
    rows = []
    for m, e in entries.items():
        sel = e.get("selection") or {}
        if sel.get("status") != "ok":
            continue
        sens = rate_sensitivity(sel.get("grid", []))
        span = "-" if sens is None else (f"{sens['span']:.3g}x ({len(sens['good'])} of {sens['tried']} rates)"
                                         if sel.get("swept") else "not swept")
        seed_sd = _seed_sd(e)
        sd = "-" if seed_sd is None else f"{seed_sd:.4f}"
        spikes = sum(len(loss_spikes(r.get("losses", []))) for r in e.get("runs", []))
        failed = sum(1 for g in sel.get("grid", []) if g.get("status") != "ok")
        rows.append(f"| {_label(m)} | {span} | {sd} | {spikes} | {failed} |")
    if not rows:
        return []
    return ["", f"**Stability.** Rate span: max/min of the swept rates whose validation NLL is within "
                f"{RATE_TOLERANCE} nats/token of the best (wider = less sensitive). Seed sd: standard deviation over "
                f"the final seeds of the test NLL (mean of per-input NLLs). Spikes: final-run steps whose loss "
                f"exceeds {SPIKE_FACTOR}x the median of the {SPIKE_WINDOW} steps before. Failed: sweep runs that "
                "raised or diverged.", "",
            "| method | rate span (good rates) | seed sd, test NLL | loss spikes | failed sweep runs |",
            "|---|---:|---:|---:|---:|"] + rows


# ---------------------------------------------------------------------------------------------- claims table

#: The baselines the QAA paper names, in the order its claims do.
PAPER_BASELINES = ("lora", "lora_r4", "prefix", "sora")


def _area_verdicts(per_task: Dict[str, Dict[str, dict]], reference: str
                   ) -> List[Tuple[str, str, str, tuple, float]]:
    """``[(task, method, "faster" | "slower" | "indistinguishable", interval, Holm-adjusted p)]`` for the paper's
    baselines present, every task's comparisons one Holm family (the claim's)."""
    def areas(entries, m):
        return {r["seed"]: curve_area(r["val_curve"]) for r in entries.get(m, {}).get("runs", []) if r.get("val_curve")}
    keys, pairs = [], []
    for task, entries in per_task.items():
        for m in PAPER_BASELINES:
            if m in entries:
                keys.append((task, m))
                pairs.append((areas(entries, reference), areas(entries, m)))
    return [(task, m) + judged for (task, m), judged in zip(keys, _holm_directions(pairs)) if judged is not None]


def _swept_sensitivity(entry: dict) -> Optional[dict]:
    """:func:`rate_sensitivity` of a method's sweep; ``None`` when its rate was given, not swept (one rate
    tried says nothing about sensitivity)."""
    sel = entry.get("selection") or {}
    return rate_sensitivity(sel.get("grid", [])) if sel.get("swept") else None


def _span(sens: Optional[dict]) -> str:
    return f"{sens['span']:.3g}x" if sens else "not swept"


def _seed_sd(entry: dict) -> Optional[float]:
    nll = [statistics.fmean(ev["nll"]) for ev in entry.get("evals", []) if ev.get("nll")]
    return statistics.stdev(nll) if len(nll) > 1 else None


def _n_seeds(entry: dict) -> int:
    return sum(1 for ev in entry.get("evals", []) if ev.get("nll"))


def variance_ratio_p(sd_a: float, n_a: int, sd_b: float, n_b: int) -> float:
    """Two-sided p-value of the F test that two seed standard deviations come from equal variances
    (``F = sd_a^2 / sd_b^2`` with ``(n_a - 1, n_b - 1)`` degrees of freedom; normal seeds assumed). With 3
    seeds each, F must lie outside about [1/39, 39] to reject at 5%: a seed spread that looks lower is rarely
    a measured difference."""
    from scipy.stats import f as f_dist

    if sd_a == sd_b:
        return 1.0
    if sd_b == 0.0 or sd_a == 0.0:
        return 0.0
    ratio = (sd_a / sd_b) ** 2
    lower = f_dist.cdf(ratio, n_a - 1, n_b - 1)
    return float(min(1.0, 2 * min(lower, 1 - lower)))


def claims_table_lines(per_task: Dict[str, Dict[str, dict]], seen_by_task: Dict[str, Sequence[bool]],
                       metrics: Dict[str, object], reference: str = "qaa", n_seeds: int = 3) -> List[str]:
    """The table "claim | what was measured | verdict" for the QAA paper's claims, from one comparison's records
    (``per_task``: task -> entries as :func:`qaa.experiments.report.collect` returns them; ``seen_by_task``: the
    recorded seen flags of tasks with held-out inputs; ``metrics``: name -> MetricSpec, ``nll`` used; ``n_seeds``:
    the planned seeds, which a method needs on a task for every row,
    :func:`qaa.experiments.generalisation.generalisation_verdict`). Each
    verdict follows a stated rule; a claim without data in this run says so. Memory is measured by
    ``benchmarks/memory_account.py`` (deterministic bytes, not part of a comparison run) and capacity by a
    separate study, so their rows point there."""
    rows = []
    conv = []
    # Convergence and stability compare methods with every planned seed scored, as the difference tables do: a
    # partial method (a run still going) enters no verdict.
    complete = {task: {m: e for m, e in entries.items() if _n_seeds(e) >= n_seeds}
                for task, entries in per_task.items()}
    for task, m, word, iv, q in _area_verdicts(complete, reference):
        relation = "indistinguishable from" if word == "indistinguishable" else f"{word} than"
        conv.append(f"{task}: {relation} {_label(m)} ({_fmt_ci(iv, 4)}, Holm p {format_p(q)})")
    if conv:
        faster = sum(" faster " in c for c in conv)
        slower = sum(" slower " in c for c in conv)
        verdict = ("faster in every comparison" if faster == len(conv) else
                   f"not faster: faster in {faster}, slower in {slower}, indistinguishable in "
                   f"{len(conv) - faster - slower} of {len(conv)} comparisons")
        rows.append(("faster convergence than LoRA, prefix tuning and SoRA",
                     "area under the validation-NLL curve, QAA − method per seed, t interval and paired t test "
                     "(Holm over the comparisons)", verdict,
                     "; ".join(conv)))
    else:
        rows.append(("faster convergence than LoRA, prefix tuning and SoRA", "validation curves",
                     "no data in this run", "-"))
    stab = []
    more_stable = True
    any_stab = False
    for task, entries in complete.items():
        ref = entries.get(reference)
        if not ref:
            continue
        ref_sd = _seed_sd(ref)
        ref_sens = _swept_sensitivity(ref)
        for m in PAPER_BASELINES:
            if m not in entries:
                continue
            sd, sens = _seed_sd(entries[m]), _swept_sensitivity(entries[m])
            if ref_sd is None or sd is None:
                continue
            any_stab = True
            wider = ref_sens is not None and sens is not None and ref_sens["span"] >= sens["span"]
            p = variance_ratio_p(ref_sd, _n_seeds(ref), sd, _n_seeds(entries[m]))
            more_stable = more_stable and ref_sd < sd and p < 0.05 and wider
            stab.append(f"{task}, {_label(m)}: seed sd of test NLL {ref_sd:.4f} vs {sd:.4f} (F test p "
                        f"{p:.2f}, {_n_seeds(ref)} and {_n_seeds(entries[m])} seeds); good-rate span "
                        f"{_span(ref_sens)} vs {_span(sens)}")
    if any_stab:
        rows.append(("more stable training than the PEFT baselines",
                     "seed spread of test NLL and span of good learning rates (rule: more stable only if QAA's "
                     "seed sd is lower with an F test of the two variances rejecting equality at 5%, and its "
                     "span at least as wide, against every baseline on every task)",
                     "more stable" if more_stable else "not shown", "; ".join(stab)))
    else:
        rows.append(("more stable training than the PEFT baselines", "seed spread, rate sensitivity",
                     "no data in this run", "-"))
    rows.append(("up to 37% less GPU memory", "deterministic bytes per component of one training step",
                 "measured apart: benchmarks/memory_account.py", "see benchmarks/README.md"))
    spec = metrics.get("nll")
    gen = generalisation_verdict(per_task, seen_by_task, spec, n_seeds, reference) if spec is not None else None
    if gen:
        rows.append(("stronger generalisation across tasks",) + gen)
    else:
        rows.append(("stronger generalisation across tasks", "held-out categories, several tasks",
                     "no data in this run", "-"))
    rows.append(_efficiency_row(per_task, metrics, n_seeds, reference))
    return ["", "**The QAA paper's claims** (each verdict by the rule stated in its row):", "",
            "| claim | what was measured | verdict | numbers |", "|---|---|---|---|"] + \
        [f"| {c} | {w} | {v} | {n} |" for c, w, v, n in rows]


def _efficiency_row(per_task: Dict[str, Dict[str, dict]], metrics: Dict[str, object], n_seeds: int,
                    reference: str) -> Tuple[str, str, str, str]:
    """The parameter-efficiency row: on each task with a size sweep (at least 4 methods with every seed and a
    recorded size), whether any configuration of the reference's family is on the test-NLL front
    (:func:`qaa.experiments.capacity.pareto_front`). Capacity at a longer budget is a separate run
    (``python -m qaa.experiments.capacity``)."""
    from . import registry
    from .capacity import _sized, pareto_front, size_points

    claim = "parameter efficiency and capacity"
    spec = metrics.get("nll")
    found = []
    for task, entries in per_task.items():
        pts = size_points(entries, "nll", spec, n_seeds) if spec is not None else []
        if _sized(pts) < 4:
            continue
        front = pareto_front([(p["method"], p["params"], p["value"]) for p in pts])
        ours = [m for m in front if registry.is_configuration_of(m, reference)]
        anchor = " and the untuned model" if len(pts) > _sized(pts) else ""
        found.append((f"{task} ({_sized(pts)} trained configurations{anchor})", front, ours))
    if not found:
        return (claim, "a size sweep (quality per trainable parameter) and a longer budget",
                "not measured in this run", "-")
    verdict = ("on the front" if all(o for _, _, o in found) else
               "not on the front" if not any(o for _, _, o in found) else "on the front on some tasks")
    numbers = "; ".join(f"{task}: front {', '.join(_label(m) for m in front)}" for task, front, _ in found)
    return (claim, f"test NLL against trainable parameters, the Pareto front of point estimates (rule: "
                   f"\"on the front\" if a {_label(reference)} configuration is on it on every task); capacity at "
                   f"a longer budget: python -m qaa.experiments.capacity", verdict, numbers)
