"""The fused engine as torch custom operators, so ``torch.compile`` traces a QAA model without graph breaks.

Two operators (``torch.library.custom_op``, CPU and CUDA kernels, fake kernels for tracing, autograd
registered):

- ``qaa::features(x[B, d], theta[P], ansatz, n_qubits, n_layers, kind, dense_ok) -> (features[B, F], norms[B])``:
  :func:`qaa.engine.fused.forward_features` of the built-in ansatz ``(ansatz, n_qubits, n_layers)``;
- ``qaa::features_backward(x, theta, grad_features[B, F], grad_norms[B], ansatz, n_qubits, n_layers, kind)
  -> (grad_theta[P], grad_x[B, d])``: its adjoint VJP (:func:`qaa.engine.fused.backward_features`).

The circuit crosses the operator schema as its name and two integers (a ``Circuit`` is not a type a schema
accepts); the operators look the circuit up in a process-wide cache (:func:`cached_circuit`), so a circuit is
built once per ``(ansatz, n_qubits, n_layers)``, and a traced graph holds only constants. :class:`qaa.QAALayer`
resolves the triple once per adapter, when the adapter is added. Circuits a user extended
(``Circuit.add_rotation``) have no such name: they run through :class:`qaa.QAAFunction` (eager only).

``qaa::features`` is differentiable once: its backward calls ``qaa::features_backward``, whose own backward
raises RuntimeError (the adjoint sweep is not a torch graph; a second derivative would be wrong, not merely
slow). ``dense_ok=True`` lets a gradient-free call take the dense-matrix path (:mod:`qaa.engine.dense`);
callers pass False whenever a gradient will be asked for, so training always runs the per-state engine.
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import fused
from .core import Circuit, build_circuit, check_readout, n_features

__all__ = ["cached_circuit", "features", "features_backward", "qaa_features_op"]

_DEVICES = ("cpu", "cuda")


@functools.lru_cache(maxsize=256)
def cached_circuit(ansatz: str, n_qubits: int, n_layers: int) -> Circuit:
    """The shared circuit of a built-in ansatz, built once per ``(ansatz, n_qubits, n_layers)``.

    Shared by every operator call and layer: never hand it to code that may extend it (``add_rotation``);
    :func:`qaa.build_circuit` gives a private copy. Raises ValueError as :func:`qaa.build_circuit`.
    """
    return build_circuit(ansatz, n_qubits, n_layers)


def _check_spec(x: Tensor, theta: Tensor, ansatz: str, n_qubits: int, n_layers: int, kind: str) -> Circuit:
    """The circuit of the spec, after the checks that need no data (shared by the real and fake kernels)."""
    check_readout(kind)
    circuit = cached_circuit(ansatz, n_qubits, n_layers)
    if x.dtype not in (torch.float32, torch.float64) or theta.dtype != x.dtype:
        raise TypeError(f"x ({x.dtype}) and theta ({theta.dtype}) must share dtype float32 or float64")
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D (batch, d), got shape {tuple(x.shape)}")
    if theta.dim() != 1 or theta.shape[0] != circuit.n_params:
        raise ValueError(f"theta must have shape ({circuit.n_params},), got {tuple(theta.shape)}")
    if x.shape[1] < 1 or x.shape[1] > circuit.dim:
        raise ValueError(f"input width {x.shape[1]} does not fit {circuit.n_qubits} qubits (max {circuit.dim})")
    return circuit


# ---------------------------------------------------------------- qaa::features
@torch.library.custom_op("qaa::features", mutates_args=(), device_types=_DEVICES)
def features(x: Tensor, theta: Tensor, ansatz: str, n_qubits: int, n_layers: int, kind: str,
             dense_ok: bool) -> Tuple[Tensor, Tensor]:
    """``(features[B, F], norms[B])`` = ``readout(U(theta) embed(x))``, ``||x||`` of rows ``x[B, d]``.

    ``x`` and ``theta[P]`` share dtype (float32 or float64) and device (cpu or cuda); ``F`` is ``n_qubits``
    for ``kind="z"``, ``2**n_qubits`` for ``"probs"``. Raises TypeError / ValueError for a dtype, shape, ansatz or
    readout the engine does not take (the fake kernel raises the same while tracing).
    """
    circuit = _check_spec(x, theta, ansatz, n_qubits, n_layers, kind)
    return fused.forward_features(circuit, theta, x, kind, path="auto" if dense_ok else "state")


@features.register_fake
def _features_fake(x, theta, ansatz, n_qubits, n_layers, kind, dense_ok):
    circuit = _check_spec(x, theta, ansatz, n_qubits, n_layers, kind)
    B = x.shape[0]
    return x.new_empty(B, n_features(circuit, kind)), x.new_empty(B)


# ---------------------------------------------------------------- qaa::features_backward
@torch.library.custom_op("qaa::features_backward", mutates_args=(), device_types=_DEVICES)
def features_backward(x: Tensor, theta: Tensor, grad_features: Tensor, grad_norms: Optional[Tensor], ansatz: str,
                      n_qubits: int, n_layers: int, kind: str) -> Tuple[Tensor, Tensor]:
    """``(grad_theta[P], grad_x[B, d])``: the VJP of ``qaa::features`` for ``grad_features[B, F]`` and
    ``grad_norms[B]`` (or None), by the adjoint method; ``grad_theta`` is summed over the batch.

    Raises as ``qaa::features``, and ValueError for a ``grad_features`` of another shape.
    """
    circuit = _check_spec(x, theta, ansatz, n_qubits, n_layers, kind)
    return fused.backward_features(circuit, theta, x, grad_features, grad_norms, kind)


@features_backward.register_fake
def _features_backward_fake(x, theta, grad_features, grad_norms, ansatz, n_qubits, n_layers, kind):
    circuit = _check_spec(x, theta, ansatz, n_qubits, n_layers, kind)
    if grad_features.dim() != 2 or grad_features.shape[1] != n_features(circuit, kind):
        raise ValueError(f"grad_features must have shape (B, {n_features(circuit, kind)}), "
                         f"got {tuple(grad_features.shape)}")
    return theta.new_empty(theta.shape), x.new_empty(x.shape)


# ---------------------------------------------------------------- autograd
def _features_setup_context(ctx, inputs, output):
    x, theta, ansatz, n_qubits, n_layers, kind, _dense_ok = inputs
    ctx.save_for_backward(x, theta)
    ctx.spec = (ansatz, n_qubits, n_layers, kind)


def _features_bwd(ctx, grad_features, grad_norms):
    x, theta = ctx.saved_tensors
    grad_theta, grad_x = torch.ops.qaa.features_backward(x, theta, grad_features, grad_norms, *ctx.spec)
    return (grad_x if ctx.needs_input_grad[0] else None, grad_theta if ctx.needs_input_grad[1] else None,
            None, None, None, None, None)


features.register_autograd(_features_bwd, setup_context=_features_setup_context)

ONCE_DIFFERENTIABLE_MESSAGE = (
    "qaa::features is once_differentiable: its gradient is the engine's adjoint sweep, not a torch graph, so it "
    "cannot be differentiated twice (gradient penalties, Hessian-vector products, MAML through a QAA branch are "
    "not supported)")


def _features_backward_setup_context(ctx, inputs, output):
    pass


def _features_backward_bwd(ctx, *grads):
    # Reached only by a double backward (create_graph=True, then backward through the gradients).
    raise RuntimeError(ONCE_DIFFERENTIABLE_MESSAGE)


features_backward.register_autograd(_features_backward_bwd, setup_context=_features_backward_setup_context)


FORWARD_MODE_MESSAGE = (
    "forward-mode automatic differentiation (torch.func.jvp, torch.func.jacfwd, torch.autograd.forward_ad) is not "
    "supported through qaa::features: its derivative is the engine's adjoint method, a reverse-mode sweep, and "
    "the operator has no JVP rule (without this error the tangent of the QAA branch would silently be 0). Use "
    "reverse mode: loss.backward(), torch.autograd.grad, or torch.func.vjp / jacrev.")


FUNC_GRAD_MESSAGE = (
    "torch.func's differentiating transforms (grad, vjp, jacrev, hessian) are not supported through qaa::features "
    "(a custom operator whose gradient is the engine's adjoint sweep); use torch.autograd: loss.backward() or "
    "torch.autograd.grad (torch.func.vmap and functional_call work).")


def _func_grad_active() -> bool:
    """Whether a ``torch.func.grad`` / ``vjp`` / ``jacrev`` transform is on functorch's stack."""
    from torch._C import _functorch

    return any(i.key() == _functorch.TransformType.Grad for i in _functorch.get_interpreter_stack() or ())


