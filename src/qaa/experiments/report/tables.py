"""The report's per-task tables: the rate selection, the results with intervals, QAA minus each method, the
length check, the further metrics, the verdicts, the secondary comparisons, seen/unseen inputs and memory."""
from __future__ import annotations

import dataclasses
import functools
from typing import Dict, List, Optional, Sequence

from .. import registry
from ..results import rate_origin, selection_key
from ..metrics import BERTSCORE_LABEL, UNAVAILABLE_METRICS
from ..semantic import ENTITY_COVERAGE_ACCURACY, SLOT_MATCHER_ACCURACY
from ..stats import bootstrap, format_p, holm, paired_difference, signed, verdict
from .format import LENGTH_RATIO_FLAG, _ci, _diff, _digits, _finite, _human_bytes, _lr, _mean, _rate
from .header import _names, selection_seed
from .records import DIFF_METRICS, EXTRA_METRICS, METRICS, REFERENCE, _paired_diffs, _subset

def _selection_table(results: dict, task: str, entries: dict) -> List[str]:
    by_seed: Dict[int, List[str]] = {}
    for method, e in entries.items():
        sel = e.get("selection")
        if sel and sel.get("status") == "ok":
            by_seed.setdefault(sel.get("seed", selection_seed(results)), []).append(method)
    if len(by_seed) > 1:
        seeds = "; ".join(f"training seed {seed} for {_names(ms)}" for seed, ms in by_seed.items())
    else:
        seeds = f"training seed {next(iter(by_seed), selection_seed(results))}"
    if not by_seed and not any(e.get("selection") for e in entries.values()):
        return []  # nothing chosen yet on this task (e.g. only the untuned model scored): no empty table
    pool = results.get("settings", {}).get("train_size") is not None
    when = (" at the end of this run's training on the small pool, not the value that chose a given rate"
            if pool else "")
    lines = ["", f"Learning-rate selection (validation NLL of {seeds}{when}; chosen in bold):",
             "",
             "| method | rate (angle-rate ratio; SoRA: threshold factor xi / 3e-4): validation NLL | chosen |",
             "|---|---|---|"]
    for method, e in entries.items():
        sel = e.get("selection")
        if not sel:
            continue
        if sel.get("status") != "ok":
            lines.append(f"| {registry.label(method)} | failed: {sel.get('error', '?')} | - |")
            continue
        cells = []
        for g in sel.get("grid", []):
            val = f"{g['val_nll']:.4f}" if _finite(g.get("val_nll")) else "failed"
            text = _lr(g["lr"]) + (f" (x{g['theta_lr_ratio']:g})" if g.get("theta_lr_ratio", 1.0) != 1.0 else "")
            chosen = g["lr"] == sel["lr"] and g.get("theta_lr_ratio", 1.0) == sel.get("theta_lr_ratio", 1.0)
            cells.append(f"**{text}: {val}**" if chosen else f"{text}: {val}")
        if sel.get("swept"):
            note = ""
            if sel.get("grid_centre") is not None:
                how = sel.get("grid_centre_how") or "selected"
                note = (f" (grid centred on {_lr(sel['grid_centre'])}, the rate {how} in `{sel.get('grid_from')}`"
                        + ("; its angle-rate ratio carried over, not swept again" if sel.get("ratio_carried") else "")
                        + ")")
            elif sel.get("grid_from"):
                note = f" (registered grid: `{sel['grid_from']}` has no chosen rate for it)"
        elif sel.get("given"):
            note = f" (given by `{sel['given_by']}`)" if sel.get("given_by") else " (given)"
            origin = rate_origin({**results.get("selection", {}), selection_key(task, method): sel}, task, method)
            if origin:
                note = note[:-1] + f": chosen on {', '.join(origin)}'s validation split)"
        else:
            note = " (default, no sweep)"
        rates = [g["lr"] for g in sel.get("grid", [])]
        if sel.get("swept") and rates and sel["lr"] in (min(rates), max(rates)):
            note += " (on the widened grid's edge: a better rate may lie beyond)"
        lines.append(f"| {registry.label(method)} | {'; '.join(cells)} | {_rate(sel, method)}{note} |")
    return lines


