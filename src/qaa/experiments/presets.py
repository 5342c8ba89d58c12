"""The comparison's presets: which tasks and methods each runs, at what budget, with which seeds and sizes
(read by :func:`qaa.experiments.settings.resolve_settings`, which checks every value and applies the options
given on the command line over them)."""
from __future__ import annotations

from typing import Dict

__all__ = ["PRESETS", "E2E_METHODS", "CORE_METHODS", "LONG_BUDGET_METHODS", "EXCLUDED"]

#: The methods of the full comparison on E2E (every method and control; the eight core methods of the claims
#: first), and the core subset on the other tasks, in the order they run (a partial run answers the
#: main question first: QAA, LoRA, and the controls that test QAA's mechanism).
E2E_METHODS = ("qaa", "lora", "bias", "qaa_frozen_theta", "lora_r4", "qaa_std", "sora", "prefix",
               "qaa_std_frozen_theta", "qaa_no_entangler", "random_features", "full")
CORE_METHODS = ("qaa", "lora", "bias", "qaa_frozen_theta", "lora_r4")
#: The methods of the longer budget (the cpu_long preset): QAA, its controls and the baselines it is compared with.
LONG_BUDGET_METHODS = ("qaa", "lora_r4", "qaa_frozen_theta", "bias", "lora", "sora", "qaa_std")

#: Methods a preset leaves out on purpose, with the reason printed in its report (none at present: SoRA runs in
#: the cpu preset with its threshold swept on validation, :data:`qaa.experiments.registry.SORA_XI_FACTORS`).
EXCLUDED: Dict[str, Dict[str, str]] = {}

#: Presets: what each runs. The learning-rate sweeps train with ``selection_seed``, which the cpu and gpu presets
#: keep apart from the final ``seeds`` (so no final run is a sweep's winner, chosen for being lucky); their
#: ``split_seed`` (1) is one no earlier choice of the project was tuned on (QAA's defaults came from runs on
#: split seed 0 of other data). ``curve_points`` checkpoints per run record the teacher-forced NLL of the first
#: ``curve_pairs`` validation pairs (the convergence curves); the whole validation split stays the selection
#: criterion. Per-task values are dicts; ``None`` lengths are fitted to the training split
#: (the longest pair, so nothing is cut or dropped); ``None`` sizes use the whole split. Test inputs are a
#: prefix of each task's test split in its seeded order (:mod:`.tasks`), so a size is a recorded subset with
#: every reference of each input; for ``webnlg_unseen`` the size applies to the seen-category and the
#: held-out-category inputs each.
PRESETS: Dict[str, dict] = {
    # Seconds on any machine: a plumbing check, not a result (one seed, default rates, no sweep).
    "smoke": {"tasks": ("e2e",), "methods": {"*": ("qaa", "lora", "prefix", "sora")}, "full": False,
              "steps": 3, "batch_size": 2, "seeds": (0,), "selection_seed": 0, "split_seed": 0,
              "curve_points": 2, "curve_pairs": 4, "select_lr": False, "eval_size": {"*": 4},
              "val_size": {"*": 4}, "max_new_tokens": {"*": 16}, "max_length": {"*": 96}, "threads": 1},
    # The fair protocol on 2 CPU cores (one torch thread: with shared cores, two threads made SmolLM2's steps
    # 4-7 times slower). 32 steps x 4 sequences per run; 50 test inputs per task (E2E: every one of each
    # official test MR's ~7.3 distinct references), 40 validation inputs; resumable (run it in pieces, one task per
    # process).
    "cpu": {"tasks": ("e2e", "webnlg_unseen", "dart"),
            "methods": {"e2e": E2E_METHODS, "*": CORE_METHODS},
            "full": False, "steps": 32, "batch_size": 4, "seeds": (0, 1, 2), "selection_seed": 100,
            "split_seed": 1, "curve_points": 8, "curve_pairs": 48, "select_lr": True,
            "eval_size": {"*": 50}, "val_size": {"*": 40},
            "max_new_tokens": {"*": None}, "max_length": {"*": None}, "threads": 1},
    # The capacity issue's longer budget on E2E: 4x the cpu preset's sequences (128 steps x 4), the methods whose
    # gap to QAA it follows, rates re-selected at this budget (with `--lr-grid-from SHORT/results.json`: a grid
    # around each short-budget choice); compare it with a cpu run of the same split by
    # `python -m qaa.experiments.capacity SHORT LONG`.
    "cpu_long": {"tasks": ("e2e",), "methods": {"*": LONG_BUDGET_METHODS},
                 "full": False, "steps": 128, "batch_size": 4, "seeds": (0, 1, 2), "selection_seed": 100,
                 "split_seed": 1, "curve_points": 8, "curve_pairs": 48, "select_lr": True,
                 "eval_size": {"*": 50}, "val_size": {"*": 40},
                 "max_new_tokens": {"*": None}, "max_length": {"*": None}, "threads": 1},
    # Capacity on a small pool: the first 8 training inputs of E2E (about 66 (input, reference) pairs) for about
    # 8 epochs (132 steps x 4), so training NLL can floor and validation NLL turn up; rates from an earlier
    # comparison (`--lr-from`), 16 validation-curve checkpoints. `--train-size` and `--steps` change the pool
    # and the epochs (the gpu preset's scale: 64 inputs).
    "cpu_capacity": {"tasks": ("e2e",), "methods": {"*": ("qaa", "lora_r4", "qaa_frozen_theta", "bias")},
                     "full": False, "steps": 132, "batch_size": 4, "seeds": (0, 1, 2), "selection_seed": 100,
                     "split_seed": 1, "curve_points": 16, "curve_pairs": 48, "select_lr": False, "train_size": 8,
                     "eval_size": {"*": 50}, "val_size": {"*": 40},
                     "max_new_tokens": {"*": None}, "max_length": {"*": None}, "threads": 1},
    # One GPU: the same protocol at a larger budget, the whole test sets, every method (SoRA too).
    "gpu": {"tasks": ("e2e", "webnlg_unseen", "dart"), "methods": {"*": E2E_METHODS}, "full": False,
            "steps": 400, "batch_size": 16, "seeds": (0, 1, 2), "selection_seed": 100, "split_seed": 1,
            "curve_points": 16, "curve_pairs": 256, "select_lr": True, "eval_size": {"*": None},
            "val_size": {"*": None}, "max_new_tokens": {"*": None}, "max_length": {"*": None}, "threads": 0},
}
