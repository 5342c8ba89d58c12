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


def pruning_verdict(sweep: List[dict], tolerance: float = RATE_TOLERANCE) -> Optional[dict]:
    """Does a threshold prune without hurting validation NLL? ``sweep``: the selection-seed runs (any rates).

    A run *prunes* when its kept rank is below its maximum. Its validation NLL is compared with the best run that
    kept every rank; "without hurting" means at most ``tolerance`` nats/token above it (the rate-sensitivity
    tolerance of :data:`qaa.experiments.claims.RATE_TOLERANCE`, so both rules read alike).

    Returns ``None`` without a finite validation NLL, else ``{"kind", "best_full", "best_pruning", "delta"}``:
    ``kind`` is ``"none_pruned"`` (no run pruned a rank), ``"no_full"`` (every run pruned: nothing to compare
    with), ``"prunes_free"`` (the best pruning run is within the tolerance) or ``"prunes_hurt"``; ``best_full``
    and ``best_pruning`` are run records (or ``None``), ``delta`` the pruning run's NLL minus the full one's.
    """
    rows = [r for r in sweep if _finite(r.get("val_nll"))]
    if not rows:
        return None
    full = [r for r in rows if r["sora"]["total_rank"] >= r["sora"]["total_rank_max"]]
    pruning = [r for r in rows if r["sora"]["total_rank"] < r["sora"]["total_rank_max"]]
    best_full = min(full, key=lambda r: r["val_nll"]) if full else None
    best_pruning = min(pruning, key=lambda r: r["val_nll"]) if pruning else None
    if best_pruning is None:
        return {"kind": "none_pruned", "best_full": best_full, "best_pruning": None, "delta": None}
    if best_full is None:
        return {"kind": "no_full", "best_full": None, "best_pruning": best_pruning, "delta": None}
    delta = float(best_pruning["val_nll"] - best_full["val_nll"])
    return {"kind": "prunes_free" if delta <= tolerance else "prunes_hurt", "best_full": best_full,
            "best_pruning": best_pruning, "delta": delta}


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
    v = pruning_verdict([r for r in runs if r.get("seed") == sel_seed])
    if v is None:
        lines += ["", "No SoRA sweep run has a finite validation NLL: no pruning verdict."]
    elif v["kind"] == "none_pruned":
        lines += ["", "Pruning: no threshold of the grid zeroed a gate entry within the budget, so every SoRA run "
                      "here is a rank-8 LoRA with a gate."]
    elif v["kind"] == "no_full":
        lines += ["", f"Pruning: every sweep run pruned; the best ({_config(v['best_pruning'])}) kept "
                      f"{v['best_pruning']['sora']['total_rank']} of {v['best_pruning']['sora']['total_rank_max']} "
                      "ranks (no unpruned run to compare with)."]
    else:
        bp, bf = v["best_pruning"], v["best_full"]
        what = ("prunes without hurting validation NLL" if v["kind"] == "prunes_free"
                else "no threshold of the grid prunes without hurting validation NLL")
        lines += ["", f"Pruning (rule: a pruning run is harmless if its validation NLL is at most {RATE_TOLERANCE} "
                      f"nats/token above the best run that kept every rank): {what}. Best pruning run: "
                      f"{_config(bp)}, kept {bp['sora']['total_rank']} of {bp['sora']['total_rank_max']} ranks, "
                      f"validation NLL {bp['val_nll']:.4f}; best unpruned: {_config(bf)}, {bf['val_nll']:.4f} "
                      f"({v['delta']:+.4f})."
                  + (" SoRA's row is kept in every table either way." if v["kind"] == "prunes_hurt" else "")]
    final = [r for r in runs if r.get("seed") != sel_seed]
    sel = results.get("selection", {}).get(selection_key(task, METHOD), {})
    final = [r for r in final if r.get("lr") == sel.get("lr")
             and r.get("theta_lr_ratio") == sel.get("theta_lr_ratio")]
    if final:
        kept = ", ".join(f"seed {r['seed']}: {r['sora']['total_rank']}" for r in final)
        lines.append(f"\nFinal runs at the chosen configuration ({_config(final[0])}) kept ranks {kept} "
                     f"of {final[0]['sora']['total_rank_max']}.")
    return lines
