"""The report's plots (matplotlib ``Figure`` on the Agg canvas, no display needed): ``loss_<task>.png``,
``metrics_<task>.png``, ``curves_<task>.png`` (validation curves) and ``differences.png`` (QAA minus each
method across tasks)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict

import numpy as np

from .. import registry
from ..stats import bootstrap
from .records import METRICS, REFERENCE, _tasks, collect

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


def _band(ax, method: str, steps, values: np.ndarray, **style) -> None:
    """One method's line (mean over seeds, ``values`` [seeds, points]) with its min-max band over seeds."""
    colour = registry.colour(method)
    ax.plot(steps, values.mean(axis=0), color=colour, linestyle=registry.linestyle(method),
            label=f"{registry.label(method)} ({len(values)} seeds)", **style)
    if len(values) > 1:
        ax.fill_between(steps, values.min(axis=0), values.max(axis=0), color=colour, alpha=0.15)


def _steps_figure(series: Dict[str, tuple], ylabel: str, title: str, path: Path) -> str:
    """One panel against the optimizer step: per method ``(steps, values [seeds, points], line style)``."""
    fig, axes = _figure(8, 4.5)
    ax = axes[0][0]
    for method, (steps, values, style) in series.items():
        _band(ax, method, steps, values, **style)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_losses(results: dict, out_dir: str | os.PathLike) -> Dict[str, str]:
    """``loss_<task>.png``: training loss per step of each method's chosen configuration, mean over seeds with
    the min-max band over seeds."""
    out = {}
    for task in _tasks(results):
        entries = {m: e for m, e in collect(results, task).items() if e["runs"]}
        if not entries:
            continue
        series = {}
        for method, e in entries.items():
            losses = np.array([r["losses"] for r in e["runs"] if r.get("losses")], dtype=np.float64)
            if losses.size:
                series[method] = (np.arange(losses.shape[1]), losses, {})
        out[f"loss_{task}"] = _steps_figure(series, "training loss (token cross-entropy)",
                                            f"{task}: training loss (mean over seeds, band: min-max)",
                                            Path(out_dir) / f"loss_{task}.png")
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


def plot_curves(results: dict, out_dir: str | os.PathLike) -> Dict[str, str]:
    """``curves_<task>.png``: the validation-NLL checkpoints of each method's final runs (teacher-forced NLL of
    the fixed validation subset), mean over seeds with the min-max band."""
    out = {}
    for task in _tasks(results):
        curves = {m: [r["val_curve"] for r in e["runs"] if r.get("val_curve")]
                  for m, e in collect(results, task).items()}
        curves = {m: c for m, c in curves.items() if c and len({len(x) for x in c}) == 1}
        if not curves:
            continue
        arrays = {m: np.array(runs, dtype=np.float64) for m, runs in curves.items()}   # [seeds, points, 2]
        series = {m: (a[0, :, 0], a[:, :, 1], {"marker": "o", "markersize": 3}) for m, a in arrays.items()}
        out[f"curves_{task}"] = _steps_figure(series, "validation NLL (nats/token, fixed subset)",
                                              f"{task}: validation curves (mean over seeds, band: min-max)",
                                              Path(out_dir) / f"curves_{task}.png")
    return out


def plot_differences(results: dict, out_dir: str | os.PathLike, reference: str = REFERENCE) -> Dict[str, str]:
    """``differences.png``: the reference minus each method in test NLL with its 95% paired-bootstrap interval,
    every task in one figure (only methods with every planned seed scored beside the reference). Empty when
    no pair qualifies."""
    from ..stats import paired_difference

    n_seeds = len(results.get("settings", {}).get("seeds", []))
    rows = []
    for task in _tasks(results):
        entries = collect(results, task)
        ref = entries.get(reference, {}).get("arrays", {}).get("nll")
        if ref is None or ref.shape[0] != n_seeds:
            continue
        for method, e in entries.items():
            arr = e.get("arrays", {}).get("nll")
            if method in (reference, registry.BASE) or arr is None or arr.shape != ref.shape:
                continue
            iv = paired_difference(ref, arr, METRICS["nll"])
            rows.append((f"{task}: {registry.label(method)}", iv, registry.colour(method) or "#333333"))
    if not rows:
        return {}
    fig, axes = _figure(8, 1.0 + 0.45 * len(rows))
    ax = axes[0][0]
    ys = np.arange(len(rows))
    for y, (name, iv, colour) in zip(ys, rows):
        ax.errorbar([iv.value], [y], xerr=[[iv.value - iv.lo], [iv.hi - iv.value]], fmt="o", color=colour, capsize=3)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(ys, [r[0] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"{registry.label(reference)} − method, test NLL (nats/token; negative favours "
                  f"{registry.label(reference)}), 95% paired bootstrap")
    ax.set_title("Test NLL differences across tasks")
    return {"differences": _save(fig, Path(out_dir) / "differences.png")}
