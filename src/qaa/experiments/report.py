"""The comparison's report: ``results.md`` (tables like the QAA paper's) and PNG plots, from ``results.json``.

Everything here reads the results dict that :func:`qaa.experiments.compare.run_compare` writes, so a report can be
rebuilt from a saved run (``python -m qaa.experiments.report runs/compare``). Plots use matplotlib's ``Figure`` with the
Agg canvas directly (no pyplot, no global backend switch, no display needed).

Files written into the output folder:

- ``results.md``: one table per task (method, learning rate, trainable parameters and %, adapter size, peak
  memory, activation memory, mean / median step time, loss over the first and last steps, BLEU, ROUGE-1/2/L,
  BERTScore (MiniLM-L6) F1), failed runs listed under their task, a cross-task summary (means over tasks)
  and links to the plots.
- ``loss_<task>.png``: loss per step for every method (raw, and a moving average over 10% of the steps).
- ``peak_memory.png``: peak training memory and autograd-saved activation memory per task and method.
- ``trainable_params.png``: trainable parameters and adapter size on disk per method (log scales).
- ``metrics.png``: BLEU, ROUGE-1/2/L and BERTScore F1 per task and method (the untuned base included).
- ``step_time.png``: mean seconds per optimizer step (median as a marker) per task and method.
"""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..tuners.save_load import atomic_write_text
from . import registry

__all__ = ["METRIC_COLUMNS", "write_report", "write_markdown", "plot_losses", "plot_memory",
           "plot_parameters", "plot_metrics", "plot_step_times", "main"]

#: (results key, column label) of the quality metrics, in table order.
METRIC_COLUMNS = (("bleu", "BLEU"), ("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L"),
                  ("bertscore_f1", "BERTScore (MiniLM-L6)"))


def _order() -> tuple:
    """The base row, then the registered methods in registration order."""
    return (registry.BASE,) + registry.names()




# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------

def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _runs(results: dict, task: Optional[str] = None, ok: bool = True) -> List[dict]:
    runs = [r for r in results.get("runs", []) if task is None or r["task"] == task]
    if ok:
        runs = [r for r in runs if r.get("status") == "ok"]
    order = _order()
    return sorted(runs, key=lambda r: order.index(r["method"]) if r["method"] in order else len(order))


def _tasks(results: dict) -> List[str]:
    seen = list(results.get("settings", {}).get("tasks", []))
    for r in results.get("runs", []):
        if r["task"] not in seen:
            seen.append(r["task"])
    return seen


def _methods(results: dict) -> List[str]:
    present = {r["method"] for r in results.get("runs", [])}
    order = _order()
    return [m for m in order if m in present] + sorted(present - set(order))


def _human_bytes(n) -> str:
    if not _finite(n):
        return "–"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def _fmt(x, spec: str) -> str:
    return format(x, spec) if _finite(x) else "–"


def _metric(run: dict, key: str):
    return run.get("metrics", {}).get(key)


def _mean(values: Sequence) -> Optional[float]:
    vals = [v for v in values if _finite(v)]
    return sum(vals) / len(vals) if vals else None


# --------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------

