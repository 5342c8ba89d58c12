"""Steps both commands share: threads, task preparation (load and split through the task registry, fit lengths to
the training split, encode) and scoring of greedy generations against every reference of an input."""
from __future__ import annotations

import csv
import dataclasses
import statistics
import time
from typing import List, Optional, Sequence, Tuple

import torch

from .. import engine
from . import tasks
from .data import seen_inputs, training_pairs
from .metrics import evaluate_generations, per_input_scores
from .tasks import TaskSplits, format_prompt
from .train import encode_pairs, generate, pair_nll

__all__ = ["set_threads", "TaskData", "load_splits", "prepare_task", "generate_and_score", "evaluate_test",
           "write_losses"]


def set_threads(n: int) -> None:
    """Use ``n`` threads in torch and the engine (0 keeps the defaults)."""
    if n > 0:
        torch.set_num_threads(n)
        engine.set_num_threads(n)


@dataclasses.dataclass
class TaskData:
    """One task prepared for training and scoring (everything a run needs, computed once).

    Attributes:
        task: the task name. train_ex / val_ex / test_ex: the splits' examples (test in the seeded order).
        encoded_train: encoded (input_ids, labels) of every training (input, reference) pair.
        val_pairs / test_pairs: encoded pairs of every validation / test (input, reference).
        test_owner: index of the test input each test pair belongs to.
        max_length / max_new_tokens: the training sequence length and the generation length (fitted to the
            training split unless given). info: sizes, lengths and provenance, stored in results.json.
    """

    task: str
    train_ex: list
    val_ex: list
    test_ex: list
    encoded_train: list
    val_pairs: list
    test_pairs: list
    test_owner: List[int]
    max_length: int
    max_new_tokens: int
    info: dict
    curve_pairs: list = dataclasses.field(default_factory=list)  # validation pairs of the convergence curves


def load_splits(task: str, split_seed: int, val_fraction: float, test_fraction: float, data_dir=None,
                eval_size: Optional[int] = None, val_size: Optional[int] = None, eval_size_given: bool = True,
                train_size: Optional[int] = None) -> TaskSplits:
    """The task's splits (:func:`qaa.experiments.tasks.load_splits`) with the caps applied: at most ``eval_size``
    test inputs (a prefix of the seeded order, every reference kept), ``val_size`` validation inputs and
    ``train_size`` training inputs (the first of the training split's seeded order).

    Raises:
        ValueError: whatever :func:`~qaa.experiments.tasks.load_splits` raises; an ``eval_size`` beyond the test
            split when ``eval_size_given`` (the message names ``--eval-size``); a preset's cap larger than the
            split keeps the whole split.
    """
    splits = tasks.load_splits(task, split_seed, val_fraction, test_fraction, data_dir)
    if eval_size is not None and eval_size_given and eval_size > len(splits.test) and not splits.test_groups:
        raise ValueError(f"--eval-size {eval_size} exceeds the {len(splits.test)} test inputs of {task}; lower it "
                         "or omit it")
    capped = splits.capped(eval_size, val_size, train_size)
    capped.info.update(eval_size=eval_size, val_size=val_size)
    if train_size is not None:
        capped.info.update(train_size=train_size)
    return capped


def _token_lengths(tokenizer, task: str, pairs) -> Tuple[List[int], List[int]]:
    """(prompt + target + eos, target + eos) token counts of ``pairs``."""
    totals, targets = [], []
    for inp, ref in pairs:
        p = len(tokenizer(format_prompt(task, inp), add_special_tokens=False)["input_ids"])
        t = len(tokenizer(" " + ref.strip(), add_special_tokens=False)["input_ids"]) + 1
        totals.append(p + t)
        targets.append(t)
    return totals, targets


