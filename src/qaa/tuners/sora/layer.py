"""SoRA layers: the gated low-rank branch during training, and the plain low-rank layer it is pruned into."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..utils import layer_dims
from .config import GATE_INITS


def _dims(base: nn.Module) -> tuple:
    dims = layer_dims(base)
    if dims is None:
        raise TypeError(f"only nn.Linear and transformers Conv1D layers can be adapted, got {type(base).__name__}")
    return dims

__all__ = ["SoRALinear", "LowRankLinear", "adapter_dtype"]


def adapter_dtype(weight: torch.Tensor) -> torch.dtype:
    """Adapter parameters are float32 when the frozen weight is half precision, else the weight's dtype
    (the rule of peft's ``autocast_adapter_dtype=True``): small adapters train poorly in fp16/bf16."""
    if weight.dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    if not weight.dtype.is_floating_point:
        return torch.float32
    return weight.dtype


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
        d_in, d_out = _dims(base)
        if r_max < 1:
            raise ValueError(f"r_max must be >= 1, got {r_max}")
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if gate_init not in GATE_INITS:
            raise ValueError(f"gate_init must be one of {GATE_INITS}, got {gate_init!r}")
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
        kw = {"device": w.device, "dtype": adapter_dtype(w)}
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
        d_in, d_out = _dims(base)
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

