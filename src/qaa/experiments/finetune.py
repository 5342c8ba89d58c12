"""``qaa finetune``: QAA on one task of the registry (:mod:`.tasks`), scored against the untuned base model."""
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
from .pipeline import generate_and_score, load_splits, prepare_task, set_threads, write_losses
from .train import TrainConfig, train


def score(model, tokenizer, task, test_ex, args, bertscore: bool, desc: str):
    """Generate for every held-out input and score against all its references: ``(hypotheses, metrics)``."""
    device = next(model.parameters()).device.type
    return generate_and_score(model, tokenizer, task, test_ex, args.max_new_tokens, bertscore, device=device,
                              progress=not args.no_progress, desc=desc)


def check_output_folder(out: str) -> None:
    """Make sure ``qaa finetune`` can write its results into ``out`` before any work, without writing anything:
    ``out`` (and ``out/adapter``) must be folders where they exist, and the nearest existing folder must be
    writable. Nothing is created here, so a run that fails before training leaves no empty folder behind.

    Raises:
        ValueError: ``out`` or ``out/adapter`` exists and is not a folder, or the nearest existing folder cannot
            be written (the message names it).
    """
    adapter = os.path.join(out, "adapter")
    for folder in (out, adapter):
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise ValueError(f"--out: {folder} exists and is not a folder")
    probe = os.path.abspath(adapter)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise ValueError(f"--out: {probe} exists and is not a folder, so {out} cannot be created")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"--out: cannot write into {probe} (permission denied)")


def check_parallel_args(args, world: int) -> None:
    """Check ``--grad-accum`` and ``--device`` for ``world`` processes. Raises ValueError naming the option."""
    grad_accum = getattr(args, "grad_accum", 1)
    if grad_accum < 1 or grad_accum > 10**5:
        raise ValueError(f"--grad-accum must be in [1, 100000], got {grad_accum}")
    if args.batch_size % (world * grad_accum):
        raise ValueError(f"--batch-size {args.batch_size} must be a multiple of processes x --grad-accum "
                         f"({world} x {grad_accum})")
    if getattr(args, "device", "cpu") == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")


def _start_distributed(device_opt: str):
    """``(device, rank, world)``; under torchrun (``WORLD_SIZE`` > 1) the process group is initialised (NCCL on
    CUDA, gloo on the CPU) with a timeout long enough for rank 0's evaluations."""
    import datetime

    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = device_opt == "cuda" or (device_opt == "auto" and torch.cuda.is_available())
    if world <= 1:
        return torch.device("cuda" if cuda else "cpu"), 0, 1
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(hours=6))
    return device, dist.get_rank(), dist.get_world_size()


def run_finetune(args) -> dict:
    """Run ``qaa finetune`` with the parsed options ``args`` (checked by
    :func:`qaa.experiments.settings.check_finetune_args`); returns the summary written to ``results.json``.

    Under ``torchrun`` (data parallelism, DDP) every rank trains on its share of every batch; rank 0 alone
    evaluates and writes the outputs (the other ranks wait for it and return an empty dict).

    Raises ValueError (before the model is loaded and before anything is written) for data that cannot be loaded
    (a missing, corrupted or malformed file, named), an ``--out`` that cannot be written or a ``--batch-size``
    that is not a multiple of processes x ``--grad-accum``, and (before the base model is evaluated) for
    ``--target-modules`` that match no linear layer of the model."""
    check_parallel_args(args, int(os.environ.get("WORLD_SIZE", "1")))
    device, rank, world = _start_distributed(getattr(args, "device", "cpu"))
    try:
        return _run(args, device, rank, world)
    finally:
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def _run(args, device, rank: int, world: int) -> dict:
    import torch.distributed as dist

    main = rank == 0
    progress = not args.no_progress and main
    # The data first (seconds; a missing or corrupted file fails here, before the minutes of model loading),
    # then the output folder (checked, nothing created), then the model.
    splits = load_splits(args.task, args.split_seed, args.val_fraction, args.test_fraction,
                         getattr(args, "data", None), args.eval_size)
    check_output_folder(args.out)
    config = QAAConfig(target_modules=args.target_modules.split(","), n_layers=args.n_layers,
                       ansatz=args.ansatz, readout=args.readout, scaling=args.scaling,
                       rescale_by_norm=args.rescale_by_norm, seed=args.seed)
    set_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    model, tokenizer = load_base_model(args.model, progress=progress)
    if device.type != "cpu":
        model.to(device)
    print(f"loaded {args.model} in {time.perf_counter() - t0:.1f} s")
    check_targets(model, config)
    data = prepare_task(args.task, tokenizer, splits, args.max_length, args.max_new_tokens)
    train_ex, test_ex, encoded = data.train_ex, data.test_ex, data.encoded_train
    args.max_length, args.max_new_tokens = data.max_length, data.max_new_tokens
    if main:
        print(f"task {args.task}: {len(train_ex)} training inputs ({len(encoded)} pairs), {len(data.val_ex)} "
              f"validation inputs (held out), {len(test_ex)} test inputs ({data.info['test_references']} "
              f"references); max_length {data.max_length}, max_new_tokens {data.max_new_tokens}"
              + (f"; {world} processes" if world > 1 else ""))
        base_hyps, base_metrics = score(model, tokenizer, args.task, test_ex, args, args.bertscore, "eval base")

    attach(model, config)
    if main:
        print_trainable_parameters(model)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
                      max_length=args.max_length, seed=args.seed)
    trained = model
    if world > 1:
        trained = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    result = train(trained, tokenizer, encoded, cfg, progress=progress, desc="train qaa",
                   grad_accum=getattr(args, "grad_accum", 1))
    adapter_dir = os.path.join(args.out, "adapter")
    save_adapter(trained, adapter_dir)  # collective under DDP: rank 0 writes
    if not main:
        dist.barrier()  # rank 0 evaluates and writes the results
        return {}
    write_losses(os.path.join(args.out, "losses.csv"), result.losses, result.step_times)
    tuned_hyps, tuned_metrics = score(model, tokenizer, args.task, test_ex, args, args.bertscore, "eval qaa")

    k = max(1, min(10, len(result.losses) // 5))
    first, last = sum(result.losses[:k]) / k, sum(result.losses[-k:]) / k
    trainable, total = get_nb_trainable_parameters(model)
    summary = {
        "model": args.model, "task": args.task, "config": config.to_dict(), "split_seed": args.split_seed,
        "training_seed": args.seed, "train_inputs": len(train_ex), "val_inputs": len(data.val_ex),
        "test_inputs": len(test_ex), "data": {k: v for k, v in data.info.items() if k != "test_input_texts"},
        "train": dataclasses.asdict(cfg), "trainable_params": trainable, "all_params": total,
        "trainable_pct": 100 * trainable / total, "loss_first": first, "loss_last": last,
        "mean_step_seconds": sum(result.step_times) / len(result.step_times),
        "peak_rss_delta_mb": result.peak_rss_delta_mb, "activation_mb": result.activation_mb,
        "base": base_metrics, "tuned": tuned_metrics,
        "generations": [{"input": e.input, "references": list(e.references), "base": b, "qaa": t}
                        for e, b, t in zip(test_ex, base_hyps, tuned_hyps)],
    }
    summary["processes"], summary["grad_accum"] = world, getattr(args, "grad_accum", 1)
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
    if world > 1:
        dist.barrier()
    return summary
