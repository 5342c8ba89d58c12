"""Torch-facing API of the qaa statevector engine.

Every function takes and returns :class:`torch.Tensor` objects and dispatches on the tensors' device to the
compiled engine: ``qaa._engine_cpu`` (always built) or ``qaa._engine_cuda`` (cuStateVec, optional). Tensors
cross into C++ as DLPack arrays without copies; inputs are passed as ``detach().resolve_conj().contiguous()``
views, so tensors that require grad, conjugate views and strided tensors are all accepted here.

Shapes: ``B`` batch, ``d`` input width, ``n`` qubits, ``N = 2**n`` amplitudes, ``F`` readout features
(``n`` for ``"z"``, ``N`` for ``"probs"``), ``P`` circuit parameters. Real dtypes are float32 or float64;
statevectors are complex64 or complex128 accordingly.

Conventions follow PennyLane (wire 0 is the most significant bit; ``RY(t) = [[cos t/2, -sin t/2],
[sin t/2, cos t/2]]``; ``RZ(t) = diag(e^{-it/2}, e^{it/2})``; amplitude embedding pads with zeros at the end
and normalises), so results can be checked against ``default.qubit``.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import torch

from . import _engine_cpu

Circuit = _engine_cpu.Circuit

#: Largest number of qubits the engine accepts (mirrors ``qaa::kMaxQubits``).
MAX_QUBITS = 20
#: Supported readouts.
READOUTS = ("z", "probs")
#: The dense-matrix path (``psi = psi0 @ U^T`` as one GEMM) serves gradient-free evaluation when it is cheaper:
#: the batch must amortise building ``U`` (``B > DENSE_BATCH_FACTOR * 2**n``) and the GEMM's ``2 N^2`` flops per
#: state, divided by how much faster a BLAS GEMM runs than the gate kernels (``DENSE_GEMM_SPEEDUP``), must
#: undercut the gates' ``3 N`` flops per rotation. Both constants are calibrated by
#: ``benchmarks/bench_engine.py`` (see benchmarks/README.md).
DENSE_BATCH_FACTOR = float(os.environ.get("QAA_DENSE_BATCH_FACTOR", "1.5"))
DENSE_GEMM_SPEEDUP = float(os.environ.get("QAA_DENSE_GEMM_SPEEDUP", "1.0"))  # measured: <= 1 on the 2-core CPU
#: The same ratio for CUDA tensors, where the per-state path is the fused kernel and the GEMM is cuBLAS's;
#: ``benchmarks/bench_fused.py`` measures the crossover (1.0, the flop-count rule, until measured).
DENSE_GEMM_SPEEDUP_CUDA = float(os.environ.get("QAA_DENSE_GEMM_SPEEDUP_CUDA", "1.0"))

_REAL = (torch.float32, torch.float64)
_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}


def ansatz_names() -> list:
    """Names of the built-in ansaetze (``ry_cnot_ring``, ``ry_rz_ring_ry``)."""
    return list(_engine_cpu.ansatz_names())


def qubits_for_dim(d: int) -> int:
    """Qubits needed to amplitude-embed a width-``d`` vector: ``ceil(log2 d)`` (at least 1).

    Raises ValueError for ``d < 1``.
    """
    return int(_engine_cpu.qubits_for_dim(int(d)))


def build_circuit(ansatz: str, n_qubits: int, n_layers: int) -> Circuit:
    """Build a named ansatz (see ``cpp/include/qaa/circuit.hpp`` for the exact gate lists).

    ``ry_cnot_ring``: per layer RY on every wire then CNOT(q, q+1 mod n); ``L*n`` parameters, real.
    ``ry_rz_ring_ry``: per layer RY, RZ on every wire, the CNOT ring, RY on every wire; ``3*L*n`` parameters.
    Raises ValueError for an unknown name, ``n_layers < 1`` or ``n_qubits`` outside ``[1, MAX_QUBITS]``.
    """
    return Circuit.from_ansatz(str(ansatz), int(n_qubits), int(n_layers))


def _module_for(t: torch.Tensor):
    """The engine module for ``t``'s device. Raises ValueError for devices other than cpu and cuda (meta, mps,
    ...) and RuntimeError, with the reason, when ``t`` is on cuda but the CUDA engine is not available."""
    if t.device.type == "cpu":
        return _engine_cpu
    if t.device.type == "cuda":
        try:
            from ._cuda import cuda_engine
        except ImportError as e:  # a build without the CUDA loader
            raise RuntimeError(f"qaa engine: tensor on {t.device} but the CUDA engine is not available ({e})") from e
        return cuda_engine()
    raise ValueError(f"qaa engine: tensors on device '{t.device}' are not supported (use cpu or cuda)")


def _stream(t: torch.Tensor) -> int:
    if t.device.type == "cuda":
        return int(torch.cuda.current_stream(t.device).cuda_stream)
    return 0


def _prep(t: torch.Tensor, name: str, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if dtype is not None and t.dtype != dtype:
        raise TypeError(f"{name} has dtype {t.dtype}, expected {dtype}")
    return t.detach().resolve_conj().resolve_neg().contiguous()


def _check_real(t: torch.Tensor, name: str) -> None:
    if t.dtype not in _REAL:
        raise TypeError(f"{name} must be float32 or float64, got {t.dtype}")


def _check_same_device(*ts: torch.Tensor) -> None:
    dev = ts[0].device
    for t in ts[1:]:
        if t.device != dev:
            raise ValueError(f"all tensors must be on one device, got {dev} and {t.device}")


def _check_theta(circuit: Circuit, theta: torch.Tensor) -> None:
    if theta.dim() != 1 or theta.shape[0] != circuit.n_params:
        raise ValueError(f"theta must have shape ({circuit.n_params},), got {tuple(theta.shape)}")


def embed(x: torch.Tensor, n_qubits: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Amplitude embedding: ``x[B, d] -> (psi0[B, 2**n] complex, norms[B])``.

    ``psi0 = x_pad / ||x||`` with zero padding at the end; the norm is computed without overflow. Rows that are
    all zero or hold a NaN give the zero vector and norm 0; rows with +-inf give their limit (+-1 at the
    infinite entries, normalised) and norm +inf. Raises ValueError/TypeError on bad shapes or dtypes.
    """
    _check_real(x, "x")
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D (batch, d), got shape {tuple(x.shape)}")
    n = int(n_qubits)
    if not 1 <= n <= MAX_QUBITS:
        raise ValueError(f"n_qubits must be in [1, {MAX_QUBITS}], got {n}")
    if x.shape[1] > 2**n:
        raise ValueError(f"input width {x.shape[1]} needs more than {n} qubits")
    mod = _module_for(x)
    xc = _prep(x, "x")
    psi0 = torch.empty(x.shape[0], 2**n, dtype=_COMPLEX[x.dtype], device=x.device)
    norms = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    mod.embed(n, xc, psi0, norms, _stream(x))
    return psi0, norms


