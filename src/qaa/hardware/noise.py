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


def _draw_paulis(rows: int, n: int, n_layers: int, p: float, rng: np.random.Generator) -> np.ndarray:
    """Pauli codes ``[n_layers, n, rows]`` (0: I with probability ``1 - p``; 1, 2, 3: X, Y, Z with ``p/3`` each)."""
    return rng.choice(4, size=(n_layers, n, rows), p=[1.0 - p, p / 3.0, p / 3.0, p / 3.0])


def _apply_paulis(psi: torch.Tensor, n: int, codes: np.ndarray) -> torch.Tensor:
    """Apply the Pauli ``codes[q, r]`` to wire ``q`` of state ``r`` of ``psi[R, 2^n]``."""
    T = psi.shape[0]
    for q in range(n):
        draw = codes[q]
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

    def run(psi, codes):
        for l in range(n_layers):
            psi = state.apply(layer, th[l * per:(l + 1) * per], psi)
            if codes is not None:
                psi = _apply_paulis(psi, n_qubits, codes[l])
        return psi.abs() ** 2

    with torch.no_grad():
        for s in range(0, B, chunk):
            psi0, _ = state.embed(x[s:s + chunk].detach().to(torch.float64), n_qubits)
            b = psi0.shape[0]
            # Every trajectory's Paulis are drawn first; a trajectory that drew only identities is the noiseless
            # state, so it is simulated once per input and counted as often as it was drawn (at p = 0.01 on 9
            # wires and 4 layers, 70% of the trajectories): the same estimator, without the repeated work.
            codes = _draw_paulis(b * trajectories, n_qubits, n_layers, p, rng)
            noisy = codes.reshape(-1, b * trajectories).any(axis=0)
            acc = run(psi0, None) * torch.from_numpy(
                (~noisy).reshape(b, trajectories).sum(axis=1).astype(np.float64)).to(x.device).view(b, 1)
            idx = np.flatnonzero(noisy)
            if len(idx):
                rows = torch.from_numpy(idx // trajectories).to(x.device)
                probs = run(psi0[rows], codes[:, :, idx])
                acc.index_add_(0, rows, probs)
            out[s:s + b] = acc / trajectories
    return out
