"""Supervised fine-tuning of a causal LM on (prompt, target) pairs, and greedy generation for evaluation.

The same loop trains every method the project compares (QAA, LoRA, prefix tuning, SoRA, full fine-tuning):
only the trainable parameters differ. Loss is the mean token cross-entropy on target tokens (prompt tokens are
masked with -100, as in standard instruction tuning).
"""
from __future__ import annotations

import dataclasses
import math
import random
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..tuners.optim import param_groups
from .memory import MemoryMonitor, activation_bytes


@dataclasses.dataclass
class TrainConfig:
    """Training settings.

    Attributes:
        steps: optimizer steps. batch_size: sequences per step. lr: AdamW peak learning rate.
        warmup_steps: linear warm-up, then linear decay to 10% of ``lr`` (a common PEFT schedule).
        max_length: truncate prompt+target to this many tokens. grad_clip: max gradient norm (0: off).
        weight_decay: AdamW weight decay. seed: shuffling and dropout seed. log_every: progress-bar update.
        gradient_checkpointing: recompute activations in the backward pass (HF's implementation).
        theta_lr_ratio: the learning rate of QAA circuit angles as a multiple of ``lr`` (angles live on the
            scale of radians; at adapter-scale rates Adam moves them by a few hundredths of a radian in a short
            run). 1.0 trains everything at ``lr``.
    """

    steps: int = 150
    batch_size: int = 8
    lr: float = 2e-3
    warmup_steps: int = 10
    max_length: int = 128
    grad_clip: float = 1.0
    weight_decay: float = 0.0
    seed: int = 0
    log_every: int = 10
    gradient_checkpointing: bool = False
    theta_lr_ratio: float = 1.0

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.max_length < 8:
            raise ValueError("steps and batch_size must be >= 1 and max_length >= 8")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive finite number, got {self.lr}")
        if not (self.theta_lr_ratio > 0 and math.isfinite(self.theta_lr_ratio)):
            raise ValueError(f"theta_lr_ratio must be a positive finite number, got {self.theta_lr_ratio}")


@dataclasses.dataclass
class TrainResult:
    losses: List[float]
    step_times: List[float]
    peak_rss_delta_mb: float
    activation_mb: float
    train_seconds: float


def encode_pairs(tokenizer, prompts: Sequence[str], targets: Sequence[str], max_length: int
                 ) -> List[Tuple[List[int], List[int]]]:
    """Tokenise ``prompt + target + eos``; labels are -100 on prompt tokens. Returns (input_ids, labels)."""
    out = []
    eos = tokenizer.eos_token_id
    for p, t in zip(prompts, targets):
        p_ids = tokenizer(p, add_special_tokens=False)["input_ids"]
        t_ids = tokenizer(" " + t.strip(), add_special_tokens=False)["input_ids"] + ([eos] if eos is not None else [])
        ids = (p_ids + t_ids)[:max_length]
        labels = ([-100] * len(p_ids) + t_ids)[:max_length]
        if all(l == -100 for l in labels):
            continue  # prompt alone fills max_length: nothing to learn from this pair
        out.append((ids, labels))
    if not out:
        raise ValueError("no training example fits max_length; raise max_length")
    return out


