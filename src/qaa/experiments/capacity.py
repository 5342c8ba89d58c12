"""Parameter efficiency and capacity: the quality-per-parameter front of a size sweep, and how a method's gap
to the reference changes with the training budget.

* **Pareto front** (:func:`pareto_front`): among points ``(trainable parameters, metric)``, those no other point
  dominates (at most as many parameters and at least as good a metric, strictly better in one). The front is
  drawn through point estimates; the intervals beside them say how firmly a point sits on or off it.
* **Budget interaction** (:func:`budget_interaction`): on one task's test inputs, the reference-minus-method
  gap at a long budget minus the gap at a short one. The two budgets score the same inputs, so every replicate
  draws one set of input indices (and, with equal seed counts, one set of seed indices) for all four arrays,
  as :func:`qaa.experiments.stats.paired_difference` does for two; the seed-level interval is Student's t over
  the per-seed values. Negative in NLL: the reference gains on the method as training runs longer.

Trainable parameters of a run are its ``trainable_params`` record; for SoRA, the count kept after pruning
(``sora.pruned_trainable_params``: what the saved adapter holds).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

__all__ = ["pareto_front", "budget_interaction", "trainable_count", "size_points", "quality_per_parameter_lines",
           "plot_quality_per_parameter", "budget_lines", "late_fall", "curve_turn", "capacity_lines", "capacity_difference_lines",
           "main"]


def pareto_front(points: Sequence[Tuple[str, float, float]], lower_is_better: bool = True) -> List[str]:
    """Names of the non-dominated points, ordered by parameter count (then name).

    Args:
        points: ``(name, trainable parameters, metric value)``; parameters >= 0 and values finite.
        lower_is_better: the metric's orientation (True for NLL, False for BLEU).

    Returns:
        Every point that no other point dominates: another point dominates it when it has at most as many
        parameters and an at-least-as-good value, and is strictly better in one of the two. Equal points are
        both kept.

    Raises:
        ValueError: a negative or non-finite parameter count, a non-finite value, or a repeated name.
    """
    names = [p[0] for p in points]
    if len(set(names)) != len(names):
        raise ValueError(f"point names must be unique, got {names}")
    for name, n, v in points:
        if not (math.isfinite(n) and n >= 0) or not math.isfinite(v):
            raise ValueError(f"point {name!r}: parameters must be finite and >= 0 and the value finite, "
                             f"got ({n!r}, {v!r})")
    sign = 1.0 if lower_is_better else -1.0

    def dominates(q, p):
        better_or_equal = q[1] <= p[1] and sign * q[2] <= sign * p[2]
        return better_or_equal and (q[1] < p[1] or sign * q[2] < sign * p[2])

    front = [p for p in points if not any(dominates(q, p) for q in points if q is not p)]
    return [p[0] for p in sorted(front, key=lambda p: (p[1], p[0]))]


def budget_interaction(a_short, b_short, a_long, b_long, spec, n_boot: int = 2000, seed: int = 0,
                       level: float = 0.95) -> dict:
    """``(metric(a_long) - metric(b_long)) - (metric(a_short) - metric(b_short))`` with intervals.

    Args:
        a_short, b_short, a_long, b_long: per-input data ``[seeds, inputs, ...]`` of the reference (a) and the
            method (b) at the short and the long budget, on the same test inputs in the same order.
        spec: the metric (:class:`qaa.experiments.stats.MetricSpec`).

    Returns:
        ``{"value", "lo", "hi", "seed_lo", "seed_hi", "per_seed", "short", "long"}``: the point estimate (seeds
        averaged), the bootstrap interval (shared input draws; shared seed draws when all four have the same
        seed count, else each array's seeds drawn on its own), the Student-t interval over the per-seed values
        (``None`` unless all four have the same count >= 2), and the two gaps.

    Raises:
        ValueError: input counts that differ, malformed or non-finite data, ``n_boot < 100`` or ``level``
            outside (0, 1).
    """
    import numpy as np
    from .generalisation import _check_boot
    from .stats import _check, _per_seed, _replicates, seed_level_factor

    _check_boot(n_boot, level)
    arrs = [_check(x) for x in (a_short, b_short, a_long, b_long)]
    if len({a.shape[1] for a in arrs}) != 1:
        raise ValueError(f"the four arrays must score the same inputs, got {[a.shape[1] for a in arrs]}")
    full = np.arange(arrs[0].shape[1])
    per = [_per_seed(a, spec, full) for a in arrs]
    short, long = float(per[0].mean() - per[1].mean()), float(per[2].mean() - per[3].mean())
    reps = _replicates(arrs, spec, n_boot, seed, True)
    stat = (reps[:, 2] - reps[:, 3]) - (reps[:, 0] - reps[:, 1])
    alpha = (1 - level) / 2
    out = {"value": long - short, "lo": float(np.quantile(stat, alpha)), "hi": float(np.quantile(stat, 1 - alpha)),
           "seed_lo": None, "seed_hi": None, "per_seed": None, "short": short, "long": long}
    if len({len(p) for p in per}) == 1 and len(per[0]) >= 2:
        d = (per[2] - per[3]) - (per[0] - per[1])
        half = seed_level_factor(len(d), level) * float(np.std(d, ddof=1))
        out.update(seed_lo=float(d.mean() - half), seed_hi=float(d.mean() + half), per_seed=[float(v) for v in d])
    return out


def trainable_count(run: dict) -> Optional[int]:
    """A run record's trainable parameters as saved (SoRA: after pruning); ``None`` if not recorded."""
    sora = run.get("sora")
    if isinstance(sora, dict) and isinstance(sora.get("pruned_trainable_params"), int):
        return sora["pruned_trainable_params"]
    n = run.get("trainable_params")
    return n if isinstance(n, int) else None


def size_points(entries: Dict[str, dict], key: str, spec, n_seeds: int) -> List[dict]:
    """Per method with ``n_seeds`` scored seeds and a recorded size: ``{"method", "params", "value", "lo",
    "hi"}`` (the mean parameter count over its runs; the metric with its 95% bootstrap interval), and the untuned
    base model, when scored, as the 0-parameter point that anchors the front (a configuration worse than no
    adaptation is never on it)."""
    from . import registry
    from .stats import bootstrap

    out = []
    for method, e in entries.items():
        arr = e.get("arrays", {}).get(key)
        if method == registry.BASE:
            if arr is not None:
                iv = bootstrap(arr, spec)
                out.append({"method": method, "params": 0.0, "value": iv.value, "lo": iv.lo, "hi": iv.hi})
            continue
        counts = [c for c in (trainable_count(r) for r in e.get("runs", [])) if c is not None]
        if arr is None or arr.shape[0] != n_seeds or not counts:
            continue
        iv = bootstrap(arr, spec)
        out.append({"method": method, "params": sum(counts) / len(counts), "value": iv.value, "lo": iv.lo,
                    "hi": iv.hi})
    return out


def _sized(points: List[dict]) -> int:
    """How many of ``points`` are trained methods (the base model's anchor not counted)."""
    from . import registry

    return sum(p["method"] != registry.BASE for p in points)


def _label(method: str) -> str:
    from . import registry

    return registry.label(method)


def quality_per_parameter_lines(entries: Dict[str, dict], metrics: Dict[str, object], n_seeds: int,
                                reference_prefix: str = "qaa", min_methods: int = 4) -> List[str]:
    """The quality-per-parameter table of one task and the front per metric (``metrics``: key -> MetricSpec),
    with a verdict naming the front and whether any configuration of the reference family (method names
    starting with ``reference_prefix``, the controls excepted: :func:`qaa.experiments.registry.is_configuration_of`)
    is on it. Empty below ``min_methods`` sized methods (no sweep)."""
    from . import registry

    per_metric = {k: size_points(entries, k, spec, n_seeds) for k, spec in metrics.items()}
    first = next(iter(per_metric.values()), [])
    if _sized(first) < min_methods:
        return []
    fronts = {k: pareto_front([(p["method"], p["params"], p["value"]) for p in pts],
                              lower_is_better=not metrics[k].higher_is_better)
              for k, pts in per_metric.items() if pts}
    heads = [getattr(metrics[k], "label", k) for k in per_metric]
    lines = ["", "**Quality per parameter** (every method with all planned seeds, and the untuned base model as "
                 "the 0-parameter anchor; trainable parameters as saved, SoRA after pruning; the metric with its 95% "
                 "bootstrap interval; * on the front of that metric: no other point has at most as many parameters "
                 "and an at-least-as-good point estimate, strictly better in one):", "",
             "| method | trainable params | " + " | ".join(heads) + " |", "|---|---:|" + "---:|" * len(heads)]
    by_method = {k: {p["method"]: p for p in pts} for k, pts in per_metric.items()}
    for p in sorted(first, key=lambda p: p["params"]):
        cells = []
        for k in per_metric:
            q = by_method[k].get(p["method"])
            star = "*" if q and p["method"] in fronts.get(k, []) else ""
            cells.append(f"{q['value']:.3f}{star} [{q['lo']:.3f}, {q['hi']:.3f}]" if q else "-")
        lines.append(f"| {_label(p['method'])} | {p['params']:,.0f} | " + " | ".join(cells) + " |")
    lines.append("")
    for k, front in fronts.items():
        ours = [m for m in front if registry.is_configuration_of(m, reference_prefix)]
        lines.append(f"- Front in {getattr(metrics[k], 'label', k)}: {', '.join(_label(m) for m in front)}. "
                     + (f"QAA configurations on it: {', '.join(_label(m) for m in ours)}." if ours
                        else "No QAA configuration is on it.")
                     + " (Drawn through point estimates: whether a front point is measurably better than its "
                       "neighbours is not tested here; the paired comparisons above test that.)")
    return lines


def plot_quality_per_parameter(entries: Dict[str, dict], metrics: Dict[str, object], n_seeds: int, path,
                               title: str, min_methods: int = 4) -> Optional[str]:
    """One panel per metric: the metric (95% interval) against trainable parameters on a log axis, each method in
    its registry colour, the front joined by a line. Returns the PNG path, or ``None`` below ``min_methods``
    sized methods (as :func:`quality_per_parameter_lines`)."""
    from . import registry
    from .report.plots import _figure, _save

    per_metric = {k: size_points(entries, k, spec, n_seeds) for k, spec in metrics.items()}
    if _sized(next(iter(per_metric.values()), [])) < min_methods:
        return None
    fig, axes = _figure(6 * len(per_metric), 4.8, ncols=len(per_metric))
    for ax, (k, pts) in zip(axes[0], per_metric.items()):
        spec = metrics[k]
        for p in pts:
            ax.errorbar([max(p["params"], 1.0)], [p["value"]], yerr=[[p["value"] - p["lo"]], [p["hi"] - p["value"]]],
                        fmt="o", color=registry.colour(p["method"]) or "#333333", capsize=3,
                        label=_label(p["method"]))
        front = pareto_front([(p["method"], p["params"], p["value"]) for p in pts],
                             lower_is_better=not spec.higher_is_better)
        on = sorted((p for p in pts if p["method"] in front), key=lambda p: p["params"])
        ax.plot([max(p["params"], 1.0) for p in on], [p["value"] for p in on], color="black", linewidth=1,
                linestyle="--", label="front")
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters (log scale; the untuned model, 0, drawn at 1)")
        ax.set_ylabel(f"{spec.label} (95% CI)")
        ax.legend(fontsize=6)
    fig.suptitle(title)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------- small pool

def curve_turn(curve: Sequence[Sequence[float]]) -> dict:
    """Where a validation curve ``[[step, nll], ...]`` bottoms out: ``{"best_step", "best", "final", "rise"}``
    (the first step of the lowest NLL, that NLL, the last point's NLL, and ``final - best`` >= 0: how far
    validation NLL has turned up since its minimum; 0 when the last point is the lowest).

    Raises:
        ValueError: an empty curve, a non-finite value, or steps that do not increase strictly."""
    if not curve:
        raise ValueError("empty validation curve")
    steps, values = [float(p[0]) for p in curve], [float(p[1]) for p in curve]
    if not all(math.isfinite(v) for v in steps + values):
        raise ValueError("validation curve holds non-finite values")
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError(f"validation curve steps must increase strictly, got {steps}")
    i = min(range(len(values)), key=lambda k: (values[k], k))
    return {"best_step": steps[i], "best": values[i], "final": values[-1], "rise": values[-1] - values[i]}


def capacity_lines(entries: Dict[str, dict], train_size: int) -> List[str]:
    """The small-pool table of one task: per method, the final training loss (last 10% of steps), the lowest
    validation-curve NLL and its step, the final one, and the rise since the minimum (:func:`curve_turn`), each
    averaged over seeds. Empty when no run recorded a curve."""
    rows = []
    for method, e in entries.items():
        turns, diverged = [], 0
        for r in e.get("runs", []):
            if not r.get("val_curve"):
                continue
            try:
                turns.append(curve_turn(r["val_curve"]))
            except (ValueError, TypeError):   # a diverged run (non-finite points) or a malformed curve
                diverged += 1
        if not turns and not diverged:
            continue
        loss = _final_loss(e)
        cells = "| - | - | - | - |"
        if turns:
            mean = {k: sum(t[k] for t in turns) / len(turns) for k in ("best_step", "best", "final", "rise")}
            cells = f"| {mean['best']:.4f} | {mean['best_step']:.0f} | {mean['final']:.4f} | {mean['rise']:+.4f} |"
        seeds = f"{len(turns)}" + (f" ({diverged} diverged)" if diverged else "")
        rows.append(f"| {_label(method)} | {seeds} | {'-' if loss is None or not math.isfinite(loss) else f'{loss:.3f}'} "
                    + cells)
    if not rows:
        return []
    return ["", f"**Capacity on a small pool** ({train_size} training inputs with all their references): where "
                "training loss floors and where validation NLL turns up. Per method, means over seeds: the final "
                "training loss (last 10% of steps), the lowest validation-curve NLL and the step of it, the final "
                "validation-curve NLL and its rise since the minimum (> 0: validation NLL has turned up).", "",
            "| method | seeds | final training loss | lowest validation NLL | at step | final validation NLL | rise |",
            "|---|---:|---:|---:|---:|---:|---:|"] + rows + capacity_difference_lines(entries)


def _seed_values(entry: dict) -> Dict[int, Dict[str, float]]:
    """Per training seed of ``entry``'s runs: its final training loss (last 10% of steps) and its validation
    curve's lowest NLL, last NLL and rise (:func:`curve_turn`); runs without a usable curve or loss are left out."""
    out = {}
    for r in entry.get("runs", []):
        try:
            turn = curve_turn(r.get("val_curve") or [])
        except (ValueError, TypeError):
            continue
        loss = _final_loss({"runs": [r]})
        if isinstance(r.get("seed"), int) and loss is not None and math.isfinite(loss):
            out[r["seed"]] = {"loss": loss, "best": turn["best"], "final": turn["final"], "rise": turn["rise"]}
    return out


def capacity_difference_lines(entries: Dict[str, dict], reference: str = "qaa") -> List[str]:
    """Reference minus each method on the small pool, paired by training seed (the same seed gives every
    method the same data order and RNG seed): the final training loss and the validation curve's lowest NLL,
    last NLL and rise since the minimum, each with an unadjusted Student t 95% interval over the seeds both trained to a finite curve
    (:func:`seed_t_interval`). Positive: the reference floors higher (fits the pool less closely) or validates
    worse. Empty without the reference or with fewer than 2 shared seeds."""
    from . import registry
    from .claims import seed_paired_interval

    ref = _seed_values(entries.get(reference, {}))
    rows = []
    for method, e in entries.items():
        if method in (reference, registry.BASE):
            continue
        other = _seed_values(e)
        shared = sorted(set(ref) & set(other))
        if len(shared) < 2:
            continue
        cells = []
        for key in ("loss", "best", "final", "rise"):
            mean, lo, hi, _ = seed_paired_interval({k: ref[k][key] for k in shared}, {k: other[k][key] for k in shared})
            word = ("higher for " + _label(reference) if lo > 0 else "lower for " + _label(reference) if hi < 0
                    else "not resolved")
            cells.append(f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}] ({word})")
        rows.append(f"| {_label(method)} | {len(shared)} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    ref = _label(reference)
    return ["", f"{ref} minus each method on the pool, paired by training seed (an unadjusted Student t 95% "
                f"interval over the seeds both methods trained to a finite validation curve; > 0: {ref}'s is "
                "higher):", "",
            "| method | seeds | final training loss | lowest validation NLL | final validation NLL | rise |",
            "|---|---:|---:|---:|---:|---:|"] + rows


# ---------------------------------------------------------------------------------------------- budgets

def _final_loss(entry: dict, share: float = 0.1) -> Optional[float]:
    """Mean training loss over the last ``share`` of the steps (at least one), averaged over the runs."""
    vals = []
    for r in entry.get("runs", []):
        losses = r.get("losses") or []
        if losses:
            k = max(1, round(share * len(losses)))
            vals.append(sum(losses[-k:]) / k)
    return sum(vals) / len(vals) if vals else None


def late_fall(entry: dict, share: float = 0.1) -> Optional[Tuple[float, float, float, int]]:
    """How much a method's training loss still falls in the second half of its runs: per training seed, the mean
    loss over the ``share`` of the steps just before the midpoint minus the mean over the last ``share`` (at least
    one step each), averaged over the seeds with a Student-t interval (:func:`qaa.experiments.claims.seed_paired_interval`
    of the two windows, paired by seed): ``(mean, low, high, n seeds)``; positive means still falling. ``None``
    with fewer than 2 seeds, runs shorter than 4 steps or a non-finite loss in the windows."""
    from .claims import seed_paired_interval

    before, last = {}, {}
    for r in entry.get("runs", []):
        losses = r.get("losses") or []
        if len(losses) < 4 or r.get("seed") is None:
            continue
        k = max(1, round(share * len(losses)))
        mid = len(losses) // 2
        before[r["seed"]] = sum(losses[mid - k:mid]) / k
        last[r["seed"]] = sum(losses[-k:]) / k
    return seed_paired_interval(before, last)


def budget_lines(short: dict, long: dict, reference: str = "qaa") -> List[str]:
    """The budget table of two comparisons of the same tasks and split at different step counts (their
    ``results.json`` dicts): per task and method present in both with every planned seed, the reference's gap in
    test NLL at each budget and the change (:func:`budget_interaction`), and each method's final training loss
    (last 10% of steps) at both budgets and how much it still falls in the long runs' second half
    (:func:`late_fall`), so a reader sees whose training NLL keeps falling.

    Raises:
        ValueError: a results dict without ``settings`` (with ``tasks``, ``seeds``, ``steps``), two comparisons
            that split or cap the data differently or use another model, a "long" budget that is not longer,
            or no shared task.
    """
    from .report.records import METRICS, collect
    from .results import split_key

    for name, res in (("short", short), ("long", long)):
        settings = res.get("settings") if isinstance(res, dict) else None
        if not isinstance(settings, dict) or not all(k in settings for k in ("tasks", "seeds", "steps")):
            raise ValueError(f"the {name} results are not a qaa compare results.json (no settings with tasks, "
                             "seeds and steps)")
    s_set, l_set = short["settings"], long["settings"]
    for key in ("model", "split_seed", "val_fraction", "test_fraction", "batch_size", "train_size", "data"):
        if s_set.get(key) != l_set.get(key):
            raise ValueError(f"the two comparisons differ in {key} ({s_set.get(key)!r} vs {l_set.get(key)!r}): "
                             "their test inputs or runs are not comparable")
    if not l_set["steps"] > s_set["steps"]:
        raise ValueError(f"the long budget ({l_set['steps']} steps) must be longer than the short one "
                         f"({s_set['steps']}); give SHORT first")
    tasks = [t for t in s_set["tasks"] if t in l_set["tasks"]]
    if not tasks:
        raise ValueError("the two comparisons share no task")
    for key in ("eval_size", "val_size", "max_length"):
        a, b = s_set.get(key) or {}, l_set.get(key) or {}
        for t in tasks:
            if isinstance(a, dict) and isinstance(b, dict) and a.get(t) != b.get(t):
                raise ValueError(f"the two comparisons differ in {key} on {t} ({a.get(t)!r} vs {b.get(t)!r})")
    spec = METRICS["nll"]
    n_s, n_l = len(s_set["seeds"]), len(l_set["seeds"])

    def rates(data: dict) -> str:
        settings = data["settings"]
        if settings.get("lr_from"):
            return "read from an earlier comparison's validation selection (--lr-from)"
        if settings.get("lr_grid_from") and settings.get("select_lr"):
            # from the selection records: the folder's settings are those of the process that created it, and
            # processes running other methods into it carried other methods' ratios
            carried = sorted({split_key(k)[1] for k, sel in (data.get("selection") or {}).items()
                              if isinstance(sel, dict) and sel.get("ratio_carried")})
            return ("chosen on validation at that budget, on grids (c/3, c, 3c) around the rates c of "
                    f"{settings['lr_grid_from']}, widened at an edge"
                    + (f"; angle-rate ratios carried from that file, not swept again ({', '.join(_label(m) for m in carried)})"
                       if carried else ""))
        return "chosen on validation at that budget" if settings.get("select_lr") else "given or the defaults"

    lines = ["# qaa: the training budget", "",
             f"Short budget: {s_set['steps']} steps x {s_set.get('batch_size')} sequences (rates "
             f"{rates(short)}); long budget: {l_set['steps']} steps x {l_set.get('batch_size')} sequences (rates "
             f"{rates(long)}); the same split (seed {s_set.get('split_seed')}) and test inputs. "
             f"Gap: {_label(reference)} − method in test NLL (negative favours {_label(reference)}); change: the "
             "long budget's gap minus the short one's, with a 95% bootstrap interval (the same input and seed draws "
             "for all four arrays) and a seed-level Student-t interval; the verdict says the gap moves towards or "
             "away from the reference only when both exclude 0. Final training loss: mean over the last 10% of "
             "steps and the seeds. Still falling: at the long budget, the mean training loss over the 10% of steps "
             "before the midpoint minus that over the last 10%, per seed, with a seed-level Student-t interval "
             "(positive: the loss still falls in the second half; \"yes\" when the interval lies above 0, \"rising\" "
             "when below). "
             "A \"-\" gap: the method or the reference lacks a planned seed at a budget."]
    for task in tasks:
        es, el = collect(short, task), collect(long, task)
        ref_s, ref_l = es.get(reference, {}).get("arrays", {}).get("nll"), el.get(reference, {}).get("arrays", {}).get("nll")
        lines += ["", f"## {task}", "",
                  "| method | final training loss, short | long | still falling (long) | gap, short | gap, long | "
                  "change (long − short) | verdict |", "|---|---:|---:|---:|---:|---:|---:|---|"]
        for method in es:
            if method not in el or method == "base":
                continue
            fs, fl = _final_loss(es[method]), _final_loss(el[method])
            fall = late_fall(el[method])
            fall = ("-" if fall is None else
                    f"{fall[0]:+.3f} [{fall[1]:+.3f}, {fall[2]:+.3f}] {'yes' if fall[1] > 0 else 'rising' if fall[2] < 0 else 'not resolved'}")
            loss = (f"{fs:.3f}" if fs is not None else "-", f"{fl:.3f}" if fl is not None else "-", fall)
            bs, bl = es[method].get("arrays", {}).get("nll"), el[method].get("arrays", {}).get("nll")
            if (method == reference or ref_s is None or ref_l is None or bs is None or bl is None
                    or ref_s.shape[0] != n_s or bs.shape[0] != n_s or ref_l.shape[0] != n_l or bl.shape[0] != n_l):
                lines.append(f"| {_label(method)} | {loss[0]} | {loss[1]} | {loss[2]} | - | - | - | - |")
                continue
            d = budget_interaction(ref_s, bs, ref_l, bl, spec)
            both = [d["lo"], d["hi"]] + ([d["seed_lo"], d["seed_hi"]] if d["seed_lo"] is not None else [])
            word = ("no seed-level check" if d["seed_lo"] is None else
                    f"the gap moves towards {_label(reference)}" if max(both) < 0 else
                    f"the gap moves away from {_label(reference)}" if min(both) > 0 else "no measured change")
            seed = "" if d["seed_lo"] is None else f"; seed-level [{d['seed_lo']:+.3f}, {d['seed_hi']:+.3f}]"
            lines.append(f"| {_label(method)} | {loss[0]} | {loss[1]} | {loss[2]} | {d['short']:+.3f} | {d['long']:+.3f} | "
                         f"{d['value']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}{seed}] | {word} |")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m qaa.experiments.capacity SHORT LONG``: write ``LONG/budget.md`` comparing the two
    comparison folders' budgets (:func:`budget_lines`)."""
    import json
    import sys
    from pathlib import Path

    from ..tuners.save_load import atomic_write_text

    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2:
        print("usage: python -m qaa.experiments.capacity SHORT_FOLDER LONG_FOLDER  (each holding results.json)",
              file=sys.stderr)
        return 2
    try:
        short, long = (json.loads((Path(a) / "results.json").read_text(encoding="utf-8")) for a in argv)
        lines = budget_lines(short, long)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        print(f"qaa capacity: error: {e}", file=sys.stderr)
        return 2
    path = Path(argv[1]) / "budget.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
