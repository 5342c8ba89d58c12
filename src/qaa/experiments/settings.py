"""Settings of the two commands: the comparison's presets and their resolution against the command line, and
the checks of ``qaa finetune``'s options. Every check runs before a model or data set is loaded."""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional, Tuple

import torch

from . import registry
from .base_model import DEFAULT_MODEL
from .data import TASKS

__all__ = ["PRESETS", "CompareSettings", "resolve_settings", "check_finetune_args", "split_list"]


#: Presets: what each runs. ``max_length`` is per task (tokens of prompt + target; XSum articles are long).
PRESETS: Dict[str, dict] = {
    # Seconds on any machine: a plumbing check, not a result.
    "smoke": {"tasks": ("e2e_nlg",), "full": False, "steps": 3, "batch_size": 2,
              "eval_size": 4, "max_new_tokens": 16, "threads": 1, "max_length": {"e2e_nlg": 96, "webnlg_en": 128, "xsum": 512,
                                                                   "common_gen": 64}},
    # 4 methods x 2 tasks on 2 CPU cores in under 45 minutes, model loads and evaluation included.
    # Sized from SmolLM2 on a shared 2-core machine (one torch thread): a step of 4 sequences takes about
    # 3-3.6 s on E2E and 4.7-6.7 s on WebNLG; greedy evaluation of 24 inputs 12-30 s; the whole preset ran in
    # 23 min. One thread: with the two cores shared with other processes, two torch threads made SmolLM2's
    # forward and backward 4-7 times slower (OpenMP threads spin waiting for each other).
    "cpu": {"tasks": ("e2e_nlg", "webnlg_en"), "full": False, "steps": 32,
            "batch_size": 4, "eval_size": 24, "max_new_tokens": 40, "threads": 1,
            "max_length": {"e2e_nlg": 96, "webnlg_en": 128, "xsum": 512, "common_gen": 64}},
    # One GPU: longer training, bigger evaluation, XSum added, full fine-tuning on.
    "gpu": {"tasks": ("e2e_nlg", "webnlg_en", "xsum"), "full": True, "steps": 400,
            "batch_size": 16, "eval_size": 200, "max_new_tokens": 64, "threads": 0,
            "max_length": {"e2e_nlg": 128, "webnlg_en": 192, "xsum": 1024, "common_gen": 96}},
}


@dataclasses.dataclass
class CompareSettings:
    """Everything that decides a comparison (stored in ``results.json`` under ``"settings"``).

    Attributes:
        preset: the preset the defaults came from.
        model: base model name or local folder (see :func:`qaa.experiments.base_model.load_base_model`).
        tasks: GEM task names. methods: method names, in registry order (:mod:`.registry`).
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


def split_list(value: Optional[str]) -> Optional[List[str]]:
    if value is None:
        return None
    items = [v.strip() for v in str(value).split(",") if v.strip()]
    if not items:
        raise ValueError(f"empty list {value!r}")
    return items


def _parse_lr(value: Optional[str]) -> Dict[str, float]:
    """``"qaa=3e-3,lora=1e-3"`` -> ``{"qaa": 0.003, "lora": 0.001}``."""
    out: Dict[str, float] = {}
    for item in split_list(value) or []:
        name, sep, number = item.partition("=")
        name = name.strip()
        if not sep or name not in registry.names():
            raise ValueError(f"--lr takes METHOD=LR pairs with METHOD in {', '.join(registry.names())}; got {item!r}")
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
    get = lambda name, default=None: getattr(args, name, default)  # noqa: E731
    preset_name = get("preset") or "cpu"
    if preset_name not in PRESETS:
        raise ValueError(f"unknown preset {preset_name!r}; choose one of {', '.join(PRESETS)}")
    preset = PRESETS[preset_name]

    tasks = split_list(get("tasks")) or list(preset["tasks"])
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {', '.join(unknown)}; known tasks: {', '.join(TASKS)}")
    tasks = list(dict.fromkeys(tasks))

    known = registry.names()
    methods = split_list(get("methods")) or list(preset.get("methods") or registry.default_names())
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; known methods: {', '.join(known)}")
    if get("full") or (get("methods") is None and preset["full"]):
        methods.append("full")
    methods = [m for m in known if m in methods]

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

    lr = {m: registry.get(m).lr for m in methods}
    lr.update({m: v for m, v in _parse_lr(get("lr")).items() if m in lr})
    xi = get("sora_xi")
    xi = registry.SORA_XI if xi is None else float(xi)
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

    return CompareSettings(
        preset=preset_name, model=str(get("model") or DEFAULT_MODEL), tasks=tuple(tasks), methods=tuple(methods),
        steps=steps, batch_size=batch_size, eval_size=eval_size, max_new_tokens=max_new, max_length=max_length,
        lr=lr, warmup_steps=max(1, round(0.1 * steps)), sora_xi=xi, seed=int(get("seed", 0)),
        test_fraction=test_fraction, bertscore=not get("no_bertscore", False), device=device,
        threads=threads, progress=not get("no_progress", False),
        out=str(get("out") or "runs/compare"))


def check_finetune_args(args) -> None:
    """Reject bad ``finetune`` option values before anything is loaded (a model load and a base-model evaluation
    take minutes; a bad value must not fail only after them). Raises ValueError naming the option.
    (``compare`` options are checked by :func:`resolve_settings`.)"""
    def at_least(name, lo):
        value = getattr(args, name)
        if value < lo:
            raise ValueError(f"--{name.replace('_', '-')} must be >= {lo}, got {value}")

    def finite(name, positive=False):
        value = getattr(args, name)
        if not math.isfinite(value) or (positive and value <= 0):
            raise ValueError(f"--{name.replace('_', '-')} must be a finite{' positive' if positive else ''} "
                             f"number, got {value}")

    for name, lo in (("steps", 1), ("batch_size", 1), ("max_length", 8), ("max_new_tokens", 1), ("eval_size", 1),
                     ("warmup_steps", 0), ("n_layers", 1), ("threads", 0)):
        at_least(name, lo)
    if args.threads > 1024:
        raise ValueError(f"--threads must be <= 1024, got {args.threads}")
    if not 0 < args.test_fraction < 1:
        raise ValueError(f"--test-fraction must be in (0, 1), got {args.test_fraction}")
    finite("lr", positive=True)
    finite("scaling")
    if not all(t.strip() for t in args.target_modules.split(",")):
        raise ValueError(f"--target-modules must be comma-separated module names, got {args.target_modules!r}")