def collate(batch: Sequence[Tuple[List[int], List[int]]], pad_id: int) -> Dict[str, torch.Tensor]:
    """Right-pad a batch: input_ids, attention_mask, labels (-100 on padding)."""
    n = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), n), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    for i, (a, b) in enumerate(batch):
        ids[i, : len(a)] = torch.tensor(a)
        labels[i, : len(b)] = torch.tensor(b)
        mask[i, : len(a)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


#: The schedule decays linearly to this share of the peak rate at the last step.
FINAL_LR_SHARE = 0.1


def _lr_factor(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    return 1.0 - (1.0 - FINAL_LR_SHARE) * (step - cfg.warmup_steps) / span


def describe_optimizer(warmup_share: float, grad_clip: float = TrainConfig.grad_clip) -> str:
    """The optimizer and schedule in words, as reports state them (``warmup_share``: warm-up steps as a share of
    the steps, the rule the settings apply)."""
    clip = f"clipping {grad_clip:.1f}" if grad_clip > 0 else "no clipping"
    return f"AdamW, {warmup_share:.0%} warm-up, linear decay to {FINAL_LR_SHARE:.0%}, {clip}"


def _shard_step(model, full: Dict[str, torch.Tensor], device, grad_accum: int, rank: int, world: int,
                extra_loss: Optional[Callable[[], torch.Tensor]]) -> torch.Tensor:
    """Forward and backward of one optimizer step's batch ``full`` (collated, padded once for the whole batch),
    of which this rank takes the rows ``rank * B/world ...`` in ``grad_accum`` micro-batches. Each micro-batch's
    loss is its summed target-token cross-entropy divided by the target tokens of the whole batch (times
    ``world``: DDP and FSDP average gradients over ranks), so the accumulated gradient is the gradient of the
    whole batch's mean token loss, as one process computes it. Returns the whole batch's mean loss (all-reduced
    over ranks), detached."""
    import contextlib

    import torch.nn.functional as F

    labels = full["labels"]
    n_tokens = int((labels[:, 1:] != -100).sum())
    per_rank = labels.shape[0] // world
    rows = torch.arange(rank * per_rank, (rank + 1) * per_rank)
    total = torch.zeros((), dtype=torch.float64, device=device)
    for i, micro in enumerate(rows.chunk(grad_accum)):
        inputs = {k: v[micro].to(device) for k, v in full.items()}
        target = inputs.pop("labels")
        last = i == grad_accum - 1
        sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            logits = model(**inputs).logits.float()
            summed = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), target[:, 1:].reshape(-1),
                                     ignore_index=-100, reduction="sum")
            loss = summed * (world / max(n_tokens, 1))
            if extra_loss is not None:
                loss = loss + extra_loss() / grad_accum
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss.item()}")
            loss.backward()
        total += summed.detach().to(torch.float64)
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(total)
    return (total / max(n_tokens, 1)).to(torch.float32)


