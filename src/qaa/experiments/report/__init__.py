"""The comparison's report: ``results.md`` and PNG plots, computed from ``results.json`` alone
(:mod:`.records`: which records count and the intervals computed from them; :mod:`.plots`: the figures; this
module: the markdown and the command line).

Everything here reads the results dict that :func:`qaa.experiments.compare.run_compare` writes, so a report
can be rebuilt from a saved (or partial) run: ``python -m qaa.experiments.report OUT``. Every number and every
verdict sentence is computed here from the per-input records (:mod:`.stats`); nothing is written by hand.

``results.md`` holds, per task: the split and the fitted lengths; the learning-rate selection (every rate's
validation NLL); the results table (mean ± standard deviation over seeds and the 95% paired-bootstrap interval
over test inputs for test NLL, BLEU, ROUGE-L and BERTScore (MiniLM-L6), with trainable parameters, adapter
size, peak memory and step time); QAA minus every other method with its interval; where the runs recorded them,
a length check (a BLEU difference flagged when the methods' length ratios differ by more than
:data:`LENGTH_RATIO_FLAG`) and the further metrics of :data:`EXTRA_METRICS` (length ratio, chrF++, TER, NIST,
METEOR, CIDEr, SER, entity coverage) with intervals and paired differences in their own Holm family, the
semantic matchers' measured accuracy and the metrics not computed; the verdicts; the
secondary comparisons declared in :data:`SECONDARY`; WebNLG's seen and unseen inputs separately; and the
memory ratio to full fine-tuning. Plots (matplotlib's ``Figure`` with
the Agg canvas, no display needed): ``loss_<task>.png`` (training loss per step, mean over seeds with the
min-max band) and ``metrics_<task>.png`` (BLEU, ROUGE-L and test NLL with their intervals).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ...tuners.save_load import atomic_write_text
from .. import registry
from ..claims import claims_table_lines, convergence_lines, stability_lines
from ..capacity import plot_quality_per_parameter, quality_per_parameter_lines
from ..generalisation import cross_task_lines, generalisation_lines
from ..metrics import BERTSCORE_LABEL, UNAVAILABLE_METRICS
from ..semantic import ENTITY_COVERAGE_ACCURACY, SLOT_MATCHER_ACCURACY
from ..provenance import QAA_DEFAULTS, defaults_overlap
from ..results import split_key
from ..stats import Interval, bootstrap, format_p, holm, paired_difference, seed_level_factor, signed, verdict
from .plots import plot_losses, plot_metrics
from .records import (DIFF_METRICS, EXTRA_METRICS, METRICS, REFERENCE, _intervals, _order, _paired_diffs, _subset,
                      _tasks, collect)

__all__ = ["METRICS", "write_report", "write_markdown", "plot_losses", "plot_metrics", "collect", "main"]

#: The line that says which test NLL the report, the log and results.json's ``metrics.nll`` give.
NLL_LINE = ("Test NLL, everywhere (this report, the log, results.json's `metrics.nll`): the mean over test inputs of "
            "each input's NLL (nats per target token over all its references), the quantity the bootstrap "
            "resamples; `metrics.nll_token_weighted` is the other one (every target token of every input weighted "
            "equally).")
#: A BLEU difference is flagged when the two methods' length ratios differ by more than this.
LENGTH_RATIO_FLAG = 0.1


# --------------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------------

def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _human_bytes(n) -> str:
    if not _finite(n):
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _ci(iv: Optional[Interval], digits: int = 2) -> str:
    if iv is None:
        return "-"
    sd = f" ± {iv.seed_sd:.{digits}f}" if iv.seed_sd is not None else ""
    return f"{iv.value:.{digits}f}{sd} [{iv.lo:.{digits}f}, {iv.hi:.{digits}f}]"


def _diff(iv: Optional[Interval], digits: int = 2) -> str:
    if iv is None:
        return "-"
    if iv.significant():
        mark = ""
    elif iv.excludes_zero():
        mark = " (n.s.†)"
    else:
        mark = " (n.s.)"
    return f"{signed(iv.value, digits)} [{signed(iv.lo, digits)}, {signed(iv.hi, digits)}]{mark}"


def _digits(key: str) -> int:
    """Decimals a metric's differences are printed with (NLL differences are hundredths of a nat)."""
    return 3 if key == "nll" else 2


