"""``qaa compare``: does QAA adapt the model as well as the baselines and controls, at what cost?

The protocol (docs/design.md, "The comparison"):

1. **Splits.** Per task, the task registry (:mod:`.tasks`) splits the inputs three ways (train / validation /
   test, disjoint by input) by ``split_seed`` alone; training seeds never move it, so runs with different
   training seeds are paired on the same test inputs. Training pairs are every (input,
   reference); lengths are fitted to the training split (``max_length`` = the longest pair, so none is cut or
   dropped, unless a cap is given, and then the cut and dropped pairs are counted and reported).
2. **Learning rates on validation only.** For every method, a sweep over its registered grid
   (:mod:`.registry`, the widening rule in :mod:`.selection`) trains with the selection seed (100 in the cpu
   and gpu presets, apart from the final seeds) at the final runs' steps and batch and scores the
   teacher-forced validation NLL; a grid whose best rate lies on its edge is widened (factor 3, up to
   ``max_widen`` times per side). For methods with circuit angles, the angle-rate ratio is then swept at the
   chosen rate. Nothing reads the test inputs until the final scoring.
3. **Final runs.** The chosen configuration is trained with every training seed (a selection seed that is also
   a final seed reuses the sweep's run); each run's adapter is saved, loaded back onto a fresh base model
   (``reload_max_abs_diff`` records the logit difference) and the loaded model is scored on the test inputs:
   teacher-forced NLL per input, and greedy generations scored against all references of an input (BLEU,
   ROUGE-1/2/L, chrF++, ..., BERTScore (MiniLM-L6)). The untuned base model is scored the same way once per task.
4. **Uncertainty.** :mod:`.stats`: mean and standard deviation over seeds, 95% paired-bootstrap intervals over
   test inputs, and QAA minus each method with its interval; :mod:`.report` writes the verdicts from them.

Every training run and every evaluation is a record in ``<out>/results.json`` (:mod:`.results`) keyed by
(task, method, rate, angle ratio, seed), written as it finishes (under a file lock, merged with records other processes wrote to
the same folder), so an interrupted or partial comparison resumes where it stopped: a rerun with the same
settings skips finished records. Settings that change what a record means (model, steps, batch, split, lengths,
...) must match the folder's, else the command stops before doing anything.
"""
from __future__ import annotations

import copy
import datetime
import gc
import math
import os
import shutil
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from tqdm.auto import tqdm

from ..tuners.utils import trainable_parameter_summary, trainable_parameters_line
from . import registry
from .base_model import load_base_model
from .pipeline import TaskData, evaluate_test, load_splits, prepare_task, set_threads
from .results import RESULTS_FILE, Store, run_key, selection_key, write_losses
from .selection import select_best as _select
from .selection import widen_sweep
from .registry import BASE, RunContext
from .provenance import QAA_DEFAULTS
from .report import seed_notice, write_report
from .settings import PRESETS, CompareSettings, resolve_settings
from .environment import load_average as _load_average, machine as _machine, versions as _versions
from .train import TrainConfig, collate, pair_nll, train

__all__ = ["METHODS", "DEFAULT_METHODS", "METHOD_LR", "PRESETS", "CompareSettings", "resolve_settings",
           "run_compare", "adapter_size_bytes", "run_key", "RESULTS_FILE"]

#: The registered methods, their default set and default rates when this module was imported (the registry,
#: :mod:`.registry`, is the source; these names are kept for the public API).
METHODS: Tuple[str, ...] = registry.names()
DEFAULT_METHODS: Tuple[str, ...] = registry.default_names()
METHOD_LR: Dict[str, float] = {m: registry.get(m).lr for m in METHODS}


# --------------------------------------------------------------------------------------------------
# Adapter files and memory
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


# --------------------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------------------

def _split_task(task: str, settings: CompareSettings):
    """The task's splits with the evaluation caps applied (:func:`qaa.experiments.pipeline.load_splits`)."""
    return load_splits(task, settings.split_seed, settings.val_fraction, settings.test_fraction, settings.data,
                       settings.eval_size.get(task), settings.val_size.get(task), settings.eval_size_given,
                       train_size=settings.train_size)


# --------------------------------------------------------------------------------------------------
# One training run, one evaluation
# --------------------------------------------------------------------------------------------------