def prepare_task(task: str, tokenizer, splits: TaskSplits, max_length: Optional[int] = None,
                 max_new_tokens: Optional[int] = None) -> TaskData:
    """Fit the lengths to the training split, encode every split, and describe it.

    ``max_length`` (``None``: the longest training pair, so no pair is cut or dropped; else a cap, and the cut
    and dropped pairs are counted in ``info``) and ``max_new_tokens`` (``None``: the longest training target)
    are fitted to the training split only. Validation and test pairs are encoded at the longest length any of
    them needs, so their NLL is never truncated. For tasks with triple inputs, ``info["test_seen"]`` marks the
    test inputs whose triple set is a subset of a training input's (or, where the task defines groups, the
    test inputs from categories seen in training; ``info["test_seen_rule"]`` says which).
    """
    train_ex, val_ex, test_ex = splits.train, splits.val, splits.test
    train_pairs = training_pairs(train_ex)
    totals, targets = _token_lengths(tokenizer, task, train_pairs)
    max_length = max(totals) if max_length is None else int(max_length)
    max_new = max(targets) if max_new_tokens is None else int(max_new_tokens)
    prompts_only = [tot - tgt for tot, tgt in zip(totals, targets)]
    dropped = sum(1 for p in prompts_only if p >= max_length)
    cut = sum(1 for tot, p in zip(totals, prompts_only) if tot > max_length > p)

    def encode(pairs, length):
        return encode_pairs(tokenizer, [format_prompt(task, a) for a, _ in pairs], [b for _, b in pairs], length)

    encoded_train = encode(train_pairs, max_length)
    long_len = max(max_length, max(_token_lengths(tokenizer, task, training_pairs(val_ex + test_ex))[0]))
    val_pairs = encode(training_pairs(val_ex), long_len)
    test_pairs, owner = [], []
    for i, ex in enumerate(test_ex):
        for ref in ex.references:
            test_pairs.extend(encode([(ex.input, ref)], long_len))
            owner.append(i)
    info = dict(splits.info)
    info.update({"train_inputs": len(train_ex), "val_inputs": len(val_ex), "test_inputs": len(test_ex),
                 "train_pairs": len(train_pairs), "val_pairs": len(val_pairs), "test_references": len(test_pairs),
                 "max_length": max_length, "max_new_tokens": max_new,
                 "train_pairs_cut": cut, "train_pairs_dropped": dropped,
                 "train_tokens_max": max(totals), "train_tokens_median": statistics.median(totals),
                 "target_tokens_max": max(targets), "target_tokens_median": statistics.median(targets),
                 "test_input_texts": [e.input for e in test_ex]})
    if "unseen" in splits.test_groups:
        info["test_seen"] = [not u for u in splits.test_groups["unseen"]]
        info["test_seen_rule"] = "category"
    elif tasks.get(task).semantic == "entities":
        info["test_seen"] = seen_inputs(test_ex, train_ex)
        info["test_seen_rule"] = "triples"
    return TaskData(task, train_ex, val_ex, test_ex, encoded_train, val_pairs, test_pairs, owner, max_length,
                    max_new, info)


def generate_and_score(model, tokenizer, task: str, examples: Sequence, max_new_tokens: int, bertscore: bool,
                       device: str = "cpu", progress: bool = True, desc: str = "eval") -> Tuple[List[str], dict]:
    """Greedy generations for ``examples`` (their prompts), scored against all references of each input.

    Returns ``(hypotheses, metrics)``; see :func:`qaa.experiments.metrics.evaluate_generations`.
    """
    prompts = [format_prompt(task, e.input) for e in examples]
    hyps = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, progress=progress, desc=desc)
    metrics = evaluate_generations(hyps, [list(e.references) for e in examples], bertscore=bertscore,
                                   device=device, inputs=[e.input for e in examples],
                                   semantic=tasks.get(task).semantic)
    return hyps, metrics


def evaluate_test(model, data: TaskData, tokenizer, pad: int, progress: bool = False, device: str = "cpu",
                  bertscore: bool = True, desc: str = "eval") -> dict:
    """Score ``model`` on ``data``'s test inputs as the comparison does.

    Returns ``{"status": "ok", "hypotheses": [str], "nll": [float], "scores": {metric: [float]}, "metrics":
    {...}, "eval_seconds", "eval_cpu_seconds"}``: per test input, the teacher-forced NLL (nats per target token,
    over all of the input's references together) and the greedy generation with its per-input scores; corpus
    metrics (:func:`~qaa.experiments.metrics.evaluate_generations`) with ``metrics["nll"]`` the mean of the
    per-input NLLs (what the paired bootstrap resamples) and ``metrics["nll_token_weighted"]`` the NLL over all
    target tokens.
    """
    t0, cpu0 = time.perf_counter(), time.process_time()
    per_pair = pair_nll(model, data.test_pairs, pad)
    sums = [0.0] * len(data.test_ex)
    counts = [0] * len(data.test_ex)
    for (s, n), owner in zip(per_pair, data.test_owner):
        sums[owner] += s
        counts[owner] += n
    nll = [s / max(n, 1) for s, n in zip(sums, counts)]
    prompts = [format_prompt(data.task, e.input) for e in data.test_ex]
    hyps = generate(model, tokenizer, prompts, max_new_tokens=data.max_new_tokens, progress=progress, desc=desc)
    refs = [list(e.references) for e in data.test_ex]
    inputs, semantic = [e.input for e in data.test_ex], tasks.get(data.task).semantic
    scores = per_input_scores(hyps, refs, bertscore=bertscore, device=device, inputs=inputs, semantic=semantic)
    metrics = evaluate_generations(hyps, refs, bertscore=bertscore, device=device, inputs=inputs,
                                   semantic=semantic)
    metrics["nll"] = statistics.fmean(nll)
    metrics["nll_token_weighted"] = sum(sums) / max(sum(counts), 1)
    return {"status": "ok", "hypotheses": hyps, "nll": nll, "scores": scores, "metrics": metrics,
            "eval_seconds": time.perf_counter() - t0, "eval_cpu_seconds": time.process_time() - cpu0}


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