def train(model, tokenizer, encoded: Sequence[Tuple[List[int], List[int]]], cfg: TrainConfig,
          after_step: Optional[Callable[[int], None]] = None,
          extra_loss: Optional[Callable[[], torch.Tensor]] = None,
          progress: bool = True, desc: str = "train", grad_accum: int = 1) -> TrainResult:
    """Train the model's trainable parameters with AdamW for ``cfg.steps`` steps.

    ``after_step(step)`` runs after each optimizer step (SoRA's proximal update); ``extra_loss()`` is added
    to the loss (e.g. an L1 term). Records loss and wall time per step, the peak RSS increase during training
    and the bytes autograd saved for backward in one step. Raises FloatingPointError on a non-finite loss.

    Data parallelism: when torch.distributed is initialised with more than one rank, ``model`` is a DDP (or
    FSDP) model and every rank draws the same batch of ``cfg.batch_size`` sequences and computes its own
    ``batch_size / world`` of them; ``grad_accum`` splits each rank's share into that many micro-batches
    (backward after each, gradients synchronised after the last). Both keep the batch's numerics: the gradient
    is that of the whole batch's mean target-token loss (equal to one process on the whole batch up to float
    rounding). With one process and ``grad_accum=1`` (the default) the step is exactly the single-batch one.

    Raises:
        ValueError: ``grad_accum < 1``, or ``cfg.batch_size`` not a multiple of ``world * grad_accum``.
    """
    from tqdm.auto import tqdm

    from ..tuners.qaa.distributed import rank_and_world

    rank, world = rank_and_world()
    if isinstance(grad_accum, bool) or not isinstance(grad_accum, int) or grad_accum < 1:
        raise ValueError(f"grad_accum must be an int >= 1, got {grad_accum!r}")
    if cfg.batch_size % (world * grad_accum):
        raise ValueError(f"batch size {cfg.batch_size} must be a multiple of processes x gradient accumulation "
                         f"({world} x {grad_accum})")
    sharded = world > 1 or grad_accum > 1
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    device = params[0].device
    opt = torch.optim.AdamW(param_groups(model, cfg.lr, cfg.theta_lr_ratio, cfg.weight_decay))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rng = random.Random(cfg.seed)
    order: List[int] = []
    if cfg.gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    torch.manual_seed(cfg.seed)
    losses, times = [], []
    act_mb = 0.0
    def optimizer_step(step: int) -> None:
        """Clip, step the optimizer and the schedule, clear the gradients, run ``after_step``."""
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if after_step is not None:
            after_step(step)

    monitor = MemoryMonitor()
    t_start = time.perf_counter()
    with monitor:
        bar = tqdm(range(cfg.steps), desc=desc, disable=not progress, dynamic_ncols=True)
        for step in bar:
            batch = []
            for _ in range(cfg.batch_size):
                if not order:
                    order = list(range(len(encoded)))
                    rng.shuffle(order)
                batch.append(encoded[order.pop()])
            t0 = time.perf_counter()
            if sharded:
                loss = _shard_step(model, collate(batch, pad), device, grad_accum, rank, world, extra_loss)
                optimizer_step(step)
                times.append(time.perf_counter() - t0)
                losses.append(float(loss))
                continue
            inputs = {k: v.to(device) for k, v in collate(batch, pad).items()}
            t0 = time.perf_counter()
            if step == 0:
                with activation_bytes(exclude=list(model.parameters())) as saved:
                    loss = model(**inputs).loss
                act_mb = saved.bytes / 2**20
            else:
                loss = model(**inputs).loss
            total = loss + extra_loss() if extra_loss is not None else loss
            if not torch.isfinite(total):
                raise FloatingPointError(f"non-finite loss {total.item()} at step {step}")
            total.backward()
            optimizer_step(step)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
            losses.append(float(loss.detach()))
            if step % cfg.log_every == 0 or step == cfg.steps - 1:
                recent = losses[-cfg.log_every:]
                bar.set_postfix(loss=f"{sum(recent) / len(recent):.3f}")
    model.eval()
    if cfg.gradient_checkpointing and hasattr(model, "gradient_checkpointing_disable"):
        model.gradient_checkpointing_disable()
    return TrainResult(losses, times, monitor.peak_delta_mb, act_mb, time.perf_counter() - t_start)


@torch.no_grad()
def pair_nll(model, encoded: Sequence[Tuple[List[int], List[int]]], pad_id: int, batch_size: int = 8
             ) -> List[Tuple[float, int]]:
    """Teacher-forced negative log-likelihood of each pair's target tokens (labels != -100), in nats:
    ``[(summed NLL, target tokens)]``, one per pair, in order. The model's dropout is off (eval mode)."""
    import torch.nn.functional as F

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model.eval()
    device = next(model.parameters()).device
    out: List[Tuple[float, int]] = []
    for i in range(0, len(encoded), batch_size):
        inputs = {k: v.to(device) for k, v in collate(encoded[i: i + batch_size], pad_id).items()}
        labels = inputs.pop("labels")
        logits = model(**inputs).logits.float()
        shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
        nll = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                              ignore_index=-100, reduction="none").view(shift_labels.shape)
        mask = shift_labels != -100
        for row, m in zip(nll, mask):
            out.append((float(row[m].sum()), int(m.sum())))
    return out


@torch.no_grad()
def generate(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 48, batch_size: int = 16,
             progress: bool = True, desc: str = "generate") -> List[str]:
    """Greedy generation for each prompt (left-padded batches, KV cache). Returns the text up to the first
    newline, stripped."""
    from tqdm.auto import tqdm

    model.eval()
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    outs: List[str] = []
    try:
        for i in tqdm(range(0, len(prompts), batch_size), desc=desc, disable=not progress, dynamic_ncols=True):
            chunk = list(prompts[i: i + batch_size])
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad,
                                 eos_token_id=tokenizer.eos_token_id)
            for row in gen[:, enc["input_ids"].shape[1]:]:
                text = tokenizer.decode(row, skip_special_tokens=True)
                outs.append(text.strip().split("\n")[0].strip())
    finally:
        tokenizer.padding_side = old_side
    return outs
