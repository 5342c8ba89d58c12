"""``qaa finetune``: QAA on one GEM task, scored against the untuned base model."""
from __future__ import annotations

import dataclasses
import json
import os
import time

import torch

from ..tuners.qaa import QAAConfig, attach, save_adapter
from ..tuners.qaa.model import check_targets
from ..tuners.save_load import atomic_write_text
from ..tuners.utils import get_nb_trainable_parameters, print_trainable_parameters
from .base_model import load_base_model
from .pipeline import generate_and_score, prepare_task, set_threads, write_losses
from .train import TrainConfig, train


def score(model, tokenizer, task, test_ex, args, bertscore: bool, desc: str):
    """Generate for every held-out input and score against all its references: ``(hypotheses, metrics)``."""
    return generate_and_score(model, tokenizer, task, test_ex, args.max_new_tokens, bertscore,
                              progress=not args.no_progress, desc=desc)


def check_output_folder(out: str) -> None:
    """Make sure ``qaa finetune`` can write its results into ``out`` before any work: create the folder and
    write then remove a probe file in it and in ``out/adapter``.

    Raises:
        ValueError: ``out`` or ``out/adapter`` exists and is not a folder, or a folder cannot be created or
            written (the message names it and the reason).
    """
    import tempfile

    adapter = os.path.join(out, "adapter")
    for folder in (out, adapter):
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise ValueError(f"--out: {folder} exists and is not a folder")
    for folder in (out, adapter):
        try:
            os.makedirs(folder, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".qaa-write-check-"):
                pass
        except OSError as e:
            raise ValueError(f"--out: cannot write into {folder} ({e.strerror or e})") from e


def run_finetune(args) -> dict:
    """Run ``qaa finetune`` with the parsed options ``args`` (checked by
    :func:`qaa.experiments.settings.check_finetune_args`); returns the summary written to ``results.json``.

    Raises ValueError (before the model is loaded) for an ``--out`` that cannot be written, and (before the base
    model is evaluated) for ``--target-modules`` that match no linear layer of the model."""
    check_output_folder(args.out)
    config = QAAConfig(target_modules=args.target_modules.split(","), n_layers=args.n_layers,
                       ansatz=args.ansatz, readout=args.readout, scaling=args.scaling,
                       rescale_by_norm=args.rescale_by_norm, seed=args.seed)
    set_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    model, tokenizer = load_base_model(args.model)
    print(f"loaded {args.model} in {time.perf_counter() - t0:.1f} s")
    check_targets(model, config)
    train_ex, test_ex, encoded = prepare_task(args.task, tokenizer, args.test_fraction, args.split_seed,
                                              args.eval_size, args.max_length)
    print(f"task {args.task}: {len(train_ex)} training inputs ({len(encoded)} pairs), "
          f"{len(test_ex)} held-out inputs")
    base_hyps, base_metrics = score(model, tokenizer, args.task, test_ex, args, args.bertscore, "eval base")

    attach(model, config)
    print_trainable_parameters(model)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
                      max_length=args.max_length, seed=args.seed)
    result = train(model, tokenizer, encoded, cfg, progress=not args.no_progress, desc="train qaa")
    adapter_dir = os.path.join(args.out, "adapter")
    save_adapter(model, adapter_dir)
    write_losses(os.path.join(args.out, "losses.csv"), result.losses, result.step_times)
    tuned_hyps, tuned_metrics = score(model, tokenizer, args.task, test_ex, args, args.bertscore, "eval qaa")

    k = max(1, min(10, len(result.losses) // 5))
    first, last = sum(result.losses[:k]) / k, sum(result.losses[-k:]) / k
    trainable, total = get_nb_trainable_parameters(model)
    summary = {
        "model": args.model, "task": args.task, "config": config.to_dict(), "split_seed": args.split_seed,
        "training_seed": args.seed, "train_inputs": len(train_ex), "test_inputs": len(test_ex),
        "train": dataclasses.asdict(cfg), "trainable_params": trainable, "all_params": total,
        "trainable_pct": 100 * trainable / total, "loss_first": first, "loss_last": last,
        "mean_step_seconds": sum(result.step_times) / len(result.step_times),
        "peak_rss_delta_mb": result.peak_rss_delta_mb, "activation_mb": result.activation_mb,
        "base": base_metrics, "tuned": tuned_metrics,
        "generations": [{"input": e.input, "references": list(e.references), "base": b, "qaa": t}
                        for e, b, t in zip(test_ex, base_hyps, tuned_hyps)],
    }
    atomic_write_text(os.path.join(args.out, "results.json"), json.dumps(summary, indent=2))
    print(f"\nloss: first {k} steps {first:.3f} -> last {k} steps {last:.3f}")
    print(f"{'metric':<12}{'base':>10}{'qaa':>10}")
    for key in base_metrics:
        if isinstance(base_metrics[key], (int, float)):
            print(f"{key:<12}{base_metrics[key]:>10.2f}{tuned_metrics[key]:>10.2f}")
    print("\nsample generations:")
    for s in summary["generations"][:3]:
        print(f"  input: {s['input']}\n  base : {s['base']}\n  qaa  : {s['qaa']}\n  ref  : {s['references'][0]}\n")
    print(f"adapter saved to {adapter_dir}; results in {os.path.join(args.out, 'results.json')}")
    return summary
