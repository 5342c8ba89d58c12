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
secondary comparisons declared in :data:`qaa.experiments.registry.SECONDARY_COMPARISONS`; SoRA's thresholds and
kept ranks (:mod:`.sora`); WebNLG's seen and unseen inputs separately; and the
memory ratio to full fine-tuning. Plots (matplotlib's ``Figure`` with
the Agg canvas, no display needed): ``loss_<task>.png`` (training loss per step, mean over seeds with the
min-max band) and ``metrics_<task>.png`` (BLEU, ROUGE-L and test NLL with their intervals).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ...tuners.save_load import atomic_write_text
from .. import registry
from ..capacity import capacity_lines, plot_quality_per_parameter, quality_per_parameter_lines
from ..claims import claims_table_lines, convergence_lines, stability_lines
from ..generalisation import cross_task_lines, generalisation_lines
from ..presets import E2E_METHODS
# the markdown's parts, re-exported for the tests that check each piece
from .format import LENGTH_RATIO_FLAG, NLL_LINE, _diff, _lr  # noqa: F401
from .header import _header, rate_sources, seed_notice, selection_seed, shared_cores  # noqa: F401
from .sora import sora_lines
from .plots import plot_curves, plot_differences, plot_losses, plot_metrics
from .records import METRICS, REFERENCE, _intervals, _paired_diffs, _tasks, collect  # noqa: F401
from .tables import (_diff_table, _extra_metrics, _length_flags, _memory, _results_table, _secondary,  # noqa: F401
                     _seen_unseen, _selection_table, _verdicts)

__all__ = ["METRICS", "write_report", "write_markdown", "plot_losses", "plot_metrics", "collect", "main"]


def comparison_families(methods: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Split the methods compared with QAA into the comparison's declared family (the cpu and gpu presets'
    methods, :data:`qaa.experiments.presets.E2E_METHODS`: the main table, its verdicts and Holm adjustment) and
    the size sweep's added configurations (:data:`qaa.experiments.registry.SIZE_SWEEP` outside it), which get a
    table and a Holm family of their own: adding sizes to a folder must not move the main comparison's
    adjusted p-values. Order is kept."""
    sized = [m for m in methods if m in registry.SIZE_SWEEP and m not in E2E_METHODS]
    return [m for m in methods if m not in sized], sized


def _reference_diffs(entries: dict, settings: dict, methods: Sequence[str]) -> dict:
    """QAA minus each of ``methods`` (method -> metric -> Interval), one Holm family, only where both have every
    planned seed scored (:func:`.records._paired_diffs`)."""
    pairs = _paired_diffs(entries, [(REFERENCE, m) for m in methods], len(settings.get("seeds", [])))
    return {b: d for (_, b), d in pairs.items()}


def _size_sweep_differences(task: str, entries: dict, settings: dict, sized: Sequence[str], winner) -> List[str]:
    """QAA minus each size-sweep configuration with every planned seed scored: the main table's checks, Holm's
    adjustment over these comparisons only (exploratory; no verdict sentences)."""
    diffs = _reference_diffs(entries, settings, sized)
    if not diffs:
        return []
    return ["", "### Size sweep: QAA minus each added size", "",
            "The size sweep's configurations outside the comparison's declared methods, in their own Holm family "
            "(exploratory: they enter neither the verdicts above nor the claims table's convergence, stability "
            "and generalisation rows; the quality-per-parameter front below reads them)."] + \
        _diff_table(task, entries, diffs, winner)


def write_markdown(results: dict, path: str | os.PathLike, plots: Optional[Dict[str, str]] = None) -> Path:
    """Write ``results.md`` for ``results`` (see the module docstring); returns its path."""
    path = Path(path)
    settings = results.get("settings", {})
    lines = _header(results)
    per_task = {task: collect(results, task) for task in _tasks(results)}
    seen = {task: results.get("tasks", {}).get(task, {}).get("test_seen") or [] for task in _tasks(results)
            if results.get("tasks", {}).get(task, {}).get("test_seen_rule") == "category"}
    n_seeds = len(settings.get("seeds", []))
    pool = settings.get("train_size") is not None
    if pool:
        lines += ["", f"**The QAA paper's claims are not judged by this run.** It trains on a small pool (the first "
                  f"{settings['train_size']} training inputs of each task, every reference kept) for many epochs to "
                  "measure capacity (the small-pool table of each task: where training loss floors and validation "
                  "NLL turns up). On such a pool the validation curves and test scores mix how fast a method fits "
                  "with how far it overfits, at rates chosen for another budget, so no convergence verdict is "
                  "drawn here; the claims are judged by comparisons on the whole training split (`--preset cpu` "
                  "or `gpu`)."]
    else:
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
        others, sized = comparison_families([m for m in entries if m not in (REFERENCE, registry.BASE)])
        diffs = _reference_diffs(entries, settings, others)
        sel_seed = selection_seed(results)
        winner = sel_seed if rate_sources(results).get("swept") and sel_seed in settings.get("seeds", []) else None
        lines += _diff_table(task, entries, diffs, winner)
        lines += _length_flags(entries, diffs, intervals)
        lines += _extra_metrics(entries, settings, intervals, others)
        if pool:
            lines += ["", "No verdict sentences for a small-pool run: its test scores depend on how far each method "
                      "had overfit the pool by the last step at its given rate (see the tables above and the "
                      "small-pool table below)."]
        else:
            lines += _verdicts(entries, diffs)
        lines += _size_sweep_differences(task, entries, settings, sized, winner)
        lines += _secondary(entries, settings)
        lines += sora_lines(results, task)
        lines += _seen_unseen(results, task, entries)
        held_out = info.get("test_seen") if info.get("test_seen_rule") == "category" else None
        lines += generalisation_lines(entries, held_out or [],
                                      {k: METRICS[k] for k in ("nll", "rougeL") if k in METRICS}, REFERENCE)
        if not pool:  # a pool's curves turn up with overfitting: the capacity table reads them instead
            lines += convergence_lines(entries, REFERENCE, comparison_families(list(entries)))
        if not pool:  # the stability claim's measures; on a pool the spikes are batch-to-batch noise of a tiny set
            lines += stability_lines(entries)
        lines += quality_per_parameter_lines(entries, {k: METRICS[k] for k in ("nll", "bleu_stats")}, n_seeds)
        if pool:
            lines += capacity_lines(entries, settings["train_size"])
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
            for name in (f"loss_{task}", f"curves_{task}", f"metrics_{task}", f"size_{task}"):
                if name in plots:
                    lines += ["", f"![{name}]({Path(plots[name]).name})"]
    lines += cross_task_lines(per_task, {k: METRICS[k] for k in ("nll", "bleu_stats", "rougeL")}, n_seeds, REFERENCE)
    if plots and "differences" in plots:
        lines += ["", f"![differences]({Path(plots['differences']).name})"]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def write_report(results: dict, out_dir: str | os.PathLike) -> dict:
    """Plots and ``results.md`` into ``out_dir``; returns ``{"markdown": path, "plots": {name: path}}``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = {**plot_losses(results, out), **plot_metrics(results, out), **plot_curves(results, out),
             **plot_differences(results, out)}
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