def _lr(lr: float) -> str:
    """A learning rate with two significant digits (a widened grid holds rates like 0.027)."""
    return f"{lr:.2g}"


def _rate(sel: Optional[dict], method: Optional[str] = None) -> str:
    if not sel or sel.get("status") != "ok":
        return "-"
    ratio = sel.get("theta_lr_ratio", 1.0)
    what = "xi" if method in registry.names() and registry.get(method).ratio_grid else "angles"
    return _lr(sel["lr"]) + (f" ({what} x{ratio:g})" if ratio != 1.0 else "")


def _mean(values) -> Optional[float]:
    vals = [v for v in values if _finite(v)]
    return statistics.fmean(vals) if vals else None


# --------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------

#: How a method's rate was set, as the selection records say (``swept``, ``given_by``), and how the protocol
#: paragraph words it.
RATE_SOURCES = {
    "swept": "chosen by the lowest teacher-forced **validation** NLL of runs with training seed {seed} (grids below)",
    "--lr": "given on the command line (`--lr`), not chosen by this run",
    "--lr-from": "read from the validation selection of an earlier comparison (`--lr-from {path}`, checked to "
                 "share this run's split seed and fractions), not chosen by this run",
    "given": "given (`--lr` or `--lr-from`), not chosen by this run",
    "default": "the registry's default rate, with no sweep (learning-rate selection was off in this run)",
}


def rate_sources(results: dict) -> Dict[str, List[str]]:
    """How each method's rate was set, from the run's selection records: ``{source: [methods in registry
    order]}`` with source one of :data:`RATE_SOURCES` (``"swept"``; ``"--lr"`` / ``"--lr-from"`` from the record's
    ``given_by``, ``"given"`` for a record without it; ``"default"``). A method whose tasks differ is listed under
    each of its sources."""
    found: Dict[str, set] = {}
    for key, sel in results.get("selection", {}).items():
        if not isinstance(sel, dict) or sel.get("status") != "ok":
            continue
        method = split_key(key)[1]
        if sel.get("swept"):
            source = "swept"
        elif sel.get("given"):
            source = sel.get("given_by") if sel.get("given_by") in ("--lr", "--lr-from") else "given"
        else:
            source = "default"
        found.setdefault(source, set()).add(method)
    return {src: _order(found[src]) for src in RATE_SOURCES if src in found}


def selection_seed(results: dict) -> int:
    """The training seed the validation sweeps used: a swept selection record's ``seed``, else the settings'
    ``selection_seed``, else 0 (runs recorded before the selection seed was a setting used seed 0). Methods
    without a sweep record their own validation seed (the first final seed)."""
    for sel in results.get("selection", {}).values():
        if (isinstance(sel, dict) and sel.get("status") == "ok" and sel.get("swept")
                and isinstance(sel.get("seed"), int)):
            return sel["seed"]
    return int(results.get("settings", {}).get("selection_seed", 0))


def _threads(results: dict) -> Optional[int]:
    """The run's torch threads: the setting, or (for 0, the library default) what the machine record says."""
    threads = results.get("settings", {}).get("threads")
    if not threads:
        threads = results.get("machine", {}).get("torch_threads")
    return threads if isinstance(threads, int) and threads > 0 else None


def shared_cores(results: dict) -> Optional[bool]:
    """Whether load beyond this run's own threads was measured: the 1-minute load average recorded at the start,
    before any work (``machine.load_average_start[0]``), above the run's thread count. None when either was not
    recorded."""
    load, threads = results.get("machine", {}).get("load_average_start"), _threads(results)
    if not load or not _finite(load[0]) or threads is None:
        return None
    return load[0] > threads


def _names(methods: Sequence[str]) -> str:
    labels = [registry.label(m) for m in methods]
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def _protocol(results: dict) -> str:
    s = results.get("settings", {})
    sources, seed = rate_sources(results), selection_seed(results)
    parts = []
    for src, methods in sources.items():
        how = RATE_SOURCES[src].format(seed=seed, path=s.get("lr_from"))
        who = "every method" if len(sources) == 1 else _names(methods)
        parts.append(f"{who}: {how}")
    rates = ("Protocol: the peak learning rate (and, for methods with circuit angles, the angles' rate ratio; for "
             "SoRA, its threshold) of " + "; ".join(parts) + "." if parts else "Protocol: no method has a recorded rate yet.")
    return rates + " No test score enters this run's choices."