def _header(results: dict) -> List[str]:
    s = results.get("settings", {})
    m = results.get("machine", {})
    v = results.get("versions", {})
    wall, cpu = results.get("wall_seconds"), results.get("cpu_seconds")
    load, load_end = m.get("load_average_start"), m.get("load_average_end")
    cpu_name = m.get("cpu_model") or m.get("processor") or m.get("machine", "")
    threads = m.get("torch_threads")
    where = (f"{m.get('cuda_device')} (CUDA)" if s.get("device") == "cuda"
             else f"CPU {cpu_name} ({m.get('cpu_affinity', m.get('cpu_count'))} cores), {threads} torch "
                  f"thread{'s' if threads != 1 else ''}")
    lines = [
        "# QAA vs LoRA, prefix tuning, SoRA" + (" and full fine-tuning" if "full" in s.get("methods", []) else ""),
        "",
        f"Base model `{s.get('model')}`; preset `{s.get('preset')}`; seed {s.get('seed')}. Every method trains "
        f"{s.get('steps')} AdamW steps x {s.get('batch_size')} sequences (the same sequences in the same order, "
        f"warm-up {s.get('warmup_steps')} step(s), then linear decay) on the same split, and is scored on the same "
        f"{s.get('eval_size')} held-out inputs per task (greedy, {s.get('max_new_tokens')} new tokens, all "
        "references of an input).",
        f"Device: {where}. Wall time: {_fmt(wall / 60 if _finite(wall) else None, '.1f')} min, process CPU time "
        f"{_fmt(cpu / 60 if _finite(cpu) else None, '.1f')} min (started {results.get('started')}"
        + (f"; 1-min load average {load[0]} at the start, {load_end[0]} at the end" if load and load_end else "")
        + f"). torch {v.get('torch')}, transformers {v.get('transformers')}, peft {v.get('peft')}.",
        "",
        "Columns: *trainable %* in peft's format (of all parameters of the adapted model); *adapter* = files "
        "saved on disk; *peak mem* = "
        + ("peak `torch.cuda.max_memory_allocated` during training above the allocation at its start"
           if s.get("device") == "cuda" else "peak resident-set increase during training (sampled every 5 ms)")
        + "; *act.* = bytes autograd saves for backward in one step; *step* = mean / median seconds per optimizer "
        "step; *loss* = mean of the first -> last steps (10% of the run, at most 10); BLEU: sacrebleu corpus "
        "BLEU; ROUGE: rouge-score F1 (best reference); BERTScore (MiniLM-L6): F1 with the local "
        "all-MiniLM-L6-v2, not comparable with roberta-large BERTScore. All scores 0-100.",
        "",
    ]
    return lines


