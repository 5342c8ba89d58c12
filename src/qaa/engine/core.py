"""The compiled engines and what every engine call shares: device dispatch, argument checks, constants.

``qaa._engine_cpu`` (always built) and ``qaa._engine_cuda`` (cuStateVec, optional, loaded by
:mod:`qaa.engine.cuda`) are nanobind modules that take DLPack arrays without copies. Inputs cross as
``detach().resolve_conj().resolve_neg().contiguous()`` views, so tensors that require grad, conjugate views and
strided tensors are all accepted by the torch-facing functions.

Shapes: ``B`` batch, ``d`` input width, ``n`` qubits, ``N = 2**n`` amplitudes, ``F`` readout features
(``n`` for ``"z"``, ``N`` for ``"probs"``), ``P`` circuit parameters. Real dtypes are float32 or float64;
statevectors are complex64 or complex128 accordingly.

Conventions follow PennyLane (wire 0 is the most significant bit; ``RY(t) = [[cos t/2, -sin t/2],
[sin t/2, cos t/2]]``; ``RZ(t) = diag(e^{-it/2}, e^{it/2})``; amplitude embedding pads with zeros at the end
and normalises), so results can be checked against ``default.qubit``. docs/design.md gives the formulas.
"""
from __future__ import annotations

from typing import Optional

import torch

from .. import _engine_cpu

Circuit = _engine_cpu.Circuit

#: Largest number of qubits the engine accepts (read from the compiled module, ``qaa::kMaxQubits``).
MAX_QUBITS: int = int(_engine_cpu.MAX_QUBITS)
#: Readouts the engine implements (read from the compiled module).
READOUTS: tuple = tuple(_engine_cpu.READOUTS)

REAL_DTYPES = (torch.float32, torch.float64)
COMPLEX_OF = {torch.float32: torch.complex64, torch.float64: torch.complex128}


def ansatz_names() -> list:
    """Names of the built-in ansaetze (``ry_cnot_ring``, ``ry_rz_ring_ry``, ``ry_layers``)."""
    return list(_engine_cpu.ansatz_names())


def qubits_for_dim(d: int) -> int:
    """Qubits needed to amplitude-embed a width-``d`` vector: ``ceil(log2 d)`` (at least 1).

    Raises ValueError for ``d < 1``.
    """
    return int(_engine_cpu.qubits_for_dim(int(d)))


def build_circuit(ansatz: str, n_qubits: int, n_layers: int) -> Circuit:
    """Build a named ansatz (docs/design.md and ``cpp/include/qaa/circuit.hpp`` list the exact gates).

    ``ry_cnot_ring``: per layer RY on every wire then CNOT(q, q+1 mod n); ``L*n`` parameters, real.
    ``ry_rz_ring_ry``: per layer RY, RZ on every wire, the CNOT ring, RY on every wire; ``3*L*n`` parameters.
    ``ry_layers``: per layer RY on every wire, no entangler (the product-circuit control); ``L*n`` parameters, real.
    Raises ValueError for an unknown name, ``n_layers < 1`` or ``n_qubits`` outside ``[1, MAX_QUBITS]``.
    """
    return Circuit.from_ansatz(str(ansatz), int(n_qubits), int(n_layers))


def n_features(circuit: Circuit, kind: str) -> int:
    """Readout width ``F``: ``n_qubits`` for ``"z"``, ``2**n_qubits`` for ``"probs"``."""
    return circuit.n_qubits if kind == "z" else circuit.dim


def set_num_threads(n: int) -> None:
    """Threads used by the CPU engine (OpenMP); ``n <= 0`` restores the default (``OMP_NUM_THREADS``)."""
    _engine_cpu.set_num_threads(int(n))


def get_num_threads() -> int:
    """Threads used by the CPU engine."""
    return int(_engine_cpu.get_num_threads())


# ---------------------------------------------------------------- dispatch and checks shared by the calls
def module_for(t: torch.Tensor):
    """The engine module for ``t``'s device. Raises ValueError for devices other than cpu and cuda (meta, mps,
    ...) and RuntimeError, with the reason, when ``t`` is on cuda but the CUDA engine is not available."""
    if t.device.type == "cpu":
        return _engine_cpu
    if t.device.type == "cuda":
        try:
            from .cuda import cuda_engine
        except ImportError as e:  # a build without the CUDA loader
            raise RuntimeError(f"qaa engine: tensor on {t.device} but the CUDA engine is not available ({e})") from e
        return cuda_engine()
    raise ValueError(f"qaa engine: tensors on device '{t.device}' are not supported (use cpu or cuda)")


def stream(t: torch.Tensor) -> int:
    """The current CUDA stream of ``t``'s device as an integer handle (0 on the CPU)."""
    if t.device.type == "cuda":
        return int(torch.cuda.current_stream(t.device).cuda_stream)
    return 0


def prep(t: torch.Tensor, name: str, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """``t`` as the engine takes it: detached, conjugation and negation resolved, contiguous."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if dtype is not None and t.dtype != dtype:
        raise TypeError(f"{name} has dtype {t.dtype}, expected {dtype}")
    return t.detach().resolve_conj().resolve_neg().contiguous()


def check_real(t: torch.Tensor, name: str) -> None:
    if t.dtype not in REAL_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {t.dtype}")


def check_readout(kind: str) -> None:
    if kind not in READOUTS:
        raise ValueError(f"unknown readout '{kind}' (expected one of {READOUTS})")


def check_same_device(*ts: torch.Tensor) -> None:
    dev = ts[0].device
    for t in ts[1:]:
        if t.device != dev:
            raise ValueError(f"all tensors must be on one device, got {dev} and {t.device}")


def check_theta(circuit: Circuit, theta: torch.Tensor) -> None:
    if theta.dim() != 1 or theta.shape[0] != circuit.n_params:
        raise ValueError(f"theta must have shape ({circuit.n_params},), got {tuple(theta.shape)}")


def check_qubits(n: int) -> int:
    n = int(n)
    if not 1 <= n <= MAX_QUBITS:
        raise ValueError(f"n_qubits must be in [1, {MAX_QUBITS}], got {n}")
    return n
