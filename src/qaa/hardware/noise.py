"""Local (per-qubit) depolarising noise by Pauli trajectories (docs/design.md §9).

The channel is PennyLane's ``DepolarizingChannel(p)`` on every wire after every ansatz layer,
``rho -> (1 - p) rho + p/3 (X rho X + Y rho Y + Z rho Z)`` (Kraus operators ``sqrt(1 - p) I``,
``sqrt(p/3) X, Y, Z``). A Pauli channel is a mixture of unitaries, so the noisy output distribution is the
average over trajectories: per trajectory, after each layer, each wire gets ``I`` with probability ``1 - p`` and
``X``, ``Y`` or ``Z`` with ``p/3`` each (the depolarising channel as a Pauli mixture: Nielsen and Chuang,
*Quantum Computation and Quantum Information*, §8.3.4). Each trajectory is a pure
statevector run by the engine layer by layer (:func:`qaa.engine.apply` of a one-layer ansatz); the Paulis are
applied in torch. ``Y = i X Z``: its global phase ``i`` changes no probability and is not applied.
"""
from __future__ import annotations

import numpy as np
import torch

from ..engine import state
from ..engine.ops import cached_circuit

__all__ = ["local_depolarized_probs", "TRAJECTORY_CHUNK"]

#: Statevector amplitudes held at once (trajectories x inputs x 2^n) before the inputs are processed in chunks.
TRAJECTORY_CHUNK = 1 << 22


def _layer_circuit(ansatz: str, n: int, n_layers: int):
    """The one-layer circuit and its parameter count, after checking that the L-layer ansatz is L copies of it
    reading consecutive slices of theta (the layout of every built-in ansatz, cpp/include/qaa/circuit.hpp)."""
    full = cached_circuit(ansatz, n, n_layers)
    layer = cached_circuit(ansatz, n, 1)
    per = layer.n_params
    expected = [(g[0], g[1], g[2], g[3] + l * per if g[3] >= 0 else -1)
                for l in range(n_layers) for g in layer.gates]
    if list(full.gates) != expected:
        raise ValueError(f"ansatz {ansatz!r} is not a repetition of one layer; trajectories cannot split it")
    return layer, per


def _random_paulis(psi: torch.Tensor, n: int, p: float, rng: np.random.Generator) -> torch.Tensor:
    """Apply an independent Pauli to every wire of every state of ``psi[T, 2^n]`` (I: 1 - p; X, Y, Z: p/3)."""
    T = psi.shape[0]
    for q in range(n):
        draw = rng.choice(4, size=T, p=[1.0 - p, p / 3.0, p / 3.0, p / 3.0])
        if not draw.any():
            continue
        v = psi.view(T, 2**q, 2, 2 ** (n - q - 1))
        phase_flip = torch.from_numpy((draw == 2) | (draw == 3)).to(psi.device)  # Y ~ X Z, Z
        bit_flip = torch.from_numpy((draw == 1) | (draw == 2)).to(psi.device)    # X, Y ~ X Z
        sign = torch.ones(T, 1, 2, 1, dtype=psi.dtype, device=psi.device)
        sign[phase_flip, :, 1, :] = -1
        v = v * sign
        v = torch.where(bit_flip.view(T, 1, 1, 1), v.flip(2), v)
        psi = v.reshape(T, 2**n)
    return psi


def local_depolarized_probs(x: torch.Tensor, theta: torch.Tensor, ansatz: str, n_qubits: int, n_layers: int,
                            p: float, trajectories: int, rng: np.random.Generator) -> torch.Tensor:
    """Output distribution of ``U(theta) embed(x)`` with per-wire depolarising ``p`` after each layer, averaged
    over ``trajectories`` Pauli trajectories per row: float64 ``[B, 2^n]`` on ``x``'s device (no gradient).

    ``x[B, d]`` and ``theta[P]`` are read in float64. A row without a state (zero or NaN) gives zeros. The
    standard error of an entry is at most ``sqrt(q (1 - q) / trajectories)`` for its value ``q``.
    """
    layer, per = _layer_circuit(ansatz, n_qubits, n_layers)
    th = theta.detach().to(torch.float64)
    N = 2**n_qubits
    B = x.shape[0]
    out = torch.empty(B, N, dtype=torch.float64, device=x.device)
    chunk = max(1, TRAJECTORY_CHUNK // (trajectories * N))
    with torch.no_grad():
        for s in range(0, B, chunk):
            psi0, _ = state.embed(x[s:s + chunk].detach().to(torch.float64), n_qubits)
            b = psi0.shape[0]
            psi = psi0.repeat_interleave(trajectories, dim=0)
            for l in range(n_layers):
                psi = state.apply(layer, th[l * per:(l + 1) * per], psi)
                if p > 0:
                    psi = _random_paulis(psi, n_qubits, p, rng)
            out[s:s + b] = (psi.abs() ** 2).view(b, trajectories, N).mean(dim=1)
    return out
