"""The report's SoRA section: per SoRA run of a task, its threshold, validation NLL and the ranks its gates kept
after pruning, and whether any threshold of the grid prunes without hurting validation NLL.

SoRA (Ding et al. 2023, "Sparse Low-rank Adaptation of Pre-trained Language Models") trains a rank-``r_max``
LoRA with a gate vector per layer and soft-thresholds the gates by ``xi`` after every optimizer step; a gate
entry that reaches 0 removes one rank. The run records this reads are written by the registry's SoRA ``finish``
hook (``run["sora"]``: ``xi``, ``xi_factor``, ``r_max``, ``ranks`` per layer after pruning, ``total_rank``,
``total_rank_max``, ``pruned_trainable_params``).
"""
from __future__ import annotations

import math
import statistics
from typing import List, Optional

from ..claims import RATE_TOLERANCE
from ..registry import SORA_XI
from ..results import selection_key
from .format import _lr

__all__ = ["sora_runs", "pruning_verdict", "sora_lines"]

METHOD = "sora"


def sora_runs(results: dict, task: str) -> List[dict]:
    """The finished SoRA training runs of ``task`` that recorded their ranks, sweep runs first (by rate, then
    threshold factor), then final seeds."""
    sel_seed = results.get("settings", {}).get("selection_seed")
    out = [r for r in results.get("runs", {}).values()
           if isinstance(r, dict) and r.get("task") == task and r.get("method") == METHOD and r.get("status") == "ok"
           and isinstance(r.get("sora"), dict) and isinstance(r["sora"].get("ranks"), dict)]
    return sorted(out, key=lambda r: (r.get("seed") != sel_seed, r.get("seed"), r.get("lr"),
                                      r["sora"].get("xi_factor", 1.0)))


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def pruning_verdict(sweep: List[dict], lr: float, tolerance: float = RATE_TOLERANCE) -> Optional[dict]:
    """Does a threshold of the grid prune without hurting validation NLL, at the chosen rate ``lr``?

    ``sweep``: the selection-seed runs. At ``lr``, the run with the release's threshold (factor 1) is the
    reference; a run with a larger factor *prunes* when it keeps fewer ranks than the reference, and is
    *harmless* when its validation NLL is at most ``tolerance`` nats/token above the reference's (the
    rate-sensitivity tolerance of :data:`qaa.experiments.claims.RATE_TOLERANCE`, so both rules read alike).
    Comparing at one rate keeps the learning rate out of the comparison.

    Returns ``None`` without a finite reference, else ``{"kind", "reference", "run", "delta"}``: ``kind`` is
    ``"prunes_free"`` (``run``: the harmless run keeping the fewest ranks), ``"prunes_hurt"`` (some run prunes,
    none harmlessly; ``run``: the pruning run with the lowest validation NLL), ``"none_pruned"`` (no larger
    factor kept fewer ranks) or ``"no_grid"`` (no larger factor was run; ``run`` is ``None`` for these two);
    ``delta`` is ``run``'s validation NLL minus the reference's.
    """
    at = [r for r in sweep if r.get("lr") == lr and _finite(r.get("val_nll"))]
    ref = [r for r in at if r["sora"].get("xi_factor", 1.0) == 1.0]
    if not ref:
        return None
    ref = ref[0]
    larger = [r for r in at if r["sora"].get("xi_factor", 1.0) > 1.0]
    out = {"reference": ref, "run": None, "delta": None}
    if not larger:
        return {**out, "kind": "no_grid"}
    pruning = [r for r in larger if r["sora"]["total_rank"] < ref["sora"]["total_rank"]]
    if not pruning:
        return {**out, "kind": "none_pruned"}
    harmless = [r for r in pruning if r["val_nll"] <= ref["val_nll"] + tolerance]
    run = (min(harmless, key=lambda r: (r["sora"]["total_rank"], r["val_nll"])) if harmless
           else min(pruning, key=lambda r: r["val_nll"]))
    return {**out, "kind": "prunes_free" if harmless else "prunes_hurt", "run": run,
            "delta": float(run["val_nll"] - ref["val_nll"])}


def _ranks_cell(s: dict) -> str:
    ranks = sorted(int(v) for v in s["ranks"].values())
    zero = sum(v == 0 for v in ranks)
    return (f"{s['total_rank']} of {s['total_rank_max']} | {zero} of {len(ranks)} | "
            f"{ranks[0]} / {statistics.median(ranks):g} / {ranks[-1]}")


