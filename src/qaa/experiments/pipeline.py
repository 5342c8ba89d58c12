"""Steps both commands share: threads, task preparation (load, split by input, encode) and scoring of greedy
generations against every reference of an input."""
from __future__ import annotations

import csv
from typing import List, Sequence, Tuple

import torch

from .. import engine
from . import data
from .data import format_prompt, split_three, training_pairs
from .metrics import evaluate_generations
from .train import encode_pairs, generate

__all__ = ["set_threads", "prepare_task", "generate_and_score", "write_losses"]


def set_threads(n: int) -> None:
    """Use ``n`` threads in torch and the engine (0 keeps the defaults)."""
    if n > 0:
        torch.set_num_threads(n)
        engine.set_num_threads(n)


def prepare_task(task: str, tokenizer, test_fraction: float, split_seed: int, eval_size: int, max_length: int,
                 val_fraction: float = 0.1):
    """Load a task, split it three ways by unique input (:func:`qaa.experiments.data.split_three`, the
    comparison's rule: the validation inputs are held out of training too), keep the first ``eval_size`` test
    inputs, and encode the training pairs.

    Returns ``(train_examples, test_examples, encoded_pairs)``.

    Raises:
        ValueError: ``eval_size`` exceeds the test split (the message names ``--eval-size``).
    """
    examples = data.load_task(task)  # looked up at call time (tests substitute small data sets)
    train_ex, _, test_ex = split_three(examples, split_seed=split_seed, val_fraction=val_fraction,
                                       test_fraction=test_fraction)
    if eval_size > len(test_ex):
        raise ValueError(f"--eval-size {eval_size} exceeds the {len(test_ex)} test inputs of {task} (test fraction "
                         f"{test_fraction}); lower it")
    test_ex = test_ex[:eval_size]
    pairs = training_pairs(train_ex)
    encoded = encode_pairs(tokenizer, [format_prompt(task, a) for a, _ in pairs], [b for _, b in pairs], max_length)
    return train_ex, test_ex, encoded


def generate_and_score(model, tokenizer, task: str, examples: Sequence, max_new_tokens: int, bertscore: bool,
                       device: str = "cpu", progress: bool = True, desc: str = "eval") -> Tuple[List[str], dict]:
    """Greedy generations for ``examples`` (their prompts), scored against all references of each input.

    Returns ``(hypotheses, metrics)``; see :func:`qaa.experiments.metrics.evaluate_generations`.
    """
    prompts = [format_prompt(task, e.input) for e in examples]
    hyps = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, progress=progress, desc=desc)
    metrics = evaluate_generations(hyps, [list(e.references) for e in examples], bertscore=bertscore,
                                   device=device)
    return hyps, metrics


def write_losses(path: str, losses, times) -> None:
    """``step,loss,step_seconds`` per optimizer step, as CSV (written atomically)."""
    import io

    from ..tuners.save_load import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["step", "loss", "step_seconds"])
    for i, (loss, t) in enumerate(zip(losses, times)):
        w.writerow([i, f"{loss:.6f}", f"{t:.4f}"])
    atomic_write_text(path, buf.getvalue())
