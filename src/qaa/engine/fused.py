"""Fused token-level engine API, the one training uses: ``x[B, d] -> features[B, F]`` (embedding, circuit and
readout in one engine call per batch) and its VJP by the adjoint method, with states recomputed in the backward
pass instead of stored (activation memory is only ``x``, like a linear layer's)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .core import (Circuit, check_readout, check_real, check_same_device, check_theta, module_for, n_features,
                   prep, stream)
from .dense import forward_dense, prefer_dense

__all__ = ["forward_features", "backward_features", "check_forward_args"]


def check_forward_args(circuit: Circuit, theta: torch.Tensor, x: torch.Tensor, kind: str) -> None:
    check_readout(kind)
    check_real(x, "x")
    check_real(theta, "theta")
    if theta.dtype != x.dtype:
        raise TypeError(f"theta ({theta.dtype}) and x ({x.dtype}) must have the same dtype")
    check_theta(circuit, theta)
    check_same_device(theta, x)
    module_for(x)  # an unsupported device fails here, before anything is allocated on it
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D (batch, d), got shape {tuple(x.shape)}")
    if x.shape[1] < 1 or x.shape[1] > circuit.dim:
        raise ValueError(f"input width {x.shape[1]} does not fit {circuit.n_qubits} qubits (max {circuit.dim})")


def forward_features(circuit: Circuit, theta: torch.Tensor, x: torch.Tensor, kind: str = "z",
                     path: str = "auto") -> Tuple[torch.Tensor, torch.Tensor]:
    """Fused QAA forward: ``x[B, d] -> (features[B, F], norms[B])`` = readout(U(theta) embed(x)), ||x||.

    ``path``: ``"state"`` runs every gate on each state (OpenMP over the batch, state kept in cache);
    ``"dense"`` builds ``U`` once and applies it as one GEMM; ``"auto"`` picks ``dense`` when
    :func:`prefer_dense` says it is cheaper (deep circuits, large batches). No gradient is tracked here
    (see :class:`qaa.engine.function.QAAFunction`).
    """
    check_forward_args(circuit, theta, x, kind)
    if path not in ("auto", "state", "dense"):
        raise ValueError(f"path must be 'auto', 'state' or 'dense', got {path!r}")
    B = x.shape[0]
    if path == "auto":
        path = "dense" if prefer_dense(circuit, B, x.device.type) else "state"
    if path == "dense" and B > 0:
        return forward_dense(circuit, theta, x, kind)
    feats = torch.empty(B, n_features(circuit, kind), dtype=x.dtype, device=x.device)
    norms = torch.empty(B, dtype=x.dtype, device=x.device)
    if B:
        module_for(x).forward(circuit, prep(theta, "theta"), prep(x, "x"), kind, feats, norms, stream(x))
    return feats, norms


def backward_features(circuit: Circuit, theta: torch.Tensor, x: torch.Tensor, grad_features: torch.Tensor,
                      grad_norms: Optional[torch.Tensor] = None, kind: str = "z"
                      ) -> Tuple[torch.Tensor, torch.Tensor]:
    """VJP of :func:`forward_features` by the adjoint method (states recomputed, never stored).

    Returns ``(grad_theta[P], grad_x[B, d])``; ``grad_theta`` is summed over the batch. Rows without a
    state (zero or NaN) get zero gradient.
    """
    check_forward_args(circuit, theta, x, kind)
    B, d = x.shape
    gf = prep(grad_features, "grad_features", x.dtype)
    if tuple(gf.shape) != (B, n_features(circuit, kind)):
        raise ValueError(f"grad_features must have shape ({B}, {n_features(circuit, kind)}), got {tuple(gf.shape)}")
    gn = None if grad_norms is None else prep(grad_norms, "grad_norms", x.dtype)
    grad_theta = torch.zeros(circuit.n_params, dtype=x.dtype, device=x.device)
    grad_x = torch.empty(B, d, dtype=x.dtype, device=x.device)
    if B:
        module_for(x).backward(circuit, prep(theta, "theta"), prep(x, "x"), kind, gf, gn, grad_theta, grad_x,
                                stream(x))
    return grad_theta, grad_x
