"""Autograd function of the QAA quantum branch: embedding, PQC evolution and readout, differentiated by the
adjoint method in the engine."""
from __future__ import annotations

from typing import Tuple

import torch
from torch.autograd.function import once_differentiable

from . import fused
from .core import n_features


class QAAFunction(torch.autograd.Function):
    """``(x[B, d], theta[P]) -> (features[B, F], norms[B])``.

    ``features = readout(U(theta) embed(x))`` and ``norms = ||x||`` in the dtype of ``x`` (its gradient
    ``x/||x||`` flows back too). :class:`qaa.QAALayer` computes the norm for ``rescale_by_norm`` itself, in
    float64, because a float32 norm of a row near the float32 limit overflows (docs/design.md). The backward pass recomputes each state in the engine and
    runs the adjoint sweep: activation memory is only ``x``, like a linear layer's. ``x`` and ``theta`` must
    share dtype (float32 or float64) and device.

    Once differentiable: the backward is the engine's adjoint sweep, not a torch graph, so differentiating the
    gradients again (``create_graph=True`` then ``backward`` through them: gradient penalties, Hessian-vector
    products, MAML) raises RuntimeError instead of returning wrong second derivatives.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, theta: torch.Tensor, circuit, kind: str) -> Tuple[torch.Tensor, torch.Tensor]:
        # Gradient-free calls may take the dense-matrix path; training always runs the per-state engine.
        needs_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        feats, norms = fused.forward_features(circuit, theta, x, kind, path="state" if needs_grad else "auto")
        ctx.save_for_backward(x, theta)
        ctx.circuit = circuit
        ctx.kind = kind
        return feats, norms

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_feats: torch.Tensor, grad_norms: torch.Tensor):
        x, theta = ctx.saved_tensors
        if grad_feats is None:
            grad_feats = torch.zeros(x.shape[0], n_features(ctx.circuit, ctx.kind), dtype=x.dtype,
                                     device=x.device)
        grad_theta, grad_x = fused.backward_features(ctx.circuit, theta, x, grad_feats, grad_norms, ctx.kind)
        return (grad_x if ctx.needs_input_grad[0] else None,
                grad_theta if ctx.needs_input_grad[1] else None, None, None)


def qaa_features(x: torch.Tensor, theta: torch.Tensor, circuit, kind: str = "z"):
    """Differentiable ``(features[B, F], norms[B])`` of rows ``x[B, d]``; see :class:`QAAFunction`."""
    return QAAFunction.apply(x, theta, circuit, kind)