def _results_table(task: str, entries: dict, settings: dict, intervals: dict) -> List[str]:
    n_seeds = len(settings.get("seeds", []))
    lines = ["", "| method | rate | seeds | trainable params (%) | adapter | peak mem (MiB) | step (s) | test NLL | "
                 f"BLEU | ROUGE-L | {BERTSCORE_LABEL} |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for method, e in entries.items():
        if not e["evals"]:
            if e.get("selection", {}) and e["selection"].get("status") == "ok":
                lines.append(f"| {registry.label(method)} | {_rate(e['selection'], method)} | 0/{n_seeds} | "
                             "not yet scored | | | | | | | |")
            continue
        runs = e["runs"]
        if method == registry.BASE:
            params, adapter, mem, step, seeds = "0", "-", "-", "-", "-"
        else:
            params = f"{runs[0]['trainable_params']:,d} ({runs[0]['trainable_pct']:.4f})" if runs else "-"
            adapter = _human_bytes(_mean(r.get("adapter_bytes") for r in runs))
            m, t = _mean(r.get("peak_memory_mb") for r in runs), _mean(r.get("mean_step_seconds") for r in runs)
            mem, step = (f"{m:.0f}" if m is not None else "-"), (f"{t:.2f}" if t is not None else "-")
            seeds = f"{len(e['evals'])}/{n_seeds}"
        iv = intervals[method]
        lines.append(f"| {registry.label(method)} | {_rate(e.get('selection'), method)} | {seeds} | {params} | {adapter} | "
                     f"{mem} | {step} | {_ci(iv['nll'], 3)} | {_ci(iv['bleu_stats'])} | {_ci(iv['rougeL'])} | "
                     f"{_ci(iv['bertscore_f1'])} |")
    return lines


def _diff_table(task: str, entries: dict, diffs: dict, winner_seed: Optional[int] = None) -> List[str]:
    """QAA minus each method and the three checks behind each cell. ``winner_seed``: the final seed that is the
    swept methods' validation-sweep run (None when no final run is one; then nothing is said of it)."""
    if REFERENCE not in entries or not entries[REFERENCE]["evals"]:
        return ["", "QAA has no scored run on this task yet: no differences."]
    if not diffs:
        return ["", "QAA and the other methods do not yet have every seed scored: no differences."]
    n_tests = sum(len(d) for d in diffs.values())
    lines = ["", "QAA minus each method (paired: the same drawn test inputs and seeds; 95% bootstrap interval; "
                 "*n.s.*: includes 0; *n.s.†*: excludes 0 but the seed-level interval or the Holm-adjusted p does "
                 f"not, over the {n_tests} comparisons of this table). "
                 "Positive is better for QAA in BLEU and ROUGE-L, negative in NLL.", "",
             "| QAA − method | BLEU | ROUGE-L | test NLL |", "|---|---:|---:|---:|"]
    for method, d in diffs.items():
        lines.append(f"| {registry.label(method)} | " + " | ".join(_diff(d.get(k), _digits(k)) for k in DIFF_METRICS)
                     + " |")
    seeds = ", ".join(str(e["seed"]) for e in entries[REFERENCE]["evals"])
    winner = (f"; training seed {winner_seed} is the swept methods' sweep-winning run" if winner_seed is not None
              else "")
    lines += ["", "The three checks behind each cell (per seed: the difference on all test inputs for each "
                  f"training seed ({seeds}{winner}); seed-level: their mean ± "
                  "t(seeds - 1) sd / sqrt(seeds); p: bootstrap two-sided p-value, then Holm-adjusted):", "",
              "| QAA − method | metric | per seed | bootstrap 95% | seed-level 95% | p | Holm p | significant |",
              "|---|---|---:|---:|---:|---:|---:|---|"]
    for method, d in diffs.items():
        for key in DIFF_METRICS:
            iv = d.get(key)
            if iv is None:
                continue
            f = functools.partial(signed, digits=_digits(key))
            seed = f"[{f(iv.seed_lo)}, {f(iv.seed_hi)}]" if iv.seed_lo is not None else "-"
            per_seed = "; ".join(map(f, iv.seed_diffs)) if iv.seed_diffs else "-"
            lines.append(f"| {registry.label(method)} | {METRICS[key].label} | {per_seed} | [{f(iv.lo)}, {f(iv.hi)}] | "
                         f"{seed} | {format_p(iv.p)} | {format_p(iv.p_adjusted)} | {'yes' if iv.significant() else 'no'} |")
    return lines


def _length_flags(entries: dict, diffs: dict, intervals: dict) -> List[str]:
    """One line per QAA-minus-method BLEU difference whose two length ratios (sacrebleu's sys_len / ref_len on
    all inputs, averaged over seeds) differ by more than :data:`LENGTH_RATIO_FLAG`: BLEU's brevity penalty may
    then carry the difference."""
    ref = intervals.get(REFERENCE, {}).get("length_stats")
    if ref is None:
        return []
    lines = []
    for method, d in diffs.items():
        other = intervals.get(method, {}).get("length_stats")
        if other is None or "bleu_stats" not in d or abs(ref.value - other.value) <= LENGTH_RATIO_FLAG:
            continue
        lines.append(f"- BLEU, QAA − {registry.label(method)} = {signed(d['bleu_stats'].value)}: the length ratios "
                     f"differ by more than {LENGTH_RATIO_FLAG} (QAA {ref.value:.2f}, {registry.label(method)} "
                     f"{other.value:.2f}); the brevity penalty may carry part of this difference (see chrF++, "
                     "which length moves far less).")
    if lines:
        lines = ["", "Length check (output length over the closest references' length):", ""] + lines
    return lines


def _extra_metrics(entries: dict, settings: dict, intervals: dict, others: Sequence[str]) -> List[str]:
    """Per method the further metrics of :data:`EXTRA_METRICS` with their intervals, and QAA minus each method
    (paired, Holm-adjusted over this table's comparisons only; outside the verdicts); the metrics not computed
    and why."""
    keys = [k for k in EXTRA_METRICS if any(iv.get(k) is not None for iv in intervals.values())]
    lines: List[str] = []
    if keys:
        labels = [METRICS[k].label for k in keys]
        lines += ["", "Further metrics (mean over seeds ± sd [95% bootstrap interval]; length ratio: output tokens over "
                      "the closest reference's, 1 = as long; TER and SER: lower is better; SER is E2E's slot error "
                      "rate, entity coverage the share of the input triples' entities named in the output):", "",
                  "| method | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(keys)]
        for method, iv in intervals.items():
            lines.append(f"| {registry.label(method)} | "
                         + " | ".join(_ci(iv.get(k), 3 if k == "length_stats" else 2) for k in keys) + " |")
        pairs = [(REFERENCE, m) for m in others]
        diffs = {}
        for a, b in pairs:
            ea, eb = entries.get(a), entries.get(b)
            n = len(settings.get("seeds", []))
            if not ea or not eb or len(ea["evals"]) != n or len(eb["evals"]) != n:
                continue
            if [e["seed"] for e in ea["evals"]] != [e["seed"] for e in eb["evals"]]:
                continue
            diffs[b] = {k: paired_difference(ea["arrays"][k], eb["arrays"][k], METRICS[k])
                        for k in keys if k != "length_stats" and k in ea["arrays"] and k in eb["arrays"]}
        cells = [(m, k) for m, d in diffs.items() for k in d]
        for (m, k), p in zip(cells, holm([diffs[m][k].p for m, k in cells])):
            diffs[m][k] = dataclasses.replace(diffs[m][k], p_adjusted=p)
        shown = [k for k in keys if k != "length_stats"]
        if cells and shown:
            lines += ["", f"QAA minus each method on these metrics (paired; Holm's adjustment over the {len(cells)} "
                          "comparisons of this table):", "",
                      "| QAA − method | " + " | ".join(METRICS[k].label for k in shown) + " |",
                      "|---|" + "---:|" * len(shown)]
            for method, d in diffs.items():
                lines.append(f"| {registry.label(method)} | " + " | ".join(_diff(d.get(k)) for k in shown) + " |")
    if "ser_stats" in keys:
        acc = SLOT_MATCHER_ACCURACY
        lines += ["", f"SER's slot matcher, against {acc['outputs']} hand-labelled E2E outputs ({acc['errors']} slot "
                      f"errors): precision {acc['precision']:.3f}, recall {acc['recall']:.3f} (qaa.experiments.semantic)."]
    if "entity_coverage" in keys:
        acc = ENTITY_COVERAGE_ACCURACY
        lines += ["", f"Entity coverage's \"not found\", against {acc['entities']} hand-labelled entities of "
                      f"{acc['outputs']} WebNLG outputs: precision {acc['precision']:.3f}, recall {acc['recall']:.3f} "
                      "(paraphrases and reformatted dates count as not found)."]
    missing = dict(UNAVAILABLE_METRICS)
    if keys and "meteor" not in keys:
        missing["meteor"] = "not in this run's records (METEOR 1.5 needs Java and the pycocoevalcap package)"
    if keys:
        lines += ["", "Not computed: " + "; ".join(f"{k.upper()}: {why}" for k, why in sorted(missing.items()))
                  + "."]
    return lines


def _verdicts(entries: dict, diffs: dict) -> List[str]:
    lines = ["", "Verdicts (generated from the checks above; \"significant\" needs all three at the 5% level):", ""]
    for method, d in diffs.items():
        sentences = [verdict("QAA", registry.label(method), METRICS[k], d[k], _digits(k))
                     for k in DIFF_METRICS if d.get(k)]
        if sentences:
            lines.append(f"- vs {registry.label(method)}: " + " ".join(sentences))
    if len(lines) == 3:
        return []

    def named(methods):
        return "; ".join(registry.label(m) for m in methods)

    lines += ["", "In short:", ""]
    estimates = []  # where the point estimates put QAA, whatever the checks say (listed after the verdicts)
    for key in DIFF_METRICS:
        spec = METRICS[key]
        ivs = {m: d[key] for m, d in diffs.items() if d.get(key)}
        if not ivs:
            continue
        better = [m for m, iv in ivs.items() if iv.significant() and (iv.value > 0) == spec.higher_is_better]
        worse = [m for m, iv in ivs.items() if iv.significant() and (iv.value > 0) != spec.higher_is_better]
        same = [m for m in ivs if m not in better and m not in worse]
        parts = []
        if better:
            parts.append(f"significantly better than {named(better)}")
        if worse:
            parts.append(f"significantly worse than {named(worse)}")
        if same:
            parts.append(f"not significantly different from {named(same)}")
        lines.append(f"- On {spec.label}, QAA is " + "; and ".join(parts) + ".")
        ahead = [m for m, iv in ivs.items() if (iv.value < 0) == spec.higher_is_better and iv.value != 0]
        estimates.append(f"- Point estimates on {spec.label}: {len(ahead)} of the {len(ivs)} other methods score "
                         f"better than QAA" + (f" ({named(ahead)})." if 0 < len(ahead) < len(ivs) else "."))
    lines += estimates
    lines += ["", "\"Not significantly different\" does not mean \"as good as\": the interval bounds how much worse "
                  "(or better) QAA may be; with these few inputs and seeds, small differences cannot be detected."]
    return lines


def _secondary(entries: dict, settings: dict) -> List[str]:
    """Paired differences and verdicts for :data:`qaa.experiments.registry.SECONDARY_COMPARISONS`, once both methods have every seed scored."""
    diffs = _paired_diffs(entries, [(a, b) for a, b, _ in registry.SECONDARY_COMPARISONS], len(settings.get("seeds", [])))
    lines = []
    for variant, other, question in registry.SECONDARY_COMPARISONS:
        d = diffs.get((variant, other))
        if not d:
            continue
        la, lb = registry.label(variant), registry.label(other)
        sentences = [verdict(la, lb, METRICS[k], d[k], _digits(k)) for k in DIFF_METRICS if k in d]
        lines += ["", question.format(a=la, b=lb) + " " + " ".join(sentences)]
    if lines:
        lines = ["", "Secondary comparisons (the same checks; Holm's adjustment over these comparisons only):"] + lines
    return lines


def _seen_unseen(results: dict, task: str, entries: dict) -> List[str]:
    seen = results.get("tasks", {}).get(task, {}).get("test_seen")
    if not seen:
        return []
    n_seen = sum(bool(x) for x in seen)
    info = results.get("tasks", {}).get(task, {})
    if info.get("test_seen_rule") == "category":
        what = (f"Test inputs from the categories seen in training (*seen*, {n_seen}) and from the held-out "
                f"categories {', '.join(info.get('held_out_categories', []))} (*unseen*, {len(seen) - n_seen}):")
    else:
        what = (f"Test inputs whose triple set is a subset of a training input's (*seen*, {n_seen}) and the others "
                f"(*unseen*, {len(seen) - n_seen}):")
    lines = ["", what, "",
             "| method | BLEU seen | BLEU unseen | ROUGE-L seen | ROUGE-L unseen |", "|---|---:|---:|---:|---:|"]
    for method, e in entries.items():
        arrays = e["arrays"]
        if not arrays:
            continue
        cells = []
        for key in ("bleu_stats", "rougeL"):
            for mask in (seen, [not x for x in seen]):
                sub = _subset(arrays, mask).get(key)
                cells.append(_ci(bootstrap(sub, METRICS[key])) if sub is not None and sub.shape[1] else "-")
        lines.append(f"| {registry.label(method)} | " + " | ".join(cells) + " |")  # BLEU seen, unseen, ROUGE-L ...
    return lines


def _memory(entries: dict) -> List[str]:
    full = entries.get(registry.MEMORY_REFERENCE, {}).get("runs")
    qaa_runs = entries.get(REFERENCE, {}).get("runs")
    if not full or not qaa_runs:
        return []
    f, q = _mean(r.get("peak_memory_mb") for r in full), _mean(r.get("peak_memory_mb") for r in qaa_runs)
    if not (_finite(f) and _finite(q)) or f <= 0:
        return []
    kind = full[0].get("peak_memory_kind", "")
    ref, other = registry.label(REFERENCE), registry.label(registry.MEMORY_REFERENCE)
    return ["", f"Peak training memory ({kind}): {ref} {q:.0f} MiB, {other} {f:.0f} MiB: {ref} uses "
                f"{100 * q / f:.0f}% of {other}'s ({100 * (1 - q / f):.0f}% less)."]