def _task_table(results: dict, task: str) -> List[str]:
    info = results.get("tasks", {}).get(task, {})
    lines = [f"## {task}", ""]
    if info:
        lines += [f"{info.get('train_inputs')} training inputs ({info.get('train_pairs')} pairs, mean "
                  f"{_fmt(info.get('mean_train_tokens'), '.0f')} tokens), {info.get('test_inputs')} held-out inputs "
                  f"({info.get('test_references')} references); max length {info.get('max_length')} tokens; "
                  f"budget {info.get('budget_sequences')} sequences per method.", ""]
    cols = ["method", "lr", "trainable params", "trainable %", "adapter", "peak mem (MiB)", "act. (MiB)",
            "step (s)", "loss"] + [label for _, label in METRIC_COLUMNS]
    lines += ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|"]
    notes = []
    for r in _runs(results, task):
        base = r["method"] == "base"
        cells = [
            "base (untuned)" if base else r["method"],
            "–" if base else _fmt(r.get("lr"), ".0e"),
            f"{r.get('trainable_params', 0):,d}",
            _fmt(r.get("trainable_pct"), ".4f"),
            "–" if base else _human_bytes(r.get("adapter_bytes")),
            "–" if base else _fmt(r.get("peak_memory_mb"), ".0f"),
            "–" if base else _fmt(r.get("activation_mb"), ".0f"),
            "–" if base else f"{_fmt(r.get('mean_step_seconds'), '.2f')} / {_fmt(r.get('median_step_seconds'), '.2f')}",
            "–" if base else f"{_fmt(r.get('loss_first'), '.3f')} → {_fmt(r.get('loss_last'), '.3f')}",
        ] + [_fmt(_metric(r, key), ".2f") for key, _ in METRIC_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
        sora = r.get("sora")
        if sora:
            notes.append(f"SoRA after pruning (xi={sora.get('xi'):g} per step): total rank {sora.get('total_rank')} of "
                         f"{sora.get('total_rank_max')}, {sora.get('pruned_trainable_params', 0):,d} parameters "
                         f"left ({_fmt(sora.get('pruned_trainable_pct'), '.4f')}%); the pruned model is the one "
                         "evaluated and saved.")
    for r in _runs(results, task, ok=False):
        if r.get("status") != "ok":
            notes.append(f"**{r['method']} failed**: `{r.get('error', r.get('status'))}`")
    lines.append("")
    if notes:
        lines += [f"- {n}" for n in notes] + [""]
    return lines


def _summary_table(results: dict) -> List[str]:
    tasks = _tasks(results)
    lines = ["## Across tasks", "",
             f"Means over the tasks where the method ran ({', '.join(tasks)}); Δ BLEU / Δ ROUGE-L: mean change from the "
             "untuned base model on the same task.", ""]
    cols = (["method", "tasks", "trainable params", "adapter", "peak mem (MiB)", "step (s)"]
            + [label for _, label in METRIC_COLUMNS] + ["Δ BLEU", "Δ ROUGE-L"])
    lines += ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|"]
    base = {r["task"]: r for r in _runs(results) if r["method"] == "base"}
    for method in _methods(results):
        ok = [r for r in _runs(results) if r["method"] == method]
        if not ok:
            lines.append("| " + " | ".join([method, f"0/{len(tasks)}"] + ["–"] * (len(cols) - 2)) + " |")
            continue
        def delta(key):
            return _mean([_metric(r, key) - _metric(base[r["task"]], key) for r in ok if r["task"] in base
                          and _finite(_metric(r, key)) and _finite(_metric(base[r["task"]], key))])
        is_base = method == "base"
        cells = [
            "base (untuned)" if is_base else method, f"{len(ok)}/{len(tasks)}",
            f"{ok[0].get('trainable_params', 0):,d}",
            "–" if is_base else _human_bytes(_mean([r.get("adapter_bytes") for r in ok])),
            "–" if is_base else _fmt(_mean([r.get("peak_memory_mb") for r in ok]), ".0f"),
            "–" if is_base else _fmt(_mean([r.get("mean_step_seconds") for r in ok]), ".2f"),
        ] + [_fmt(_mean([_metric(r, key) for r in ok]), ".2f") for key, _ in METRIC_COLUMNS]
        cells += ["–", "–"] if is_base else [_fmt(delta("bleu"), "+.2f"), _fmt(delta("rougeL"), "+.2f")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def write_markdown(results: dict, path: str | os.PathLike, plots: Optional[Dict[str, str]] = None) -> Path:
    """Write the Markdown report of ``results`` to ``path`` (plots linked relative to its folder).

    Args:
        results: the dict of :func:`qaa.experiments.compare.run_compare` (or a loaded ``results.json``).
        path: the ``.md`` file to write (its folder must exist).
        plots: ``{name: png path}`` to link at the end.

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    lines = _header(results)
    for task in _tasks(results):
        lines += _task_table(results, task)
    lines += _summary_table(results)
    if plots:
        lines += ["## Plots", ""]
        for name, file in plots.items():
            rel = os.path.relpath(file, path.parent)
            lines += [f"![{name}]({rel})", ""]
    atomic_write_text(path, "\n".join(lines))
    return path


# --------------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------------

def _figure(width: float, height: float, ncols: int = 1, nrows: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def _save(fig, path: Path) -> str:
    fig.savefig(path, format="png")
    return str(path)


def _moving_average(values: Sequence[float], window: int) -> List[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot_losses(results: dict, out_dir: str | os.PathLike) -> Dict[str, str]:
    """One PNG per task, ``loss_<task>.png``: training loss per step for every method that trained.

    Returns:
        ``{"loss <task>": path}`` for the tasks with at least one trained run.
    """
    out_dir = Path(out_dir)
    paths = {}
    for task in _tasks(results):
        runs = [r for r in _runs(results, task) if r.get("losses")]
        if not runs:
            continue
        fig, (ax,) = _figure(7, 4.2)
        for r in runs:
            losses = r["losses"]
            steps = range(1, len(losses) + 1)
            color = registry.colour(r["method"])
            window = max(1, len(losses) // 10)
            ax.plot(steps, losses, color=color, alpha=0.25, linewidth=1)
            ax.plot(steps, _moving_average(losses, window), color=color, linewidth=2,
                    linestyle=registry.linestyle(r["method"]), label=f"{r['method']} (lr {r.get('lr', float('nan')):.0e})")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss (token cross-entropy)")
        ax.set_title(f"{task}: training loss (faint: per step; bold: moving average)")
        ax.grid(alpha=0.3)
        ax.legend()
        paths[f"loss {task}"] = _save(fig, out_dir / f"loss_{task}.png")
    return paths


def _short(y: float) -> str:
    return format(y, ".0f" if abs(y) >= 100 else ".1f" if abs(y) >= 10 else ".2f")


def _grouped_bars(ax, results: dict, methods: Sequence[str], value, ylabel: str, log: bool = False,
                  label_bars: bool = True) -> bool:
    """Bars of ``value(run)`` grouped by task, one colour per method. Returns whether anything was drawn."""
    tasks = _tasks(results)
    width = 0.8 / max(1, len(methods))
    drawn = False
    for j, method in enumerate(methods):
        xs, ys = [], []
        for i, task in enumerate(tasks):
            run = next((r for r in _runs(results, task) if r["method"] == method), None)
            y = value(run) if run is not None else None
            if _finite(y) and (not log or y > 0):
                xs.append(i - 0.4 + width * (j + 0.5))
                ys.append(y)
        if xs:
            bars = ax.bar(xs, ys, width=width, color=registry.colour(method), label=method)
            if label_bars:
                ax.bar_label(bars, labels=[_short(y) for y in ys], fontsize=7, padding=1)
            drawn = True
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)
    return drawn


def plot_memory(results: dict, out_dir: str | os.PathLike) -> Dict[str, str]:
    """``peak_memory.png``: peak training memory (left) and autograd-saved activations (right), in MiB."""
    methods = [m for m in _methods(results) if m != "base"]
    fig, (ax1, ax2) = _figure(11, 4.2, ncols=2)
    kind = "CUDA max allocated, above start" if results.get("settings", {}).get("device") == "cuda" else \
        "peak RSS increase"
    ok = _grouped_bars(ax1, results, methods, lambda r: r.get("peak_memory_mb"), f"MiB ({kind})")
    _grouped_bars(ax2, results, methods, lambda r: r.get("activation_mb"), "MiB saved for backward (one step)")
    if not ok:
        return {}
    ax1.set_title("peak memory during training")
    ax2.set_title("activation memory")
    ax1.legend(fontsize=8)
    return {"peak memory": _save(fig, Path(out_dir) / "peak_memory.png")}


def plot_parameters(results: dict, out_dir: str | os.PathLike) -> Dict[str, str]:
    """``trainable_params.png``: trainable parameters per method (log scale; SoRA also after pruning) and
    adapter size on disk (log scale), from each method's first successful run."""
    labels, counts, sizes, colors = [], [], [], []
    for method in _methods(results):
        if method == "base":
            continue
        run = next((r for r in _runs(results) if r["method"] == method), None)
        if run is None or not _finite(run.get("trainable_params")) or run["trainable_params"] <= 0:
            continue
        labels.append(method)
        counts.append(run["trainable_params"])
        sizes.append(run.get("adapter_bytes"))
        colors.append(registry.colour(method))
        sora = run.get("sora")
        if sora and _finite(sora.get("pruned_trainable_params")) and sora["pruned_trainable_params"] > 0:
            labels.append("sora (pruned)")
            counts.append(sora["pruned_trainable_params"])
            sizes.append(run.get("adapter_bytes"))
            colors.append(registry.colour("sora"))
    if not labels:
        return {}
    fig, (ax1, ax2) = _figure(11, 4.2, ncols=2)
    bars = ax1.bar(labels, counts, color=colors)
    ax1.bar_label(bars, labels=[f"{c:,d}" for c in counts], fontsize=7, padding=1)
    ax1.set_yscale("log")
    ax1.set_ylabel("trainable parameters (log)")
    ax1.set_title("trainable parameters")
    ax1.grid(axis="y", alpha=0.3)
    keep = [(l, s, c) for l, s, c in zip(labels, sizes, colors) if _finite(s) and s > 0 and l != "sora (pruned)"]
    if keep:
        bars = ax2.bar([k[0] for k in keep], [k[1] / 1024 for k in keep], color=[k[2] for k in keep])
        ax2.bar_label(bars, labels=[_human_bytes(k[1]) for k in keep], fontsize=7, padding=1)
    ax2.set_yscale("log")
    ax2.set_ylabel("KiB on disk (log)")
    ax2.set_title("adapter size")
    ax2.grid(axis="y", alpha=0.3)
    return {"trainable parameters": _save(fig, Path(out_dir) / "trainable_params.png")}


def plot_metrics(results: dict, out_dir: str | os.PathLike) -> Dict[str, str]:
    """``metrics.png``: one panel per metric (BLEU, ROUGE-1/2/L, BERTScore F1 when computed), bars per task and
    method, the untuned base model included."""
    keys = [(k, label) for k, label in METRIC_COLUMNS
            if any(_finite(_metric(r, k)) for r in _runs(results))]
    if not keys:
        return {}
    methods = _methods(results)
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = _figure(5 * cols, 3.8 * rows, ncols=cols, nrows=rows)
    for ax, (key, label) in zip(axes, keys):
        _grouped_bars(ax, results, methods, lambda r, k=key: _metric(r, k), label)
        ax.set_title(label)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=8)
    return {"metrics": _save(fig, Path(out_dir) / "metrics.png")}


def plot_step_times(results: dict, out_dir: str | os.PathLike) -> Dict[str, str]:
    """``step_time.png``: mean seconds per optimizer step per task and method, the median as a black dot."""
    methods = [m for m in _methods(results) if m != "base"]
    fig, (ax,) = _figure(7, 4.2)
    if not _grouped_bars(ax, results, methods, lambda r: r.get("mean_step_seconds"), "seconds per step (mean)"):
        return {}
    tasks = _tasks(results)
    width = 0.8 / max(1, len(methods))
    for j, method in enumerate(methods):
        for i, task in enumerate(tasks):
            run = next((r for r in _runs(results, task) if r["method"] == method), None)
            if run is not None and _finite(run.get("median_step_seconds")):
                ax.plot(i - 0.4 + width * (j + 0.5), run["median_step_seconds"], "k.", markersize=5)
    ax.set_title("time per optimizer step (dot: median)")
    ax.legend(fontsize=8)
    return {"step time": _save(fig, Path(out_dir) / "step_time.png")}


def write_report(results: dict, out_dir: str | os.PathLike) -> dict:
    """Write every plot and ``results.md`` for ``results`` into ``out_dir`` (created if needed).

    Returns:
        ``{"markdown": path of results.md, "plots": {name: png path}}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots: Dict[str, str] = {}
    for make in (plot_losses, plot_memory, plot_parameters, plot_metrics, plot_step_times):
        plots.update(make(results, out_dir))
    md = write_markdown(results, out_dir / "results.md", plots)
    return {"markdown": str(md), "plots": plots}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m qaa.experiments.report OUT``: rebuild ``OUT/results.md`` and the plots from ``OUT/results.json``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        print("usage: python -m qaa.experiments.report OUT_FOLDER  (the folder holding results.json)", file=sys.stderr)
        return 2
    src = Path(argv[0]) / "results.json"
    if not src.is_file():
        print(f"no results.json in {argv[0]}", file=sys.stderr)
        return 2
    report = write_report(json.loads(src.read_text(encoding="utf-8")), argv[0])
    print(report["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