def _seed_sentence(n_seeds: int) -> str:
    """The seed-level check, worded for ``n_seeds``."""
    if n_seeds < 2:
        return ("the seed-level paired t interval (per-seed differences on all inputs, Student's t with seeds - 1 "
                f"degrees of freedom), which needs 2 or more seeds: with {n_seeds} seed there is none, so no "
                "difference can be called significant")
    t = seed_level_factor(n_seeds) * math.sqrt(n_seeds)
    return ("the seed-level paired t interval (per-seed differences on all inputs, Student's t with seeds - 1 "
            f"degrees of freedom: with {n_seeds} seeds its half-width is t({n_seeds - 1}) = {t:.2f} / "
            f"sqrt({n_seeds}) = {seed_level_factor(n_seeds):.2f} standard deviations of the per-seed differences, "
            f"and the bootstrap's seed level draws only {math.comb(2 * n_seeds - 1, n_seeds)} distinct seed sets)")


def seed_notice(n_seeds: int) -> Optional[str]:
    """With fewer than 3 training seeds: which of the three checks can pass at that seed count (None from 3 on).
    The same text ``qaa compare`` prints at its start."""
    if n_seeds >= 3:
        return None
    if n_seeds < 2:
        return (f"Only {n_seeds} training seed: there is no seed-level t interval, so the seed-level check cannot "
                "pass and no difference can be called significant; the bootstrap interval and the p-value can "
                "exclude 0, but they draw test inputs only (one seed has no seed variance to resample). Use 3 or "
                "more seeds (the default) for verdicts.")
    t = seed_level_factor(2) * math.sqrt(2)
    return (f"Only 2 training seeds: the seed-level t interval is the mean of the two per-seed differences ± "
            f"t(1) = {t:.2f} x sd / sqrt(2), i.e. ± {seed_level_factor(2):.2f} standard deviations of the per-seed "
            f"differences: it excludes 0 only when the two per-seed differences have the same sign and differ by "
            f"less than {200 / t:.1f}% of their mean, so the seed-level check passes only for a large, very "
            "consistent effect; the bootstrap interval and the Holm-adjusted p can pass (the bootstrap draws "
            "3 distinct seed sets). Use 3 or more seeds (the cpu and gpu presets' default) for verdicts.")


def _budget(results: dict) -> str:
    s = results.get("settings", {})
    n = (s.get("steps") or 0) * (s.get("batch_size") or 0)
    epochs = {t: n / i["train_pairs"] for t, i in results.get("tasks", {}).items()
              if isinstance(i, dict) and i.get("train_pairs")}
    text = f"the budget is {s.get('steps')} steps x {s.get('batch_size')} sequences = {n} sequences per run"
    if epochs:
        text += " (" + ", ".join(f"{e:.2f} epochs of {t}'s training pairs" for t, e in epochs.items()) + ")"
        if all(e < 1 for e in epochs.values()):
            text += ", so this measures early adaptation, not capacity"
    return text


def _defaults_caveat(results: dict) -> Optional[str]:
    """The sentence on QAA's defaults: where they were set (the recorded provenance) and how many of this run's
    test inputs, per task, are among the inputs they were judged on. None when QAA is not in the run."""
    if not any(k.endswith(f"|{REFERENCE}") for k in results.get("selection", {})):
        return None
    prov = results.get("qaa_defaults") or QAA_DEFAULTS
    judged = prov.get("judged_on") or []
    where = (f"QAA's own defaults ({prov.get('what')}) were set in earlier runs on {prov.get('task')} (split seed "
             f"{prov.get('split_seed')}; " + ", ".join(f"`{r['run']}`, {r['results']}" for r in prov.get("set_in", []))
             + f"), judged on {len(judged)} held-out inputs")
    counts, unknown = {}, []
    for task, info in results.get("tasks", {}).items():
        texts = info.get("test_input_texts") if isinstance(info, dict) else None
        if texts is None:
            unknown.append(task)
        else:
            counts[task] = (len(defaults_overlap(texts, prov)), len(texts))
    overlapping = {t: c for t, c in counts.items() if c[0]}
    if overlapping:
        text = where + ": " + "; ".join(f"{k} of this run's {n} test inputs on {t} are among them" for t, (k, n)
                                         in overlapping.items()) + " (their scores may favour QAA's defaults)"
    elif counts:
        text = where + f"; none of this run's test inputs ({', '.join(f'{n} on {t}' for t, (_, n) in counts.items())}) " \
                       "is among them"
    else:
        text = where
    if unknown:
        text += f"; this run did not record its test inputs on {', '.join(unknown)}, so their overlap is unknown"
    return text


