"""The dense-matrix path: build the circuit unitary ``U`` once and apply it to the whole batch as one GEMM.

It serves gradient-free forwards (evaluation, generation) where it is cheaper than running every gate on every
state; :func:`prefer_dense` decides. A real circuit keeps a real state, so its GEMM is real.
"""
from __future__ import annotations

import os

import torch

from .core import Circuit
from .state import circuit_matrix, embed, readout

__all__ = ["DENSE_BATCH_FACTOR", "DENSE_GEMM_SPEEDUP", "DENSE_GEMM_SPEEDUP_CUDA", "prefer_dense", "forward_dense"]

#: The dense path serves gradient-free evaluation when it is cheaper: the batch must amortise building ``U``
#: (``B > DENSE_BATCH_FACTOR * 2**n``) and the GEMM's ``2 N^2`` flops per state, divided by how much faster a
#: BLAS GEMM runs than the gate kernels (``DENSE_GEMM_SPEEDUP``), must undercut the gates' ``3 N`` flops per
#: rotation. Both constants are calibrated by ``benchmarks/bench_engine.py`` (see benchmarks/README.md).
DENSE_BATCH_FACTOR = float(os.environ.get("QAA_DENSE_BATCH_FACTOR", "1.5"))
DENSE_GEMM_SPEEDUP = float(os.environ.get("QAA_DENSE_GEMM_SPEEDUP", "1.0"))  # measured: <= 1 on the 2-core CPU
#: The same ratio for CUDA tensors, where the per-state path is the fused kernel and the GEMM is cuBLAS's;
#: ``benchmarks/bench_fused.py`` measures the crossover (1.0, the flop-count rule, until measured).
DENSE_GEMM_SPEEDUP_CUDA = float(os.environ.get("QAA_DENSE_GEMM_SPEEDUP_CUDA", "1.0"))


def prefer_dense(circuit: Circuit, batch: int, device_type: str = "cpu") -> bool:
    """Whether the dense-matrix path is expected to be faster for a gradient-free forward of ``batch`` states
    on a device of type ``device_type`` (``"cpu"`` or ``"cuda"``)."""
    N = circuit.dim
    if batch <= DENSE_BATCH_FACTOR * N:  # cheap test first: this runs on every gradient-free forward
        return False
    rotations = sum(1 for g in circuit.gates if g[3] >= 0)
    speedup = DENSE_GEMM_SPEEDUP_CUDA if device_type == "cuda" else DENSE_GEMM_SPEEDUP
    return 3.0 * rotations * N * speedup > 2.0 * N * N


def forward_dense(circuit: Circuit, theta: torch.Tensor, x: torch.Tensor, kind: str):
    """``(features[B, F], norms[B])`` of rows ``x[B, d]`` through ``U(theta)`` as one GEMM; no gradient."""
    # The GEMM runs in the engine's dtype even under torch.autocast (which would run it in bfloat16/float16).
    with torch.autocast(x.device.type, enabled=False):
        return _forward_dense_impl(circuit, theta, x, kind)


def _forward_dense_impl(circuit: Circuit, theta: torch.Tensor, x: torch.Tensor, kind: str):
    psi0, norms = embed(x, circuit.n_qubits)
    u = circuit_matrix(circuit, theta)
    if circuit.is_real:
        psi = (psi0.real @ u.real.T).to(psi0.dtype)  # real GEMM: a real ansatz keeps a real state
    else:
        psi = psi0 @ u.T
    return readout(psi, kind), norms  # the engine's readout (the one <Z> / probs definition, qaa/readout.hpp)