def _forward_mode_active(x: Tensor, theta: Tensor) -> bool:
    """Whether ``x`` or ``theta`` carries a forward-mode tangent: a ``torch.func.jvp`` / ``jacfwd`` transform is
    on functorch's stack, or a ``torch.autograd.forward_ad`` dual level is open and one of them is dual."""
    from torch._C import _functorch

    if any(i.key() == _functorch.TransformType.Jvp for i in _functorch.get_interpreter_stack() or ()):
        return True
    import torch.autograd.forward_ad as fwAD

    if getattr(fwAD, "_current_level", -1) >= 0:
        return any(fwAD.unpack_dual(t).tangent is not None for t in (x, theta))
    return False


def qaa_features_op(x: Tensor, theta: Tensor, ansatz: str, n_qubits: int, n_layers: int,
                    kind: str = "z") -> Tuple[Tensor, Tensor]:
    """Differentiable ``(features[B, F], norms[B])`` of rows ``x[B, d]`` through the built-in ansatz
    ``(ansatz, n_qubits, n_layers)``: ``qaa::features``, with the dense path allowed only when no gradient is
    needed. Traceable by ``torch.compile`` (no graph break). Differentiable in reverse mode only.

    Raises:
        NotImplementedError: under forward-mode AD (``torch.func.jvp`` / ``jacfwd``, ``torch.autograd.forward_ad``
            dual tensors): :data:`FORWARD_MODE_MESSAGE`; under ``torch.func.grad`` / ``vjp`` / ``jacrev``:
            :data:`FUNC_GRAD_MESSAGE`.
        as ``qaa::features`` otherwise.
    """
    if not torch.compiler.is_compiling():
        if _forward_mode_active(x, theta):
            raise NotImplementedError(FORWARD_MODE_MESSAGE)
        if _func_grad_active():
            raise NotImplementedError(FUNC_GRAD_MESSAGE)
    dense_ok = not (torch.is_grad_enabled() and (x.requires_grad or theta.requires_grad))
    return torch.ops.qaa.features(x, theta, ansatz, n_qubits, n_layers, kind, dense_ok)