def _machine_line(results: dict) -> str:
    s, m = results.get("settings", {}), results.get("machine", {})
    threads, start, end = _threads(results), m.get("load_average_start"), m.get("load_average_end")
    text = (f"Machine: {m.get('cpu_model', m.get('processor', '?'))}, {m.get('cpu_affinity', m.get('cpu_count'))} "
            f"cores, device {m.get('device')}, torch threads {s.get('threads')}")
    shared = shared_cores(results)
    if shared is None:
        text += "; no load average before the run's work was recorded, so other load on the cores is unknown"
    elif shared:
        text += (f"; the 1-minute load average at the start, before any work, was {start[0]:.2f}, above this run's "
                 f"{threads} thread(s): other processes shared the cores, so step times and memory are "
                 "indicative, not a benchmark (benchmarks/ has those)")
    else:
        text += (f"; the 1-minute load average at the start, before any work, was {start[0]:.2f}, not above this "
                 f"run's {threads} thread(s): no other load was measured at the start")
    if end:
        text += f"; at the end {end[0]:.2f} (this run's own threads included)"
    versions = ", ".join(f"{k} {v}" for k, v in results.get("versions", {}).items() if v)
    return text + (f". Versions: {versions}." if versions else ".")


def _nll_line(results: dict) -> str:
    """:data:`NLL_LINE`, or, for evaluations recorded before ``metrics.nll`` was the per-input mean (their
    metrics hold no ``nll_token_weighted``), the line that says their ``metrics.nll`` is the token-weighted one."""
    evals = [e for e in results.get("evals", {}).values() if isinstance(e, dict) and e.get("status") == "ok"]
    if all("nll_token_weighted" in e.get("metrics", {}) for e in evals):
        return NLL_LINE
    return ("Test NLL in this report: the mean over test inputs of each input's NLL (nats per target token over all "
            "its references), the quantity the bootstrap resamples. This run's results.json was recorded before "
            "that was the name's meaning: its `metrics.nll` is token-weighted (every target token of every input "
            "weighted equally), not the report's.")


