"""State-level engine API: embedding, circuit evolution, readout, the adjoint VJP and the circuit unitary,
each on a batch of statevectors (for tests, analysis and custom circuits; training uses :mod:`.fused`)."""
from __future__ import annotations

from typing import Tuple

import torch

from .core import (COMPLEX_OF, Circuit, check_qubits, check_readout, check_real, check_same_device, check_theta,
                   module_for, prep, stream)

__all__ = ["embed", "apply", "readout", "vjp", "circuit_matrix"]


def embed(x: torch.Tensor, n_qubits: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Amplitude embedding: ``x[B, d] -> (psi0[B, 2**n] complex, norms[B])``.

    ``psi0 = x_pad / ||x||`` with zero padding at the end; the norm is computed without overflow. Rows that are
    all zero or hold a NaN give the zero vector and norm 0; rows with +-inf give their limit (+-1 at the
    infinite entries, normalised) and norm +inf. Raises ValueError/TypeError on bad shapes or dtypes.
    """
    check_real(x, "x")
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D (batch, d), got shape {tuple(x.shape)}")
    n = check_qubits(n_qubits)
    if x.shape[1] > 2**n:
        raise ValueError(f"input width {x.shape[1]} needs more than {n} qubits")
    mod = module_for(x)
    xc = prep(x, "x")
    psi0 = torch.empty(x.shape[0], 2**n, dtype=COMPLEX_OF[x.dtype], device=x.device)
    norms = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    mod.embed(n, xc, psi0, norms, stream(x))
    return psi0, norms


def apply(circuit: Circuit, theta: torch.Tensor, psi: torch.Tensor, adjoint: bool = False) -> torch.Tensor:
    """Evolve statevectors: returns ``U(theta) psi`` (or ``U^dagger psi``) for ``psi[B, N]`` complex.

    ``theta[P]`` must have the real dtype matching ``psi`` (complex64 <-> float32). The input is not modified.
    """
    check_theta(circuit, theta)
    if psi.dtype not in (torch.complex64, torch.complex128):
        raise TypeError(f"psi must be complex64 or complex128, got {psi.dtype}")
    real = torch.float32 if psi.dtype == torch.complex64 else torch.float64
    check_same_device(theta, psi)
    mod = module_for(psi)
    out = psi.detach().resolve_conj().resolve_neg().clone(memory_format=torch.contiguous_format)
    if out.dim() != 2 or out.shape[1] != circuit.dim:
        raise ValueError(f"psi must have shape (B, {circuit.dim}), got {tuple(psi.shape)}")
    mod.apply(circuit, prep(theta, "theta", real), out, bool(adjoint), stream(psi))
    return out


def readout(psi: torch.Tensor, kind: str = "z") -> torch.Tensor:
    """Measure statevectors ``psi[B, N]``: ``"z"`` gives ``<Z_q>`` (``[B, n]``), ``"probs"`` gives ``|psi|^2``."""
    check_readout(kind)
    if psi.dtype not in (torch.complex64, torch.complex128):
        raise TypeError(f"psi must be complex64 or complex128, got {psi.dtype}")
    if psi.dim() != 2 or psi.shape[1] < 2 or psi.shape[1] & (psi.shape[1] - 1):
        raise ValueError(f"psi must have shape (B, 2**n), got {tuple(psi.shape)}")
    n = psi.shape[1].bit_length() - 1
    real = torch.float32 if psi.dtype == torch.complex64 else torch.float64
    mod = module_for(psi)
    feats = torch.empty(psi.shape[0], n if kind == "z" else 2**n, dtype=real, device=psi.device)
    mod.readout(n, prep(psi, "psi"), kind, feats, stream(psi))
    return feats


def vjp(circuit: Circuit, theta: torch.Tensor, psi: torch.Tensor, grad_features: torch.Tensor,
        kind: str = "z") -> Tuple[torch.Tensor, torch.Tensor]:
    """Adjoint-method VJP of ``readout(U(theta) psi0)`` given the final states ``psi[B, N]``.

    Returns ``(grad_theta[P], grad_psi0[B, N])``: ``grad_theta`` summed over the batch; ``grad_psi0`` the
    gradient with respect to a real-valued initial state. Memory: a few state buffers per thread.
    """
    check_theta(circuit, theta)
    check_readout(kind)
    if psi.dtype not in (torch.complex64, torch.complex128):
        raise TypeError(f"psi must be complex64 or complex128, got {psi.dtype}")
    if psi.dim() != 2 or psi.shape[1] != circuit.dim:
        raise ValueError(f"psi must have shape (B, {circuit.dim}), got {tuple(psi.shape)}")
    real = torch.float32 if psi.dtype == torch.complex64 else torch.float64
    check_same_device(theta, psi, grad_features)
    mod = module_for(psi)
    grad_theta = torch.empty(circuit.n_params, dtype=real, device=psi.device)
    grad_psi0 = torch.empty(psi.shape[0], circuit.dim, dtype=real, device=psi.device)
    mod.vjp(circuit, prep(theta, "theta", real), prep(psi, "psi"),
                         prep(grad_features, "grad_features", real), kind, grad_theta, grad_psi0, stream(psi))
    return grad_theta, grad_psi0


def circuit_matrix(circuit: Circuit, theta: torch.Tensor) -> torch.Tensor:
    """The circuit unitary ``U[N, N]`` (complex), ``U[i, j] = <i|U(theta)|j>``."""
    check_real(theta, "theta")
    check_theta(circuit, theta)
    mod = module_for(theta)
    u = torch.empty(circuit.dim, circuit.dim, dtype=COMPLEX_OF[theta.dtype], device=theta.device)
    mod.circuit_matrix(circuit, prep(theta, "theta"), u, stream(theta))
    return u