def apply(circuit: Circuit, theta: torch.Tensor, psi: torch.Tensor, adjoint: bool = False) -> torch.Tensor:
    """Evolve statevectors: returns ``U(theta) psi`` (or ``U^dagger psi``) for ``psi[B, N]`` complex.

    ``theta[P]`` must have the real dtype matching ``psi`` (complex64 <-> float32). The input is not modified.
    """
    _check_theta(circuit, theta)
    if psi.dtype not in (torch.complex64, torch.complex128):
        raise TypeError(f"psi must be complex64 or complex128, got {psi.dtype}")
    real = torch.float32 if psi.dtype == torch.complex64 else torch.float64
    _check_same_device(theta, psi)
    mod = _module_for(psi)
    out = psi.detach().resolve_conj().resolve_neg().clone(memory_format=torch.contiguous_format)
    if out.dim() != 2 or out.shape[1] != circuit.dim:
        raise ValueError(f"psi must have shape (B, {circuit.dim}), got {tuple(psi.shape)}")
    mod.apply(circuit, _prep(theta, "theta", real), out, bool(adjoint), _stream(psi))
    return out


def readout(psi: torch.Tensor, kind: str = "z") -> torch.Tensor:
    """Measure statevectors ``psi[B, N]``: ``"z"`` gives ``<Z_q>`` (``[B, n]``), ``"probs"`` gives ``|psi|^2``."""
    if kind not in READOUTS:
        raise ValueError(f"unknown readout '{kind}' (expected one of {READOUTS})")
    if psi.dtype not in (torch.complex64, torch.complex128):
        raise TypeError(f"psi must be complex64 or complex128, got {psi.dtype}")
    if psi.dim() != 2 or psi.shape[1] < 2 or psi.shape[1] & (psi.shape[1] - 1):
        raise ValueError(f"psi must have shape (B, 2**n), got {tuple(psi.shape)}")
    n = psi.shape[1].bit_length() - 1
    real = torch.float32 if psi.dtype == torch.complex64 else torch.float64
    mod = _module_for(psi)
    feats = torch.empty(psi.shape[0], n if kind == "z" else 2**n, dtype=real, device=psi.device)
    mod.readout(n, _prep(psi, "psi"), kind, feats, _stream(psi))
    return feats