@torch.no_grad()
def _logits(model, probe: Dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    device = next(model.parameters()).device
    return model(**{k: v.to(device) for k, v in probe.items()}).logits.float().cpu()


def _nll(model, pairs, pad: int) -> Tuple[float, List[Tuple[float, int]]]:
    per = pair_nll(model, pairs, pad)
    tokens = sum(n for _, n in per)
    return sum(s for s, _ in per) / max(tokens, 1), per


def _train_run(data: TaskData, method: str, lr: float, ratio: float, seed: int, new_model, tokenizer,
               settings: CompareSettings, out: Path, probe, pad: int) -> dict:
    """Attach, train, (finish), save, reload-check and score validation NLL. Returns the record."""
    spec = registry.get(method)
    rec: dict = {"task": data.task, "method": method, "lr": lr, "theta_lr_ratio": ratio, "seed": seed,
                 "status": "running"}
    t_run, cpu_run = time.perf_counter(), time.process_time()
    _release_memory()
    torch.manual_seed(seed)  # adapter initialisation (LoRA's A, the prefix, QAA's theta via ctx.seed)
    ctx = RunContext(settings=settings, seed=seed, tokenizer=tokenizer, train_pairs=data.encoded_train, pad_id=pad,
                     batch_size=settings.batch_size, ratio=ratio)
    model = spec.attach(new_model(), ctx)
    trainable, total, pct = trainable_parameter_summary(model)
    rec.update(trainable_params=trainable, all_params=total, trainable_pct=pct,
               trainable_line=trainable_parameters_line(model))
    hooks = spec.hooks(model, ctx) if spec.hooks else registry.TrainHooks()
    curve_steps = checkpoint_steps(settings.steps, settings.curve_points)
    curve: List[List[float]] = []
    if curve_steps:
        curve.append([0, _nll(model, data.curve_pairs, pad)[0]])
        model.train()

    def after_step(step: int, model=model) -> None:
        if hooks.after_step is not None:
            hooks.after_step(step)
        if step + 1 in curve_steps:
            curve.append([step + 1, _nll(model, data.curve_pairs, pad)[0]])
            model.train()  # the NLL ran in eval mode; training goes on in train mode

    cfg = TrainConfig(steps=settings.steps, batch_size=settings.batch_size, lr=lr, warmup_steps=settings.warmup_steps,
                      max_length=data.max_length, seed=seed, theta_lr_ratio=ratio)
    cpu0 = time.process_time()
    result = train(model, tokenizer, data.encoded_train, cfg, after_step=after_step,
                   extra_loss=hooks.extra_loss, progress=settings.progress,
                   desc=f"train {data.task}/{method} lr={lr:.0e} s{seed}")
    cuda = settings.device == "cuda"
    rec.update(losses=[float(x) for x in result.losses], step_seconds=[float(x) for x in result.step_times],
               train_seconds=result.train_seconds, train_cpu_seconds=time.process_time() - cpu0,
               peak_memory_mb=result.peak_rss_delta_mb,
               peak_memory_kind="cuda_max_allocated_delta" if cuda else "rss_delta",
               activation_mb=result.activation_mb, mean_step_seconds=statistics.fmean(result.step_times),
               median_step_seconds=statistics.median(result.step_times))
    if curve_steps:
        rec["val_curve"] = curve  # [[optimizer steps taken, NLL of the curve pairs (token-weighted)], ...]
        rec["val_curve_pairs"] = len(data.curve_pairs)
    if spec.finish:
        rec.update(spec.finish(model, ctx))
    folder = out / "adapters" / data.task / method / f"lr{lr:.6g}_r{ratio:.6g}_s{seed}"
    if folder.exists():  # left by an interrupted run: its files must not count
        shutil.rmtree(folder)
    spec.save(model, folder)
    rec["adapter_dir"] = str(folder.relative_to(out))
    rec["adapter_bytes"] = adapter_size_bytes(folder)
    reference = _logits(model, probe)
    del model
    reloaded = spec.reload(new_model(), folder).to(settings.device)
    rec["reload_max_abs_diff"] = float((_logits(reloaded, probe) - reference).abs().max())
    rec["val_nll"], _ = _nll(reloaded, data.val_pairs, pad)
    rec.update(status="ok", run_seconds=time.perf_counter() - t_run, run_cpu_seconds=time.process_time() - cpu_run)
    return rec


def checkpoint_steps(steps: int, points: int) -> List[int]:
    """The optimizer-step counts after which a run's validation curve is recorded: ``points`` counts spread evenly
    over ``1..steps`` (``round(k * steps / points)``, k = 1..points, duplicates removed, the last = ``steps``),
    plus step 0 (the untrained start) recorded before training. ``points`` 0: none.

    Raises:
        ValueError: ``steps`` < 1 or ``points`` < 0.
    """
    if steps < 1 or points < 0:
        raise ValueError(f"steps must be >= 1 and points >= 0, got {steps} and {points}")
    return sorted({max(1, round(k * steps / points)) for k in range(1, points + 1)}) if points else []


def _evaluate(model, data: TaskData, tokenizer, settings: CompareSettings, pad: int, desc: str) -> dict:
    """Test NLL per input and greedy generations scored per input (:func:`.pipeline.evaluate_test`)."""
    return evaluate_test(model, data, tokenizer, pad, progress=settings.progress,
                         device="cuda" if settings.device == "cuda" else "cpu", bertscore=settings.bertscore,
                         desc=desc)


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------

def run_compare(args) -> dict:
    """Run the comparison described by ``args`` (the ``qaa compare`` namespace; see :func:`resolve_settings`).

    Returns:
        the results dict also written to ``<out>/results.json`` (``settings``, ``machine``, ``versions``,
        ``tasks``, ``runs``, ``evals``, ``selection``, ``report``).

    Raises:
        ValueError: bad settings (see :func:`resolve_settings`), an ``--eval-size`` beyond a task's test pool,
        an ``--out`` holding an incompatible comparison. FileNotFoundError / ImportError: the base model or a
        task's data cannot be loaded (before any run). RuntimeError: every run failed. A failing run does not
        raise: it is recorded and the comparison goes on.
    """
    load_start = _load_average()  # before any work of this run: the report compares it with the run's threads
    settings = resolve_settings(args)  # bad input fails here, before the heavy imports
    notice = seed_notice(len(settings.seeds))
    if notice:
        print(f"qaa compare: warning: {notice}", file=sys.stderr, flush=True)
    if settings.lr_grid_from:
        uncentred = [m for m in dict.fromkeys(m for ms in settings.methods.values() for m in ms)
                     if m not in settings.lr_centre and m not in settings.lr]
        if uncentred:
            print(f"qaa compare: note: {settings.lr_grid_from} has no chosen rate for {', '.join(uncentred)}; "
                  "their sweeps use the registered grids", file=sys.stderr, flush=True)
    splits = {task: _split_task(task, settings) for task in settings.tasks}  # eval-size checked before the model
    set_threads(settings.threads)
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start, cpu_start = time.perf_counter(), time.process_time()
    store = Store(out, settings, {"machine": _machine(settings.device, load_start), "versions": _versions(),
                                  "model_label": settings.model_label, "qaa_defaults": QAA_DEFAULTS,
                                  "started": datetime.datetime.now().isoformat(timespec="seconds")})
    log = lambda msg: tqdm.write(msg, file=sys.stdout)  # noqa: E731

    base_model, tokenizer = load_base_model(settings.model, progress=settings.progress)
    base_model.requires_grad_(False)
    base_model.to(settings.device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def new_model():
        return copy.deepcopy(base_model)

    failures = successes = 0
    plan = {task: settings.methods_for(task) for task in settings.tasks}
    n_runs = sum(1 for task in settings.tasks for _ in [BASE, *plan[task]])
    bar = tqdm(total=n_runs, desc="compare", disable=not settings.progress, dynamic_ncols=True, position=0)
    try:
        for task in settings.tasks:
            data = prepare_task(task, tokenizer, splits[task], settings.max_length.get(task),
                                settings.max_new_tokens.get(task))
            data.info["budget_sequences"] = settings.steps * settings.batch_size
            data.curve_pairs = data.val_pairs[:settings.curve_pairs]  # fixed: the first pairs of the split
            data.info["curve_pairs"] = len(data.curve_pairs)
            store.set_meta("tasks", task, data.info)
            probe = {k: v for k, v in collate(data.encoded_train[:2], pad).items() if k != "labels"}
            log(f"{task}: {data.info['train_inputs']} train / {data.info['val_inputs']} validation / "
                f"{data.info['test_inputs']} test inputs; max_length {data.max_length}, max_new_tokens "
                f"{data.max_new_tokens}; {data.info['train_pairs_cut']} pairs cut, "
                f"{data.info['train_pairs_dropped']} dropped")

            key = run_key(task, BASE)
            if not store.finished("evals", key):
                bar.set_postfix_str(f"{task}/{BASE}")
                try:
                    model = new_model()
                    rec = _evaluate(model, data, tokenizer, settings, pad, f"eval {task}/{BASE}")
                    rec.update(task=task, method=BASE, all_params=trainable_parameter_summary(model)[1])
                    del model
                    successes += 1
                except Exception as e:  # recorded; the methods still run
                    rec = {"task": task, "method": BASE, "status": "error", "error": f"{type(e).__name__}: {e}",
                           "traceback": traceback.format_exc()}
                    failures += 1
                    log(f"qaa compare: {task}/{BASE} failed: {rec['error']}")
                store.update("evals", key, rec)
            bar.update(1)

            for method in plan[task]:
                bar.set_postfix_str(f"{task}/{method}")
                try:
                    done, failed = _run_method(task, method, data, new_model, tokenizer, settings, out, probe, pad,
                                               store, log)
                    successes += done
                    failures += failed
                except Exception as e:  # selection failed (every rate diverged): recorded, the others still run
                    failures += 1
                    store.set_meta("selection", selection_key(task, method), {"status": "error",
                                                                    "error": f"{type(e).__name__}: {e}"})
                    log(f"qaa compare: {task}/{method} failed: {type(e).__name__}: {e}")
                bar.update(1)
    finally:
        bar.close()
        data_all = store.data
        data_all["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        data_all["wall_seconds_last_invocation"] = time.perf_counter() - t_start
        data_all["cpu_seconds_last_invocation"] = time.process_time() - cpu_start
        data_all["machine"]["load_average_end"] = _load_average()
        try:
            data_all["report"] = write_report(data_all, out)
        except Exception as e:  # the JSON must survive a plotting failure
            data_all["report"] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
            print(f"qaa compare: report failed: {data_all['report']['error']}", file=sys.stderr, flush=True)
        with store.lock:
            merged = store._read() or data_all
            for k in ("finished", "wall_seconds_last_invocation", "cpu_seconds_last_invocation", "report"):
                merged[k] = data_all[k]
            merged["machine"]["load_average_end"] = data_all["machine"]["load_average_end"]
            store._write(merged)
            store.data = merged
        write_losses(store.data, out)
    log(f"done in {(time.perf_counter() - t_start) / 60:.1f} min; {failures} failed record(s); results in {out}")
    if isinstance(store.data.get("report"), dict) and "markdown" in store.data["report"]:
        print(Path(store.data["report"]["markdown"]).read_text(encoding="utf-8"))
    if failures and not successes and not _any_ok(store.data):
        raise RuntimeError(f"every run failed (see {out / RESULTS_FILE})")
    return store.data


def _any_ok(data: dict) -> bool:
    return any(r.get("status") == "ok" for sec in ("runs", "evals") for r in data.get(sec, {}).values())


def _run_method(task, method, data, new_model, tokenizer, settings, out, probe, pad, store, log) -> Tuple[int, int]:
    """Sweep (or the given rate), then the final seeds. Returns (records done, records failed)."""
    spec = registry.get(method)
    done = failed = 0
    cache: Dict[Tuple[float, float], Optional[dict]] = {}

    def train_one(lr: float, ratio: float, seed: int) -> Optional[dict]:
        nonlocal done, failed
        key = run_key(task, method, lr, ratio, seed)
        rec = store.finished("runs", key)
        # A finished run is reused, unless it is a final seed still to be scored whose saved adapter is gone
        # (records copied without the adapters folder): then it is trained again.
        if rec is not None and (seed not in settings.seeds or store.finished("evals", key)
                                or (out / rec.get("adapter_dir", "")).is_dir()):
            return rec
        try:
            rec = _train_run(data, method, lr, ratio, seed, new_model, tokenizer, settings, out, probe, pad)
            done += 1
            log(f"{task}/{method} lr={lr:.0e} ratio={ratio:g} seed={seed}: loss {rec['losses'][0]:.3f} -> "
                f"{rec['losses'][-1]:.3f}, val NLL {rec['val_nll']:.4f}, {rec['mean_step_seconds']:.2f} s/step")
        except Exception as e:  # recorded; the sweep and the other methods go on
            rec = {"task": task, "method": method, "lr": lr, "theta_lr_ratio": ratio, "seed": seed,
                   "status": "error", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
            failed += 1
            log(f"qaa compare: {task}/{method} lr={lr:.0e} seed={seed} failed: {rec['error']}")
        store.update("runs", key, rec)
        return rec if rec.get("status") == "ok" else None

    fixed = settings.lr.get(method)
    # A sweep trains with the selection seed; with nothing to choose (a given rate, or the default without a
    # sweep) the one configuration's run is the first final seed's.
    swept = bool(settings.select_lr and fixed is None)
    sel_seed = settings.selection_seed if swept else settings.seeds[0]

    def val(lr: float, ratio: float) -> Optional[dict]:
        if (lr, ratio) not in cache:
            cache[(lr, ratio)] = train_one(lr, ratio, sel_seed)
        return cache[(lr, ratio)]

    # --lr-grid-from: the sweep's grid is centred on an earlier choice, and a method with circuit angles keeps
    # that choice's angle-rate ratio (its rates are swept at it, and the ratios are not swept again).
    centre = settings.lr_centre.get(method) if swept else None
    sweep_ratio = settings.lr_centre_ratio.get(method, 1.0) if centre is not None else 1.0
    if fixed is not None:
        grid = [fixed]
    elif centre is not None:
        grid = [float(f"{x:.6g}") for x in (centre / 3.0, centre, centre * 3.0)]  # as run keys print them
    else:
        grid = list(spec.lr_grid) if settings.select_lr else [spec.lr]
    if swept:
        def nll_at(lr: float) -> float:
            rec = val(lr, sweep_ratio)
            return rec["val_nll"] if rec and math.isfinite(rec.get("val_nll", math.inf)) else math.inf
        widen_sweep(grid, nll_at, settings.max_widen)
    else:
        for lr in grid:
            val(lr, settings.theta_lr_ratio.get(method, 1.0) if fixed is not None else 1.0)
    best_lr, _ = _select(cache if fixed is not None else {k: v for k, v in cache.items() if k[1] == sweep_ratio})
    if swept and not (centre is not None and method in settings.lr_centre_ratio):
        for ratio in settings.theta_lr_ratios if spec.theta else spec.ratio_grid:
            val(best_lr, float(ratio))
    best_lr, best_ratio = _select(cache)
    store.set_meta("selection", selection_key(task, method), {
        "status": "ok", "lr": best_lr, "theta_lr_ratio": best_ratio, "criterion": "validation NLL (nats/token)",
        "seed": sel_seed, "given": fixed is not None, "swept": swept,
        "given_by": settings.lr_given_by.get(method, "--lr") if fixed is not None else None,
        "chosen_on": settings.lr_chosen_on.get(method) if fixed is not None else None,
        "lr_from": settings.lr_from if fixed is not None and settings.lr_given_by.get(method) == "--lr-from" else None,
        "grid_centre": centre, "grid_from": settings.lr_grid_from if swept else None,
        "grid_centre_how": settings.lr_centre_how.get(method) if centre is not None else None,
        "ratio_carried": centre is not None and method in settings.lr_centre_ratio,
        "grid": [{"lr": k[0], "theta_lr_ratio": k[1], "val_nll": (v or {}).get("val_nll"),
                  "status": "ok" if v else "error"} for k, v in sorted(cache.items())]})

    for seed in settings.seeds:
        rec = val(best_lr, best_ratio) if seed == sel_seed else train_one(best_lr, best_ratio, seed)
        if rec is None:
            continue
        key = run_key(task, method, best_lr, best_ratio, seed)
        if store.finished("evals", key):
            continue
        try:
            model = spec.reload(new_model(), out / rec["adapter_dir"]).to(settings.device)
            ev = _evaluate(model, data, tokenizer, settings, pad, f"eval {task}/{method} s{seed}")
            ev.update(task=task, method=method, lr=best_lr, theta_lr_ratio=best_ratio, seed=seed)
            del model
            done += 1
            log(f"{task}/{method} seed={seed}: test NLL (mean over inputs) {ev['metrics']['nll']:.4f}, "
                f"BLEU {ev['metrics']['bleu']:.2f}, ROUGE-L {ev['metrics']['rougeL']:.2f}")
        except Exception as e:
            ev = {"task": task, "method": method, "seed": seed, "status": "error",
                  "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
            failed += 1
            log(f"qaa compare: evaluation {task}/{method} seed={seed} failed: {ev['error']}")
        store.update("evals", key, ev)
    return done, failed