def _config(r: dict) -> str:
    return f"rate {_lr(r['lr'])}, xi factor {r['sora'].get('xi_factor', 1.0):g}"


def sora_lines(results: dict, task: str) -> List[str]:
    """The SoRA section of ``task``: a table of every SoRA run (sweep and final seeds) with its threshold,
    validation NLL and kept ranks, the pruning verdict of :func:`pruning_verdict`, and the ranks the final runs
    kept. Empty when the task has no SoRA run with recorded ranks."""
    runs = sora_runs(results, task)
    if not runs:
        return []
    sel_seed = results.get("settings", {}).get("selection_seed")
    lines = ["", f"SoRA's threshold and the ranks it kept (gates start Normal(0, 1); after every optimizer step "
                 f"each gate entry is soft-thresholded by xi = factor x {SORA_XI:g}, the release's per-step value; "
                 "an entry at 0 removes one rank; ranks counted after pruning; the release's own value (factor 1) "
                 "cannot zero a typical gate (|g| ~ 0.67) in a short budget, so the grid reaches 300x):",
             "",
             "| run | rate | xi factor | xi | validation NLL | kept rank (of max) | layers at rank 0 | "
             "per-layer rank min / median / max | trainable params after pruning |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        s = r["sora"]
        kind = "sweep" if r.get("seed") == sel_seed else "final"
        val = f"{r['val_nll']:.4f}" if _finite(r.get("val_nll")) else "-"
        params = s.get("pruned_trainable_params")
        params = f"{params:,d}" if isinstance(params, int) else "-"
        lines.append(f"| {kind}, seed {r.get('seed')} | {_lr(r['lr'])} | {s.get('xi_factor', 1.0):g} | "
                     f"{s.get('xi', float('nan')):.2g} | {val} | {_ranks_cell(s)} | {params} |")
    sel = results.get("selection", {}).get(selection_key(task, METHOD), {})
    v = pruning_verdict([r for r in runs if r.get("seed") == sel_seed], sel.get("lr"))
    rule = (f"(rule: at the chosen rate, a larger threshold is harmless if its validation NLL is at most "
            f"{RATE_TOLERANCE} nats/token above that of the release's threshold, factor 1)")
    if v is None:
        lines += ["", "No SoRA sweep run at the chosen rate with the release's threshold: no pruning verdict."]
    elif v["kind"] == "no_grid":
        lines += ["", "Pruning: no threshold above the release's was run at the chosen rate: no pruning verdict."]
    elif v["kind"] == "none_pruned":
        lines += ["", "Pruning: no threshold of the grid kept fewer ranks than the release's within the budget."]
    else:
        ref, run = v["reference"], v["run"]
        kept = f"keeps {run['sora']['total_rank']} of {run['sora']['total_rank_max']} ranks"
        if v["kind"] == "prunes_free":
            what = (f"threshold factor {run['sora']['xi_factor']:g} prunes without hurting: it {kept}, with "
                    f"validation NLL {run['val_nll']:.4f} against {ref['val_nll']:.4f} at factor 1 "
                    f"({v['delta']:+.4f}; factor 1 keeps {ref['sora']['total_rank']})")
        else:
            what = (f"no threshold of the grid prunes without hurting; the least harmful, factor "
                    f"{run['sora']['xi_factor']:g}, {kept} at validation NLL {run['val_nll']:.4f} against "
                    f"{ref['val_nll']:.4f} ({v['delta']:+.4f}). SoRA's row is kept in every table either way")
        chosen = sel.get("theta_lr_ratio")
        lines += ["", f"Pruning {rule}: {what}. The selection, by validation NLL alone, chose factor "
                      f"{chosen:g}." if isinstance(chosen, (int, float)) else f"Pruning {rule}: {what}."]
    final = [r for r in runs if r.get("seed") != sel_seed]
    final = [r for r in final if r.get("lr") == sel.get("lr")
             and r.get("theta_lr_ratio") == sel.get("theta_lr_ratio")]
    if final:
        kept = ", ".join(f"seed {r['seed']}: {r['sora']['total_rank']}" for r in final)
        lines.append(f"\nFinal runs at the chosen configuration ({_config(final[0])}) kept ranks {kept} "
                     f"of {final[0]['sora']['total_rank_max']}.")
    return lines
