"""``qaa finetune``: QAA on one GEM task, scored against the untuned base model."""
from __future__ import annotations

import csv
import json
import os
import time

import torch


def set_threads(n: int) -> None:
    """Use ``n`` threads in torch and the engine (0 keeps the defaults)."""
    if n > 0:
        from . import engine

        torch.set_num_threads(n)
        engine.set_num_threads(n)


def prepare_task(task: str, tokenizer, test_fraction: float, seed: int, eval_size: int, max_length: int):
    """Load a task, split it by unique input, and encode the training pairs.

    Returns ``(train_examples, test_examples, encoded_pairs)``.
    """
    from .data import format_prompt, load_task, split_by_input, training_pairs
    from .train import encode_pairs

    examples = load_task(task)
    train_ex, test_ex = split_by_input(examples, test_fraction=test_fraction, seed=seed, max_test=eval_size)
    pairs = training_pairs(train_ex)
    encoded = encode_pairs(tokenizer, [format_prompt(task, a) for a, _ in pairs], [b for _, b in pairs], max_length)
    return train_ex, test_ex, encoded


def score(model, tokenizer, task, test_ex, args, bertscore: bool, desc: str):
    """Generate for every held-out input and score against all its references."""
    from .data import format_prompt
    from .metrics import evaluate_generations
    from .train import generate

    prompts = [format_prompt(task, e.input) for e in test_ex]
    hyps = generate(model, tokenizer, prompts, max_new_tokens=args.max_new_tokens,
                    progress=not args.no_progress, desc=desc)
    metrics = evaluate_generations(hyps, [list(e.references) for e in test_ex], bertscore=bertscore)
    return hyps, metrics


def write_losses(path: str, losses, times) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "loss", "step_seconds"])
        for i, (l, t) in enumerate(zip(losses, times)):
            w.writerow([i, f"{l:.6f}", f"{t:.4f}"])


def run_finetune(args) -> dict:
    import qaa
    from .models import load_base_model
    from .train import TrainConfig, train

    set_threads(args.threads)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    model, tokenizer = load_base_model(args.model)
    print(f"loaded {args.model} in {time.perf_counter() - t0:.1f} s")
    train_ex, test_ex, encoded = prepare_task(args.task, tokenizer, args.test_fraction, args.seed, args.eval_size,
                                              args.max_length)
    print(f"task {args.task}: {len(train_ex)} training inputs ({len(encoded)} pairs), "
          f"{len(test_ex)} held-out inputs")
    base_hyps, base_metrics = score(model, tokenizer, args.task, test_ex, args, args.bertscore, "eval base")

    config = qaa.QAAConfig(target_modules=args.target_modules.split(","), n_layers=args.n_layers,
                           ansatz=args.ansatz, readout=args.readout, scaling=args.scaling,
                           rescale_by_norm=args.rescale_by_norm, seed=args.seed)
    qaa.attach(model, config)
    model.print_trainable_parameters()
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
                      max_length=args.max_length, seed=args.seed)
    result = train(model, tokenizer, encoded, cfg, progress=not args.no_progress, desc="train qaa")
    adapter_dir = os.path.join(args.out, "adapter")
    qaa.save_adapter(model, adapter_dir)
    write_losses(os.path.join(args.out, "losses.csv"), result.losses, result.step_times)
    tuned_hyps, tuned_metrics = score(model, tokenizer, args.task, test_ex, args, args.bertscore, "eval qaa")

    k = max(1, min(10, len(result.losses) // 5))
    first, last = sum(result.losses[:k]) / k, sum(result.losses[-k:]) / k
    trainable, total = qaa.get_nb_trainable_parameters(model)
    summary = {
        "model": args.model, "task": args.task, "config": config.to_dict(),
        "train": dataclass_dict(cfg), "trainable_params": trainable, "all_params": total,
        "trainable_pct": 100 * trainable / total, "loss_first": first, "loss_last": last,
        "mean_step_seconds": sum(result.step_times) / len(result.step_times),
        "peak_rss_delta_mb": result.peak_rss_delta_mb, "activation_mb": result.activation_mb,
        "base": base_metrics, "tuned": tuned_metrics,
        "samples": [{"input": e.input, "references": list(e.references), "base": b, "qaa": t}
                    for e, b, t in list(zip(test_ex, base_hyps, tuned_hyps))[:5]],
    }
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"\nloss: first {k} steps {first:.3f} -> last {k} steps {last:.3f}")
    print(f"{'metric':<12}{'base':>10}{'qaa':>10}")
    for key in base_metrics:
        if isinstance(base_metrics[key], (int, float)):
            print(f"{key:<12}{base_metrics[key]:>10.2f}{tuned_metrics[key]:>10.2f}")
    print("\nsample generations:")
    for s in summary["samples"][:3]:
        print(f"  input: {s['input']}\n  base : {s['base']}\n  qaa  : {s['qaa']}\n  ref  : {s['references'][0]}\n")
    print(f"adapter saved to {adapter_dir}; results in {os.path.join(args.out, 'results.json')}")
    return summary


def dataclass_dict(obj) -> dict:
    import dataclasses

    return dataclasses.asdict(obj)
