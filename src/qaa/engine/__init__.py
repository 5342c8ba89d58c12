"""Torch-facing API of the qaa statevector engine (the compiled C++ engine, on the CPU or CUDA).

- :mod:`.core`: the compiled modules, constants read from them (``MAX_QUBITS``, ``READOUTS``), circuits,
  device dispatch and the checks every call shares;
- :mod:`.state`: the state-level API (embed, apply, readout, vjp, circuit_matrix);
- :mod:`.fused`: the token-level training API (features and their adjoint VJP, states never stored);
- :mod:`.dense`: the dense-matrix path for gradient-free forwards;
- :mod:`.function`: the autograd function on top of :mod:`.fused`;
- :mod:`.ops`: :mod:`.fused` as torch custom operators (``qaa::features``, ``qaa::features_backward``), what
  :class:`qaa.QAALayer` runs, traceable by ``torch.compile``;
- :mod:`.cuda`: the loader of the optional CUDA engine.

Every function takes and returns :class:`torch.Tensor` objects and dispatches on the tensors' device.
"""
from .core import (MAX_QUBITS, READOUTS, Circuit, ansatz_names, build_circuit, get_num_threads, n_features,
                   qubits_for_dim, set_num_threads)
from .dense import DENSE_BATCH_FACTOR, DENSE_GEMM_SPEEDUP, prefer_dense
from .function import QAAFunction, qaa_features
from .fused import backward_features, forward_features
from .ops import cached_circuit, qaa_features_op
from .state import apply, circuit_matrix, embed, readout, vjp

__all__ = [
    "MAX_QUBITS", "READOUTS", "Circuit", "ansatz_names", "build_circuit", "qubits_for_dim", "n_features",
    "set_num_threads", "get_num_threads", "embed", "apply", "readout", "vjp", "circuit_matrix",
    "forward_features", "backward_features", "prefer_dense", "DENSE_BATCH_FACTOR", "DENSE_GEMM_SPEEDUP",
    "QAAFunction", "qaa_features", "qaa_features_op", "cached_circuit",
]