def vjp(circuit: Circuit, theta: torch.Tensor, psi: torch.Tensor, grad_features: torch.Tensor,
        kind: str = "z") -> Tuple[torch.Tensor, torch.Tensor]:
    """Adjoint-method VJP of ``readout(U(theta) psi0)`` given the final states ``psi[B, N]``.

    Returns ``(grad_theta[P], grad_psi0[B, N])``: ``grad_theta`` summed over the batch; ``grad_psi0`` the
    gradient with respect to a real-valued initial state. Memory: a few state buffers per thread.
    """
    _check_theta(circuit, theta)
    if kind not in READOUTS:
        raise ValueError(f"unknown readout '{kind}' (expected one of {READOUTS})")
    if psi.dtype not in (torch.complex64, torch.complex128):
        raise TypeError(f"psi must be complex64 or complex128, got {psi.dtype}")
    if psi.dim() != 2 or psi.shape[1] != circuit.dim:
        raise ValueError(f"psi must have shape (B, {circuit.dim}), got {tuple(psi.shape)}")
    real = torch.float32 if psi.dtype == torch.complex64 else torch.float64
    _check_same_device(theta, psi, grad_features)
    mod = _module_for(psi)
    grad_theta = torch.empty(circuit.n_params, dtype=real, device=psi.device)
    grad_psi0 = torch.empty(psi.shape[0], circuit.dim, dtype=real, device=psi.device)
    mod.vjp(circuit, _prep(theta, "theta", real), _prep(psi, "psi"),
                         _prep(grad_features, "grad_features", real), kind, grad_theta, grad_psi0, _stream(psi))
    return grad_theta, grad_psi0


def circuit_matrix(circuit: Circuit, theta: torch.Tensor) -> torch.Tensor:
    """The circuit unitary ``U[N, N]`` (complex), ``U[i, j] = <i|U(theta)|j>``."""
    _check_real(theta, "theta")
    _check_theta(circuit, theta)
    mod = _module_for(theta)
    u = torch.empty(circuit.dim, circuit.dim, dtype=_COMPLEX[theta.dtype], device=theta.device)
    mod.circuit_matrix(circuit, _prep(theta, "theta"), u, _stream(theta))
    return u


def _check_forward_args(circuit: Circuit, theta: torch.Tensor, x: torch.Tensor, kind: str) -> None:
    if kind not in READOUTS:
        raise ValueError(f"unknown readout '{kind}' (expected one of {READOUTS})")
    _check_real(x, "x")
    _check_real(theta, "theta")
    if theta.dtype != x.dtype:
        raise TypeError(f"theta ({theta.dtype}) and x ({x.dtype}) must have the same dtype")
    _check_theta(circuit, theta)
    _check_same_device(theta, x)
    _module_for(x)  # an unsupported device fails here, before anything is allocated on it
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D (batch, d), got shape {tuple(x.shape)}")
    if x.shape[1] < 1 or x.shape[1] > circuit.dim:
        raise ValueError(f"input width {x.shape[1]} does not fit {circuit.n_qubits} qubits (max {circuit.dim})")


def n_features(circuit: Circuit, kind: str) -> int:
    """Readout width ``F``: ``n_qubits`` for ``"z"``, ``2**n_qubits`` for ``"probs"``."""
    return circuit.n_qubits if kind == "z" else circuit.dim


