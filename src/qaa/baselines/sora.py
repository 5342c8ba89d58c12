"""SoRA: sparse low-rank adaptation with a per-rank gate, pruned after training.

Reference: N. Ding, X. Lv, Q. Wang, Y. Chen, B. Zhou, Z. Liu, M. Sun, "Sparse Low-rank Adaptation of
Pre-trained Language Models", EMNLP 2023 (arXiv:2311.11696), and its public release
(github.com/TsinghuaC3I/SoRA, files ``src/lora.py``, ``src/sparse_optimizer.py``, ``src/trainer.py``).

A wrapped layer computes, for ``x`` of shape ``(..., d_in)``::

    y = W x + scaling * B (g * (A x)),      A: (r_max, d_in),  g: (r_max,),  B: (d_out, r_max)

``W`` (and its bias) stays frozen. After every optimizer step the gate takes a proximal (soft-threshold)
step ``g <- sign(g) * max(|g| - xi, 0)``, which drives unneeded ranks exactly to zero. After training,
:func:`prune_sora` drops the ranks whose gate is zero and folds ``g`` into ``B``, leaving a plain LoRA
layer (:class:`LowRankLinear`) of the surviving rank that computes the same function.

Typical loop::

    model = attach_sora(model, SoRAConfig())
    opt = torch.optim.AdamW(sora_param_groups(model, weight_decay=0.01), lr=2e-4)
    for batch in data:
        loss = model(**batch).loss
        if cfg.lambda_l1:
            loss = loss + cfg.lambda_l1 * l1_penalty(model)
        loss.backward(); opt.step(); opt.zero_grad()
        proximal_step(model, cfg.xi)
    prune_sora(model); print(sora_rank_summary(model))
    save_sora(model, "out/")
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ._targets import LINEAR_TYPES, find_targets, linear_dims, normalise_targets

__all__ = [
    "SoRAConfig",
    "SoRALinear",
    "LowRankLinear",
    "attach_sora",
    "sora_modules",
    "sora_gates",
    "sora_param_groups",
    "proximal_step",
    "l1_penalty",
    "prune_sora",
    "sora_rank_summary",
    "save_sora",
    "load_sora",
    "SORA_CONFIG_NAME",
    "SORA_WEIGHTS_NAME",
]

SORA_CONFIG_NAME = "adapter_config.json"
SORA_WEIGHTS_NAME = "adapter_model.safetensors"
_FORMAT_VERSION = 1
_GATE_INITS = ("ones", "randn")


def _adapter_dtype(weight: torch.Tensor) -> torch.dtype:
    """Adapter parameters are float32 when the frozen weight is half precision, else the weight's dtype
    (the rule of peft's ``autocast_adapter_dtype=True``): small adapters train poorly in fp16/bf16."""
    if weight.dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    if not weight.dtype.is_floating_point:
        return torch.float32
    return weight.dtype


@dataclass
class SoRAConfig:
    """Hyper-parameters of SoRA.

    Attributes:
        target_modules: layers to wrap, peft's rule: a sequence of names (a module matches when its
            qualified name equals an entry or ends with ``"." + entry``), or one regex string that must match
            the whole qualified name. Default ``("q_proj", "v_proj")`` (LoRA paper, Hu et al. 2021, sec. 7.1;
            the project's comparison adapts the same layers for every method).
        r_max: rank of the gated branch before pruning. Default 8 (SoRA paper / release, ``lora_r=8``).
        alpha: LoRA scale numerator; the branch is multiplied by ``alpha / r_max``. Default 16 (SoRA
            release, ``LowRankLinear(lora_alpha=16)``). ``scaling`` stays ``alpha / r_max`` after pruning, so
            the pruned layer computes the same function.
        xi: soft-threshold of the proximal gate step, applied after every optimizer step. Default
            ``3e-4`` (SoRA release scripts, ``sparse_lambda_2=3e-4``; DESIGN.md section 5).
        lambda_l1: optional weight of an L1 term ``lambda_l1 * mean|g|`` added to the loss (the release's
            ``sparse_lambda``, loss term in ``src/trainer.py``; its GLUE scripts use 10). ``None`` (default)
            trains with the proximal step alone, as DESIGN.md section 5 specifies.
        dropout: dropout probability on the branch input (LoRA convention). Default 0.0.
        gate_init: ``"ones"`` (default) or ``"randn"``. With ones and ``B = 0`` the branch starts as exactly
            LoRA with every rank equally open; the release initialises ``g ~ N(0, 1)`` (``src/lora.py``),
            which is offered as ``"randn"``.

    Raises:
        ValueError / TypeError (at construction): a value out of range or of the wrong type.
    """

    target_modules: str | Sequence[str] = ("q_proj", "v_proj")
    r_max: int = 8
    alpha: float = 16.0
    xi: float = 3e-4
    lambda_l1: float | None = None
    dropout: float = 0.0
    gate_init: str = "ones"

    def __post_init__(self) -> None:
        targets = normalise_targets(self.target_modules)
        self.target_modules = targets if isinstance(targets, str) else list(targets)
        if isinstance(self.r_max, bool) or not isinstance(self.r_max, int) or self.r_max < 1:
            raise ValueError(f"r_max must be a positive int, got {self.r_max!r}")
        for name in ("alpha", "xi", "dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if self.xi < 0:
            raise ValueError(f"xi must be >= 0, got {self.xi}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.lambda_l1 is not None:
            if isinstance(self.lambda_l1, bool) or not isinstance(self.lambda_l1, (int, float)):
                raise ValueError(f"lambda_l1 must be a number or None, got {self.lambda_l1!r}")
            if not math.isfinite(self.lambda_l1) or self.lambda_l1 < 0:
                raise ValueError(f"lambda_l1 must be finite and >= 0, got {self.lambda_l1}")
        if self.gate_init not in _GATE_INITS:
            raise ValueError(f"gate_init must be one of {_GATE_INITS}, got {self.gate_init!r}")

    @property
    def scaling(self) -> float:
        """``alpha / r_max`` (LoRA's scale rule, Hu et al. 2021, sec. 4.1)."""
        return self.alpha / self.r_max

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of the public fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SoRAConfig":
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: unknown keys, or values rejected by the constructor.
        """
        known = {"target_modules", "r_max", "alpha", "xi", "lambda_l1", "dropout", "gate_init"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown SoRA config keys: {sorted(unknown)}")
        return cls(**data)


class SoRALinear(nn.Module):
    """A frozen linear layer plus a gated low-rank branch (SoRA, Ding et al. 2023).

    ``forward(x) = base(x) + scaling * ((dropout(x) @ A.T) * g) @ B.T`` for ``x`` of shape ``(..., d_in)``,
    returning ``(..., d_out)`` in the dtype of ``base(x)``.

    Parameters (all trainable; float32 when the base weight is fp16/bf16, else the base weight's dtype):
        ``sora_A``: ``(r_max, d_in)``, Kaiming-uniform with ``a = sqrt(5)``, i.e. ``U(-1/sqrt(d_in),
        1/sqrt(d_in))``: the initialisation of LoRA's ``A`` in loralib, peft and the SoRA release.
        ``sora_B``: ``(d_out, r_max)``, zeros, so the wrapped layer equals the base layer at step 0.
        ``sora_gate``: ``(r_max,)``, ones by default (see :class:`SoRAConfig` ``gate_init``).

    Args:
        base: the ``nn.Linear`` (or GPT-2 ``Conv1D``) to wrap; its parameters are frozen here.
        r_max: rank of the branch (>= 1).
        alpha: scale numerator; ``scaling = alpha / r_max``.
        dropout: dropout probability on the branch input.
        gate_init: ``"ones"`` or ``"randn"``.

    Raises:
        TypeError: ``base`` is not a linear layer.
        ValueError: ``r_max < 1``, ``alpha <= 0``, dropout outside ``[0, 1)`` or unknown ``gate_init``.
    """

    def __init__(self, base: nn.Module, r_max: int, alpha: float, dropout: float = 0.0, gate_init: str = "ones"):
        super().__init__()
        d_in, d_out = linear_dims(base)
        if r_max < 1:
            raise ValueError(f"r_max must be >= 1, got {r_max}")
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if gate_init not in _GATE_INITS:
            raise ValueError(f"gate_init must be one of {_GATE_INITS}, got {gate_init!r}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.in_features, self.out_features = d_in, d_out
        self.r_max = int(r_max)
        self.alpha = float(alpha)
        self.scaling = self.alpha / self.r_max
        self.dropout_p = float(dropout)
        self.gate_init = gate_init
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        w = base.weight
        kw = {"device": w.device, "dtype": _adapter_dtype(w)}
        self.sora_A = nn.Parameter(torch.empty(self.r_max, d_in, **kw))
        self.sora_B = nn.Parameter(torch.zeros(d_out, self.r_max, **kw))
        self.sora_gate = nn.Parameter(torch.empty(self.r_max, **kw))
        nn.init.kaiming_uniform_(self.sora_A, a=math.sqrt(5))
        with torch.no_grad():
            if gate_init == "ones":
                self.sora_gate.fill_(1.0)
            else:
                self.sora_gate.normal_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        h = self.dropout(x).to(self.sora_A.dtype)
        z = F.linear(h, self.sora_A) * self.sora_gate
        delta = F.linear(z, self.sora_B) * self.scaling
        return out + delta.to(out.dtype)

    @torch.no_grad()
    def active_rank(self) -> int:
        """Number of ranks whose gate is non-zero."""
        return int(torch.count_nonzero(self.sora_gate).item())

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, r_max={self.r_max}, "
                f"scaling={self.scaling:g}, active_rank={self.active_rank()}")


class LowRankLinear(nn.Module):
    """A frozen linear layer plus a plain LoRA branch: the result of pruning a :class:`SoRALinear`.

    ``forward(x) = base(x) + scaling * (dropout(x) @ lora_A.T) @ lora_B.T``; ``x``: ``(..., d_in)``, output
    ``(..., d_out)`` in the dtype of ``base(x)``. With ``rank == 0`` the layer equals ``base``.

    Args:
        base: the frozen linear layer.
        lora_A: ``(rank, d_in)`` tensor (copied into a parameter).
        lora_B: ``(d_out, rank)`` tensor (copied into a parameter).
        scaling: constant branch scale (``alpha / r_max`` of the SoRA layer it came from).
        r_max: rank before pruning (kept for reporting).
        dropout: dropout probability on the branch input.
        requires_grad: whether ``lora_A`` / ``lora_B`` are trainable.

    Raises:
        TypeError: ``base`` is not a linear layer.
        ValueError: ``lora_A`` / ``lora_B`` shapes inconsistent with ``base`` or with each other.
    """

    def __init__(self, base: nn.Module, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float,
                 r_max: int, dropout: float = 0.0, requires_grad: bool = True):
        super().__init__()
        d_in, d_out = linear_dims(base)
        if lora_A.dim() != 2 or lora_B.dim() != 2:
            raise ValueError(f"lora_A and lora_B must be 2-D, got {tuple(lora_A.shape)} and {tuple(lora_B.shape)}")
        rank = lora_A.shape[0]
        if lora_A.shape[1] != d_in or lora_B.shape != (d_out, rank):
            raise ValueError(f"expected lora_A ({rank}, {d_in}) and lora_B ({d_out}, {rank}), "
                             f"got {tuple(lora_A.shape)} and {tuple(lora_B.shape)}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.in_features, self.out_features = d_in, d_out
        self.rank = int(rank)
        self.r_max = int(r_max)
        self.scaling = float(scaling)
        self.dropout_p = float(dropout)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.Parameter(lora_A.detach().clone(), requires_grad=requires_grad)
        self.lora_B = nn.Parameter(lora_B.detach().clone(), requires_grad=requires_grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.rank == 0:
            return out
        h = self.dropout(x).to(self.lora_A.dtype)
        delta = F.linear(F.linear(h, self.lora_A), self.lora_B) * self.scaling
        return out + delta.to(out.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
                f"r_max={self.r_max}, scaling={self.scaling:g}")


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def attach_sora(model: nn.Module, config: SoRAConfig | None = None) -> nn.Module:
    """Freeze ``model`` and wrap every target layer in a :class:`SoRALinear`, in place.

    Every parameter of ``model`` gets ``requires_grad=False``; only the new ``sora_A``, ``sora_B`` and
    ``sora_gate`` are trainable. The config is kept as ``model.sora_config``.

    Args:
        model: e.g. a transformers causal LM.
        config: :class:`SoRAConfig`; defaults to ``SoRAConfig()``.

    Returns:
        ``model`` itself (modified in place).

    Raises:
        TypeError: ``config`` is not a :class:`SoRAConfig`, or a matched module is not a linear layer.
        ValueError: ``target_modules`` matches nothing (the message lists the candidate linear layer names),
            or a matched layer is already adapted.
    """
    config = SoRAConfig() if config is None else config
    if not isinstance(config, SoRAConfig):
        raise TypeError(f"config must be a SoRAConfig, got {type(config).__name__}")
    targets = find_targets(model, config.target_modules)
    for name, mod in targets:
        if isinstance(mod, (SoRALinear, LowRankLinear)):
            raise ValueError(f"module {name!r} already carries a SoRA adapter")
        if not isinstance(mod, LINEAR_TYPES):
            raise TypeError(f"target module {name!r} is a {type(mod).__name__}; SoRA wraps nn.Linear / Conv1D only")
    for p in model.parameters():
        p.requires_grad_(False)
    for name, mod in targets:
        _set_submodule(model, name, SoRALinear(mod, config.r_max, config.alpha, config.dropout, config.gate_init))
    model.sora_config = config
    return model


def sora_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``[(qualified_name, module)]`` of the :class:`SoRALinear` and :class:`LowRankLinear` layers, in
    ``named_modules`` order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (SoRALinear, LowRankLinear))]


def _require_gated(model: nn.Module) -> list[SoRALinear]:
    mods = [m for _, m in model.named_modules() if isinstance(m, SoRALinear)]
    if not mods:
        raise ValueError("model has no SoRALinear layer (call attach_sora first; pruned layers have no gate)")
    return mods


def sora_gates(model: nn.Module) -> list[nn.Parameter]:
    """The gate parameters ``g`` (each of shape ``(r_max,)``) of every :class:`SoRALinear` in ``model``.

    Raises:
        ValueError: ``model`` has no SoRALinear layer.
    """
    return [m.sora_gate for m in _require_gated(model)]


def sora_param_groups(model: nn.Module, weight_decay: float = 0.0, gate_lr: float | None = None) -> list[dict]:
    """Optimizer parameter groups: trainable non-gate parameters with ``weight_decay``, gates without.

    Weight decay on ``g`` would add an L2 shrink on top of the proximal L1 step; the SoRA release keeps the
    gates in a separate optimizer without weight decay (``src/trainer.py``, ``create_optimizer``), optionally
    with their own learning rate (``sparse_lr``), which ``gate_lr`` reproduces.

    Returns:
        a list of ``{"params": [...], "weight_decay": float[, "lr": float]}`` dicts (empty groups omitted).

    Raises:
        ValueError: ``model`` has no SoRALinear layer, or ``weight_decay < 0`` / ``gate_lr <= 0``.
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    if gate_lr is not None and gate_lr <= 0:
        raise ValueError(f"gate_lr must be > 0, got {gate_lr}")
    gate_ids = {id(g) for g in sora_gates(model)}
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in gate_ids]
    gates = [p for p in model.parameters() if p.requires_grad and id(p) in gate_ids]
    groups: list[dict] = []
    if others:
        groups.append({"params": others, "weight_decay": float(weight_decay)})
    if gates:
        g: dict = {"params": gates, "weight_decay": 0.0}
        if gate_lr is not None:
            g["lr"] = float(gate_lr)
        groups.append(g)
    return groups


@torch.no_grad()
def proximal_step(model: nn.Module, xi: float, lr: float | None = None) -> int:
    """Soft-threshold every gate in place: ``g <- sign(g) * max(|g| - t, 0)``; call after ``optimizer.step()``.

    The threshold is ``t = xi`` (default), the absolute per-step threshold of DESIGN.md section 5 and of the
    optimizer the SoRA release trains with (``src/sparse_optimizer.py``: it subtracts ``sparse_lambda_2``
    itself, not scaled by the learning rate). The paper writes the proximal step as ``T_{eta_t * xi}``
    (threshold scaled by the step size; the release keeps that variant in
    ``src/sparse_optimizer_multiply_lr.py``); pass ``lr`` to use ``t = xi * lr``. The default keeps the
    sparsification speed independent of the learning-rate schedule, so it is the same for every run of the
    comparison.

    Entries with ``|g| <= t`` become exactly ``0``; the others move ``t`` towards zero. ``t`` is cast to the
    gate dtype before the comparison.

    Args:
        model: a model with :class:`SoRALinear` layers.
        xi: threshold (>= 0).
        lr: optional step size multiplying ``xi`` (> 0).

    Returns:
        the number of non-zero gate entries over the whole model after the step.

    Raises:
        ValueError: no SoRALinear layer, ``xi < 0``/non-finite, or ``lr <= 0``/non-finite.
    """
    if not math.isfinite(xi) or xi < 0:
        raise ValueError(f"xi must be finite and >= 0, got {xi}")
    if lr is not None and (not math.isfinite(lr) or lr <= 0):
        raise ValueError(f"lr must be finite and > 0, got {lr}")
    threshold = xi if lr is None else xi * lr
    active = 0
    for g in sora_gates(model):
        t = torch.tensor(threshold, dtype=g.dtype, device=g.device)
        shrunk = torch.clamp(g.abs() - t, min=0)
        g.copy_(torch.where(shrunk > 0, torch.sign(g) * shrunk, torch.zeros_like(g)))  # +0.0, never -0.0
        active += int(torch.count_nonzero(g).item())
    return active


def l1_penalty(model: nn.Module) -> torch.Tensor:
    """Mean absolute gate value ``sum_l sum_i |g_{l,i}| / (number of gate entries)``: a 0-dim tensor that
    carries gradient to the gates. Multiply by :attr:`SoRAConfig.lambda_l1` and add to the loss; the
    normalisation by the entry count is the SoRA release's (``src/trainer.py``, ``compute_loss``).

    Raises:
        ValueError: ``model`` has no SoRALinear layer.
    """
    gates = sora_gates(model)
    total = sum(g.abs().sum() for g in gates)
    count = sum(g.numel() for g in gates)
    return total / count


@torch.no_grad()
def prune_sora(model: nn.Module) -> nn.Module:
    """Replace every :class:`SoRALinear` by a :class:`LowRankLinear` that keeps only the ranks with a
    non-zero gate, with the gate folded into ``B``: ``lora_A = A[keep]``, ``lora_B = B[:, keep] * g[keep]``.

    Since ``B (g * (A x)) = (B diag(g)) (A x)`` and dropped ranks contribute ``0``, the pruned model computes
    the same outputs up to floating-point round-off of the reordered products. Trainability of the new
    factors follows the gate's ``requires_grad``. Already pruned layers are left as they are.

    Returns:
        ``model`` itself (modified in place).

    Raises:
        ValueError: ``model`` has no SoRALinear layer.
    """
    _require_gated(model)
    for name, mod in [(n, m) for n, m in model.named_modules() if isinstance(m, SoRALinear)]:
        keep = torch.nonzero(mod.sora_gate != 0, as_tuple=False).flatten()
        a = mod.sora_A.index_select(0, keep)
        b = mod.sora_B.index_select(1, keep) * mod.sora_gate.index_select(0, keep)
        new = LowRankLinear(mod.base, a, b, mod.scaling, mod.r_max, mod.dropout_p,
                            requires_grad=mod.sora_gate.requires_grad)
        new.train(mod.training)
        _set_submodule(model, name, new)
    return model


def sora_rank_summary(model: nn.Module) -> dict[str, dict[str, int]]:
    """Remaining ranks per adapted layer.

    Returns:
        ``{qualified_name: {"rank": r, "r_max": r_max}}`` where ``rank`` is the number of non-zero gates of
        a :class:`SoRALinear` or the rank of a pruned :class:`LowRankLinear`.

    Raises:
        ValueError: ``model`` has no SoRA layer.
    """
    mods = sora_modules(model)
    if not mods:
        raise ValueError("model has no SoRA layer (call attach_sora first)")
    out: dict[str, dict[str, int]] = {}
    for name, mod in mods:
        rank = mod.active_rank() if isinstance(mod, SoRALinear) else mod.rank
        out[name] = {"rank": rank, "r_max": mod.r_max}
    return out


def _atomic_write(path: Path, write) -> None:
    """Write through ``write(tmp_path)`` to a temporary file in the same folder, fsync, then rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_sora(model: nn.Module, out_dir: str | os.PathLike) -> Path:
    """Save the SoRA adapter (gated or pruned layers) of ``model`` to ``out_dir``.

    Writes ``adapter_model.safetensors`` (per layer ``<name>.sora_A/.sora_B/.sora_gate`` or, when pruned,
    ``<name>.lora_A/.lora_B``, in the parameters' dtype) and ``adapter_config.json`` (``adapter_type:
    "sora"``, the :class:`SoRAConfig`, and per layer kind, rank, r_max, scaling and shapes). Each file is
    written to a temporary name and renamed, so a crash never leaves a half-written file; the JSON is written
    last.

    Returns:
        the output folder as a ``Path`` (created if needed).

    Raises:
        ValueError: ``model`` has no SoRA layer.
    """
    mods = sora_modules(model)
    if not mods:
        raise ValueError("model has no SoRA layer to save (call attach_sora first)")
    config = getattr(model, "sora_config", None)
    if not isinstance(config, SoRAConfig):
        first = mods[0][1]
        config = SoRAConfig(target_modules=sorted({n.rsplit(".", 1)[-1] for n, _ in mods}), r_max=first.r_max,
                            alpha=first.scaling * first.r_max, dropout=first.dropout_p)
    tensors: dict[str, torch.Tensor] = {}
    layers: dict[str, dict[str, Any]] = {}
    for name, mod in mods:
        if isinstance(mod, SoRALinear):
            params = {"sora_A": mod.sora_A, "sora_B": mod.sora_B, "sora_gate": mod.sora_gate}
            kind, rank = "sora", mod.r_max
        else:
            params = {"lora_A": mod.lora_A, "lora_B": mod.lora_B}
            kind, rank = "pruned", mod.rank
        for key, p in params.items():
            tensors[f"{name}.{key}"] = p.detach().to("cpu").contiguous().clone()
        layers[name] = {"kind": kind, "rank": rank, "r_max": mod.r_max, "scaling": mod.scaling,
                        "in_features": mod.in_features, "out_features": mod.out_features,
                        "dtype": str(next(iter(params.values())).dtype).replace("torch.", "")}
    meta = {"adapter_type": "sora", "format_version": _FORMAT_VERSION, "config": config.to_dict(), "layers": layers}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write(out / SORA_WEIGHTS_NAME, lambda p: save_file(tensors, p, metadata={"format": "pt"}))

    def _write_json(p: str) -> None:
        with open(p, "w", encoding="utf-8") as fh:
            json.dump(meta, fh, indent=2, sort_keys=True)
            fh.write("\n")

    _atomic_write(out / SORA_CONFIG_NAME, _write_json)
    return out


def load_sora(base_model: nn.Module, adapter_dir: str | os.PathLike, is_trainable: bool = False) -> nn.Module:
    """Rebuild a saved SoRA adapter on ``base_model`` (in place) and load its weights.

    The layers named in ``adapter_config.json`` are wrapped (as :class:`SoRALinear` or, for pruned layers,
    :class:`LowRankLinear` of the saved rank); all base parameters are frozen. Tensors are cast to the
    adapter dtype of each layer.

    Args:
        base_model: the same architecture the adapter was trained on, without adapters.
        adapter_dir: folder written by :func:`save_sora`.
        is_trainable: make the adapter parameters trainable (default: frozen, for evaluation).

    Returns:
        ``base_model`` with the adapter (``model.sora_config`` set).

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: not a SoRA adapter, unsupported format version, a layer missing from ``base_model``,
            shape mismatch, or missing / unexpected tensors.
    """
    d = Path(adapter_dir)
    cfg_path, w_path = d / SORA_CONFIG_NAME, d / SORA_WEIGHTS_NAME
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise FileNotFoundError(f"SoRA adapter file not found: {p}")
    with open(cfg_path, encoding="utf-8") as fh:
        meta = json.load(fh)
    if meta.get("adapter_type") != "sora":
        raise ValueError(f"{cfg_path} is not a SoRA adapter (adapter_type={meta.get('adapter_type')!r})")
    if meta.get("format_version") != _FORMAT_VERSION:
        raise ValueError(f"unsupported SoRA adapter format_version {meta.get('format_version')!r}")
    config = SoRAConfig.from_dict(meta["config"])
    layers: dict[str, dict[str, Any]] = meta["layers"]
    tensors = load_file(str(w_path))

    expected: set[str] = set()
    for name, info in layers.items():
        keys = ("sora_A", "sora_B", "sora_gate") if info["kind"] == "sora" else ("lora_A", "lora_B")
        expected.update(f"{name}.{k}" for k in keys)
    missing, unexpected = expected - set(tensors), set(tensors) - expected
    if missing or unexpected:
        raise ValueError(f"SoRA weights do not match the config: missing {sorted(missing)}, "
                         f"unexpected {sorted(unexpected)}")

    modules = dict(base_model.named_modules())
    for name, info in layers.items():
        if name not in modules:
            raise ValueError(f"layer {name!r} of the adapter does not exist in {type(base_model).__name__}")
        base = modules[name]
        if isinstance(base, (SoRALinear, LowRankLinear)):
            raise ValueError(f"layer {name!r} already carries a SoRA adapter")
        d_in, d_out = linear_dims(base)
        if (d_in, d_out) != (info["in_features"], info["out_features"]):
            raise ValueError(f"layer {name!r}: adapter was saved for ({info['in_features']} -> "
                             f"{info['out_features']}), model has ({d_in} -> {d_out})")

    for p in base_model.parameters():
        p.requires_grad_(False)
    for name, info in layers.items():
        base = modules[name]
        if info["kind"] == "sora":
            mod = SoRALinear(base, info["r_max"], info["scaling"] * info["r_max"], config.dropout, config.gate_init)
            with torch.no_grad():
                for key in ("sora_A", "sora_B", "sora_gate"):
                    dst, src = getattr(mod, key), tensors[f"{name}.{key}"]
                    if src.shape != dst.shape:
                        raise ValueError(f"{name}.{key}: saved shape {tuple(src.shape)}, expected {tuple(dst.shape)}")
                    dst.copy_(src.to(dtype=dst.dtype, device=dst.device))
                    dst.requires_grad_(is_trainable)
            mod.scaling = float(info["scaling"])
        elif info["kind"] == "pruned":
            dtype, device = _adapter_dtype(base.weight), base.weight.device
            a = tensors[f"{name}.lora_A"].to(dtype=dtype, device=device)
            b = tensors[f"{name}.lora_B"].to(dtype=dtype, device=device)
            mod = LowRankLinear(base, a, b, info["scaling"], info["r_max"], config.dropout,
                                requires_grad=is_trainable)
        else:
            raise ValueError(f"layer {name!r}: unknown kind {info['kind']!r}")
        mod.train(base.training)
        _set_submodule(base_model, name, mod)
    base_model.sora_config = config
    return base_model
