"""The report's plots (matplotlib ``Figure`` on the Agg canvas, no display needed): ``loss_<task>.png`` and
``metrics_<task>.png``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict

import numpy as np

from .. import registry
from ..stats import bootstrap
from .records import METRICS, _tasks, collect

# --------------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------------

def _figure(width: float, height: float, ncols: int = 1, nrows: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig, path: Path) -> str:
    fig.savefig(path, format="png", dpi=110)
    return str(path)


def plot_losses(results: dict, out_dir: str | os.PathLike) -> Dict[str, str]:
    """``loss_<task>.png``: training loss per step of each method's chosen configuration, mean over seeds with
    the min-max band over seeds."""
    out = {}
    for task in _tasks(results):
        entries = {m: e for m, e in collect(results, task).items() if e["runs"]}
        if not entries:
            continue
        fig, axes = _figure(8, 4.5)
        ax = axes[0][0]
        for method, e in entries.items():
            losses = np.array([r["losses"] for r in e["runs"] if r.get("losses")], dtype=np.float64)
            if losses.size == 0:
                continue
            steps = np.arange(losses.shape[1])
            colour = registry.colour(method)
            ax.plot(steps, losses.mean(axis=0), color=colour, linestyle=registry.linestyle(method),
                    label=f"{registry.label(method)} ({len(losses)} seeds)")
            if len(losses) > 1:
                ax.fill_between(steps, losses.min(axis=0), losses.max(axis=0), color=colour, alpha=0.15)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss (token cross-entropy)")
        ax.set_title(f"{task}: training loss (mean over seeds, band: min-max)")
        ax.legend(fontsize=7)
        out[f"loss_{task}"] = _save(fig, Path(out_dir) / f"loss_{task}.png")
    return out


def plot_metrics(results: dict, out_dir: str | os.PathLike) -> Dict[str, str]:
    """``metrics_<task>.png``: test NLL, BLEU and ROUGE-L per method with their 95% bootstrap intervals."""
    out = {}
    for task in _tasks(results):
        entries = {m: e for m, e in collect(results, task).items() if e["evals"]}
        if not entries:
            continue
        fig, axes = _figure(12, 4.2, ncols=3)
        for ax, key in zip(axes[0], ("nll", "bleu_stats", "rougeL")):
            names, vals, los, his, colours = [], [], [], [], []
            for method, e in entries.items():
                arr = e["arrays"].get(key)
                if arr is None:
                    continue
                iv = bootstrap(arr, METRICS[key])
                names.append(registry.label(method))
                vals.append(iv.value)
                los.append(iv.value - iv.lo)
                his.append(iv.hi - iv.value)
                colours.append(registry.colour(method) or "#333333")
            ys = np.arange(len(names))
            ax.barh(ys, vals, xerr=[los, his], color=colours, capsize=3)
            ax.set_yticks(ys, names, fontsize=7)
            ax.invert_yaxis()
            ax.set_title(f"{METRICS[key].label} (95% CI)", fontsize=9)
        fig.suptitle(f"{task}: held-out scores")
        out[f"metrics_{task}"] = _save(fig, Path(out_dir) / f"metrics_{task}.png")
    return out
