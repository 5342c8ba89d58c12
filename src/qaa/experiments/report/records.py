"""The report's records: which runs and evaluations count for each method (the selected configuration's final
seeds), the per-input arrays the statistics use, the metrics of the report, and the intervals and paired
differences computed from them."""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence

import numpy as np

from .. import registry
from ..metrics import (BERTSCORE_LABEL, bleu_from_stats, chrf_from_stats, length_ratio_from_stats, nist_from_stats,
                       ratio_from_stats, ter_from_stats)
from ..results import run_key, selection_key, split_key
from ..stats import Interval, MetricSpec, bootstrap, holm, mean_reduce, paired_difference

REFERENCE = registry.REFERENCE

#: The metrics of the report: key in the per-input records, spec (label, reduction, orientation).
METRICS: Dict[str, MetricSpec] = {
    "nll": MetricSpec("nll", "test NLL", mean_reduce, higher_is_better=False),
    "bleu_stats": MetricSpec("bleu", "BLEU", bleu_from_stats),
    "rougeL": MetricSpec("rougeL", "ROUGE-L", mean_reduce),
    "bertscore_f1": MetricSpec("bertscore_f1", BERTSCORE_LABEL, mean_reduce),
    "length_stats": MetricSpec("bleu_length_ratio", "length ratio", length_ratio_from_stats),
    "chrf_stats": MetricSpec("chrfpp", "chrF++", chrf_from_stats),
    "ter_stats": MetricSpec("ter", "TER", ter_from_stats, higher_is_better=False),
    "nist_stats": MetricSpec("nist", "NIST", nist_from_stats),
    "meteor": MetricSpec("meteor", "METEOR", mean_reduce),
    "cider": MetricSpec("cider", "CIDEr", mean_reduce),
    "ser_stats": MetricSpec("ser", "SER (%)", ratio_from_stats, higher_is_better=False),
    "entity_coverage": MetricSpec("entity_coverage", "entity coverage (%)", mean_reduce),
}
#: The metrics compared in the QAA-minus-method table and the verdicts.
DIFF_METRICS = ("bleu_stats", "rougeL", "nll")
#: Further metrics, each with its interval per method and its paired difference with QAA (their own Holm family,
#: outside the verdicts): shown where the runs recorded them.
EXTRA_METRICS = ("length_stats", "chrf_stats", "ter_stats", "nist_stats", "meteor", "cider", "ser_stats",
                 "entity_coverage")


# --------------------------------------------------------------------------------------------------
# Collecting the records
# --------------------------------------------------------------------------------------------------

def _order(methods) -> List[str]:
    known = registry.names()
    return [m for m in known if m in methods] + sorted(set(methods) - set(known))


def _tasks(results: dict) -> List[str]:
    seen = list(results.get("settings", {}).get("tasks", []))
    for t in results.get("tasks", {}):
        if t not in seen:
            seen.append(t)
    return seen


def _run_key(task, method, lr, ratio, seed) -> str:
    return run_key(task, method, lr, ratio, seed)


def collect(results: dict, task: str) -> Dict[str, dict]:
    """Per method (and the base row): the chosen configuration, its finished training runs and evaluations in
    seed order, and the per-input arrays the statistics use (``nll`` [S, N], ``bleu_stats`` [S, N, 10],
    ``rougeL`` [S, N], ``bertscore_f1`` [S, N] when scored)."""
    out: Dict[str, dict] = {}
    evals, runs = results.get("evals", {}), results.get("runs", {})
    base = evals.get(run_key(task, registry.BASE))
    if isinstance(base, dict) and base.get("status") == "ok":
        out[registry.BASE] = {"evals": [base], "runs": [], "selection": None}
    methods = {split_key(k)[1] for k in results.get("selection", {}) if split_key(k)[0] == task}
    for method in _order(methods):
        sel = results["selection"][selection_key(task, method)]
        entry = {"selection": sel, "evals": [], "runs": []}
        if sel.get("status") == "ok":
            for key, ev in sorted(evals.items()):
                if (ev.get("status") == "ok" and ev.get("task") == task and ev.get("method") == method
                        and ev.get("lr") == sel["lr"] and ev.get("theta_lr_ratio") == sel["theta_lr_ratio"]):
                    entry["evals"].append(ev)
                    run = runs.get(_run_key(task, method, sel["lr"], sel["theta_lr_ratio"], ev["seed"]))
                    if isinstance(run, dict) and run.get("status") == "ok":
                        entry["runs"].append(run)
            entry["evals"].sort(key=lambda e: e["seed"])
            entry["runs"].sort(key=lambda r: r["seed"])
        out[method] = entry
    for entry in out.values():
        evs = entry["evals"]
        arrays = {}
        if evs:
            arrays["nll"] = np.array([e["nll"] for e in evs], dtype=np.float64)
            for key in (k for k in METRICS if k != "nll"):
                if all(key in e.get("scores", {}) for e in evs):
                    arrays[key] = np.array([e["scores"][key] for e in evs], dtype=np.float64)
        entry["arrays"] = arrays
    return out


def _subset(arrays: dict, mask: Sequence[bool]) -> dict:
    idx = np.flatnonzero(np.asarray(mask, dtype=bool))
    return {k: v[:, idx] for k, v in arrays.items()}


def _intervals(entry: dict) -> Dict[str, Optional[Interval]]:
    out = {}
    for key, spec in METRICS.items():
        arr = entry["arrays"].get(key)
        out[key] = bootstrap(arr, spec) if arr is not None and arr.shape[1] else None
    return out


def _paired_diffs(entries: dict, pairs, n_seeds: int) -> Dict[tuple, Dict[str, Interval]]:
    """Paired differences for ``(a, b)`` method pairs whose every planned seed is scored by both (the same seed
    list, so seed ``s`` meets seed ``s``), Holm-adjusted over all of them and their metrics (one family)."""
    diffs: Dict[tuple, Dict[str, Interval]] = {}
    for a, b in pairs:
        ea, eb = entries.get(a), entries.get(b)
        if not ea or not eb or len(ea["evals"]) != n_seeds or len(eb["evals"]) != n_seeds:
            continue
        if [e["seed"] for e in ea["evals"]] != [e["seed"] for e in eb["evals"]]:
            continue
        diffs[(a, b)] = {k: paired_difference(ea["arrays"][k], eb["arrays"][k], METRICS[k])
                         for k in DIFF_METRICS if k in ea["arrays"] and k in eb["arrays"]}
    cells = [(pair, k) for pair, d in diffs.items() for k in d]
    adjusted = holm([diffs[pair][k].p for pair, k in cells])
    for (pair, k), p in zip(cells, adjusted):
        diffs[pair][k] = dataclasses.replace(diffs[pair][k], p_adjusted=p)
    return diffs