def _header(results: dict) -> List[str]:
    s = results.get("settings", {})
    seeds_list = list(s.get("seeds", []))
    seeds = ", ".join(str(x) for x in seeds_list)
    n_seeds = len(seeds_list)
    lines = ["# qaa compare: results", "",
             f"Model: {results.get('model_label', s.get('model'))}. Preset `{s.get('preset')}`: {s.get('steps')} "
             f"optimizer steps x {s.get('batch_size')} sequences per run (AdamW, 10% warm-up, linear decay to 10%, "
             f"clipping 1.0); {n_seeds} training seed{'s' if n_seeds != 1 else ''} ({seeds}); split seed "
             f"{s.get('split_seed')} (train / validation / test disjoint by input).",
             "",
             _protocol(results) + " Each number is the mean over seeds ± the standard "
             "deviation over seeds, with a 95% bootstrap interval in brackets (2000 replicates drawing both the "
             "test inputs and the training seeds with replacement). Differences with QAA are paired (the same "
             "drawn inputs and seeds for both methods; only methods with every seed scored). A difference is called "
             "significant only when three checks reject 0: its bootstrap interval; " + _seed_sentence(n_seeds)
             + "; and the bootstrap p-value after Holm's adjustment over the "
             "comparisons of its table. *n.s.*: the bootstrap interval includes 0; *n.s.†*: it excludes 0 but "
             "another check does not. Test NLL: per test "
             "input, nats per target token over all its references, averaged over inputs (lower is better); "
             "validation NLL: nats per target token over all validation pairs; BLEU (sacrebleu corpus BLEU), ROUGE-L (rouge-score F1, best "
             f"reference) and {BERTSCORE_LABEL} (F1 with all-MiniLM-L6-v2, not comparable with roberta-large "
             "BERTScore) are 0-100, higher is better.",
             "",
             _nll_line(results)]
    notice = seed_notice(n_seeds)
    if notice:
        lines += ["", "**Seeds.** " + notice]
    caveats = []
    sources, sel_seed = rate_sources(results), selection_seed(results)
    swept = sources.get("swept", [])
    if swept and sel_seed in seeds_list:
        extra = [what for m, what in ((REFERENCE, "QAA's includes the angle-rate ratio"),
                                      ("sora", "SoRA's its threshold")) if m in swept]
        angles = (": " + "; ".join(extra)) if extra else ""
        who = "every method" if len(sources) == 1 else _names(swept)
        caveats.append(f"training seed {sel_seed} of {who} is the run that won its validation sweep (a mild "
                       "selection effect in its favour, larger for methods whose sweep tried more configurations"
                       f"{angles})")
    elif swept:
        caveats.append(f"the sweeps trained with selection seed {sel_seed}, which is not one of the final seeds, so "
                       "no final run was kept for having won its sweep")
    caveats.append(_budget(results))
    defaults = _defaults_caveat(results)
    if defaults:
        caveats.append(defaults)
    lines += ["", "Read with care: " + "; ".join(caveats) + ".", "", _machine_line(results)]
    excluded = s.get("excluded") or {}
    for method, why in excluded.items():
        lines += ["", f"Not run in this preset: **{registry.label(method)}**. {why}"]
    return lines


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
    lines = ["", f"Learning-rate selection (validation NLL of {seeds}; chosen in bold):",
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
        elif sel.get("given"):
            note = f" (given by `{sel['given_by']}`)" if sel.get("given_by") else " (given)"
            if sel.get("chosen_on"):
                note = note[:-1] + f": chosen on {', '.join(sel['chosen_on'])}'s validation split)"
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


#: Secondary comparisons (variant, other, the question it answers), outside the main table and in their own Holm
#: family: whether the circuit angles matter under the standardised input (its own frozen-angle control,
#: declared before its runs), and, post hoc (added after both had been scored), the standardised variant
#: against LoRA at both ranks. The main table compares plain QAA only.
SECONDARY = (
    ("qaa_std", "qaa_std_frozen_theta", "Do the angles matter for {a}? (declared before its control ran)"),
    ("qaa_std", "lora", "{a} against {b} (post hoc):"),
    ("qaa_std", "lora_r4", "{a} against {b} (post hoc):"),
)


def _secondary(entries: dict, settings: dict) -> List[str]:
    """Paired differences and verdicts for :data:`SECONDARY`, once both methods have every seed scored."""
    diffs = _paired_diffs(entries, [(a, b) for a, b, _ in SECONDARY], len(settings.get("seeds", [])))
    lines = []
    for variant, other, question in SECONDARY:
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
    full = entries.get("full", {}).get("runs")
    qaa_runs = entries.get(REFERENCE, {}).get("runs")
    if not full or not qaa_runs:
        return []
    f, q = _mean(r.get("peak_memory_mb") for r in full), _mean(r.get("peak_memory_mb") for r in qaa_runs)
    if not (_finite(f) and _finite(q)) or f <= 0:
        return []
    kind = full[0].get("peak_memory_kind", "")
    return ["", f"Peak training memory ({kind}): QAA {q:.0f} MiB, full fine-tuning {f:.0f} MiB: QAA uses "
                f"{100 * q / f:.0f}% of full fine-tuning's ({100 * (1 - q / f):.0f}% less)."]


def write_markdown(results: dict, path: str | os.PathLike, plots: Optional[Dict[str, str]] = None) -> Path:
    """Write ``results.md`` for ``results`` (see the module docstring); returns its path."""
    path = Path(path)
    settings = results.get("settings", {})
    lines = _header(results)
    per_task = {task: collect(results, task) for task in _tasks(results)}
    seen = {task: results.get("tasks", {}).get(task, {}).get("test_seen") or [] for task in _tasks(results)
            if results.get("tasks", {}).get(task, {}).get("test_seen_rule") == "category"}
    n_seeds = len(settings.get("seeds", []))
    lines += claims_table_lines(per_task, seen, {"nll": METRICS["nll"]}, REFERENCE, n_seeds)
    for task in _tasks(results):
        entries = per_task[task]
        info = results.get("tasks", {}).get(task, {})
        lines += ["", f"## {task}", ""]
        if info:
            lines.append(f"Split: {info.get('train_inputs')} train / {info.get('val_inputs')} validation / "
                         f"{info.get('test_inputs')} test inputs ({info.get('train_pairs')} training pairs, "
                         f"{info.get('test_references')} test references). Lengths fitted to the training split: "
                         f"max_length {info.get('max_length')} tokens ({info.get('train_pairs_cut')} training pairs "
                         f"cut, {info.get('train_pairs_dropped')} dropped), max_new_tokens "
                         f"{info.get('max_new_tokens')}.")
        lines += _selection_table(results, task, entries)
        intervals = {m: _intervals(e) for m, e in entries.items() if e["evals"]}
        lines += _results_table(task, entries, settings, intervals)
        # differences and verdicts only where QAA and the method have every planned seed scored
        others = [m for m in entries if m not in (REFERENCE, registry.BASE)]
        pairs = _paired_diffs(entries, [(REFERENCE, m) for m in others], len(settings.get("seeds", [])))
        diffs = {b: d for (_, b), d in pairs.items()}
        sel_seed = selection_seed(results)
        winner = sel_seed if rate_sources(results).get("swept") and sel_seed in settings.get("seeds", []) else None
        lines += _diff_table(task, entries, diffs, winner)
        lines += _length_flags(entries, diffs, intervals)
        lines += _extra_metrics(entries, settings, intervals, others)
        lines += _verdicts(entries, diffs)
        lines += _secondary(entries, settings)
        lines += _seen_unseen(results, task, entries)
        lines += generalisation_lines(entries, info.get("test_seen") or [],
                                      {k: METRICS[k] for k in ("nll", "rougeL") if k in METRICS}, REFERENCE)
        lines += convergence_lines(entries, REFERENCE)
        lines += stability_lines(entries)
        lines += quality_per_parameter_lines(entries, {k: METRICS[k] for k in ("nll", "bleu_stats")}, n_seeds)
        lines += _memory(entries)
        missing = [registry.label(m) for m, e in entries.items()
                   if m != registry.BASE and len(e["evals"]) < len(settings.get("seeds", []))]
        if missing:
            lines += ["", "Incomplete (fewer scored seeds than planned; rerun the same command to resume): "
                      + ", ".join(missing) + "."]
        failed = [r for r in results.get("runs", {}).values() if r.get("task") == task and r.get("status") != "ok"]
        for r in failed:
            lines.append(f"\n**{r.get('method')} (lr {r.get('lr')}, seed {r.get('seed')}) failed**: `{r.get('error')}`")
        if plots:
            for name in (f"loss_{task}", f"metrics_{task}", f"size_{task}"):
                if name in plots:
                    lines += ["", f"![{name}]({Path(plots[name]).name})"]
    lines += cross_task_lines(per_task, {k: METRICS[k] for k in ("nll", "bleu_stats", "rougeL")}, n_seeds, REFERENCE)
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def write_report(results: dict, out_dir: str | os.PathLike) -> dict:
    """Plots and ``results.md`` into ``out_dir``; returns ``{"markdown": path, "plots": {name: path}}``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = {**plot_losses(results, out), **plot_metrics(results, out)}
    n_seeds = len(results.get("settings", {}).get("seeds", []))
    for task in _tasks(results):
        png = plot_quality_per_parameter(collect(results, task), {k: METRICS[k] for k in ("nll", "bleu_stats")},
                                         n_seeds, out / f"size_{task}.png", f"{task}: quality per parameter")
        if png:
            plots[f"size_{task}"] = png
    md = write_markdown(results, out / "results.md", plots)
    return {"markdown": str(md), "plots": plots}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m qaa.experiments.report OUT``: rebuild ``OUT/results.md`` and the plots from
    ``OUT/results.json``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        print("usage: python -m qaa.experiments.report OUT_FOLDER  (the folder holding results.json)",
              file=sys.stderr)
        return 2
    folder = Path(argv[0])
    try:
        results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        print(f"qaa report: error: cannot read {folder / 'results.json'}: {e}", file=sys.stderr)
        return 2
    report = write_report(results, folder)
    print(report["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