def forward_features(circuit: Circuit, theta: torch.Tensor, x: torch.Tensor, kind: str = "z",
                     path: str = "auto") -> Tuple[torch.Tensor, torch.Tensor]:
    """Fused QAA forward: ``x[B, d] -> (features[B, F], norms[B])`` = readout(U(theta) embed(x)), ||x||.

    ``path``: ``"state"`` runs every gate on each state (OpenMP over the batch, state kept in cache);
    ``"dense"`` builds ``U`` once and applies it as one GEMM; ``"auto"`` picks ``dense`` when
    :func:`prefer_dense` says it is cheaper (deep circuits, large batches). No gradient is tracked here (see :class:`qaa.function.QAAFunction`).
    """
    _check_forward_args(circuit, theta, x, kind)
    if path not in ("auto", "state", "dense"):
        raise ValueError(f"path must be 'auto', 'state' or 'dense', got {path!r}")
    B = x.shape[0]
    if path == "auto":
        path = "dense" if prefer_dense(circuit, B, x.device.type) else "state"
    if path == "dense" and B > 0:
        return _forward_dense(circuit, theta, x, kind)
    feats = torch.empty(B, n_features(circuit, kind), dtype=x.dtype, device=x.device)
    norms = torch.empty(B, dtype=x.dtype, device=x.device)
    if B:
        _module_for(x).forward(circuit, _prep(theta, "theta"), _prep(x, "x"), kind, feats, norms, _stream(x))
    return feats, norms


def prefer_dense(circuit: Circuit, batch: int, device_type: str = "cpu") -> bool:
    """Whether the dense-matrix path is expected to be faster for a gradient-free forward of ``batch`` states
    on a device of type ``device_type`` (``"cpu"`` or ``"cuda"``)."""
    N = circuit.dim
    if batch <= DENSE_BATCH_FACTOR * N:  # cheap test first: this runs on every gradient-free forward
        return False
    rotations = sum(1 for g in circuit.gates if g[3] >= 0)
    speedup = DENSE_GEMM_SPEEDUP_CUDA if device_type == "cuda" else DENSE_GEMM_SPEEDUP
    return 3.0 * rotations * N * speedup > 2.0 * N * N


def _forward_dense(circuit: Circuit, theta: torch.Tensor, x: torch.Tensor, kind: str):
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
    return readout(psi, kind), norms  # the engine's readout (one <Z> / probs definition, qaa/readout.hpp)


def backward_features(circuit: Circuit, theta: torch.Tensor, x: torch.Tensor, grad_features: torch.Tensor,
                      grad_norms: Optional[torch.Tensor] = None, kind: str = "z"
                      ) -> Tuple[torch.Tensor, torch.Tensor]:
    """VJP of :func:`forward_features` by the adjoint method (states recomputed, never stored).

    Returns ``(grad_theta[P], grad_x[B, d])``; ``grad_theta`` is summed over the batch. Rows without a
    state (zero or NaN) get zero gradient.
    """
    _check_forward_args(circuit, theta, x, kind)
    B, d = x.shape
    gf = _prep(grad_features, "grad_features", x.dtype)
    if tuple(gf.shape) != (B, n_features(circuit, kind)):
        raise ValueError(f"grad_features must have shape ({B}, {n_features(circuit, kind)}), got {tuple(gf.shape)}")
    gn = None if grad_norms is None else _prep(grad_norms, "grad_norms", x.dtype)
    grad_theta = torch.zeros(circuit.n_params, dtype=x.dtype, device=x.device)
    grad_x = torch.empty(B, d, dtype=x.dtype, device=x.device)
    if B:
        _module_for(x).backward(circuit, _prep(theta, "theta"), _prep(x, "x"), kind, gf, gn, grad_theta, grad_x,
                                _stream(x))
    return grad_theta, grad_x


def set_num_threads(n: int) -> None:
    """Threads used by the CPU engine (OpenMP); ``n <= 0`` restores the default (``OMP_NUM_THREADS``)."""
    _engine_cpu.set_num_threads(int(n))


def get_num_threads() -> int:
    """Threads used by the CPU engine."""
    return int(_engine_cpu.get_num_threads())
