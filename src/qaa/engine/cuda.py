"""Loader of the CUDA statevector engine ``qaa._engine_cuda`` (cuStateVec).

The CUDA module is optional and imported lazily, so CPU-only machines never load CUDA libraries. It links
``libcustatevec.so.1`` from the ``custatevec-cu13`` wheel (found through its RPATH,
``site-packages/cuquantum/lib``; cuStateVec finds cuBLAS from the ``nvidia-cublas`` wheel the same way). When
the wheels live elsewhere (another site-packages folder, a user install), :func:`cuda_engine` preloads those
libraries with ``ctypes`` (``RTLD_GLOBAL``) before importing the module.

Build and install with the CUDA engine::

    pip install ".[cuda]" --no-build-isolation -C cmake.define.QAA_CUDA=ON
"""
from __future__ import annotations

import ctypes
import importlib
import os
import site
import sys
import threading
from typing import List, Optional

__all__ = ["cuda_engine", "cuda_available", "cuda_unavailable_reason", "workspace_for"]

_INSTALL_HINT = (
    "install with `pip install \".[cuda]\" --no-build-isolation -C cmake.define.QAA_CUDA=ON` "
    "(needs nvcc and the custatevec-cu13 wheel at build time)"
)

# Shared libraries the CUDA module needs, relative to a site-packages folder, in load order.
_WHEEL_LIBS = (
    os.path.join("nvidia", "cu13", "lib", "libcublasLt.so.13"),
    os.path.join("nvidia", "cu13", "lib", "libcublas.so.13"),
    os.path.join("cuquantum", "lib", "libcustatevec.so.1"),
)

_lock = threading.Lock()
_engine = None
_error: Optional[str] = None
_preloaded: List[ctypes.CDLL] = []


def _site_dirs() -> List[str]:
    dirs: List[str] = []
    try:
        dirs += site.getsitepackages()
    except AttributeError:  # some virtualenv layouts
        pass
    try:
        dirs.append(site.getusersitepackages())
    except AttributeError:
        pass
    dirs += [p for p in sys.path if p]
    seen, out = set(), []
    for d in dirs:
        d = os.path.abspath(d)
        if d not in seen and os.path.isdir(d):
            seen.add(d)
            out.append(d)
    return out


def _preload_wheel_libraries() -> List[str]:
    """Load cuBLAS and cuStateVec from the first site-packages folder that has each; returns what was loaded."""
    loaded = []
    for rel in _WHEEL_LIBS:
        for d in _site_dirs():
            path = os.path.join(d, rel)
            if os.path.isfile(path):
                try:
                    _preloaded.append(ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL))
                    loaded.append(path)
                except OSError:
                    continue
                break
    return loaded


def cuda_engine():
    """Return the ``qaa._engine_cuda`` extension module, importing it on first use (thread-safe).

    The module has the same functions as ``qaa._engine_cpu`` (``embed``, ``apply``, ``readout``, ``vjp``,
    ``circuit_matrix``, ``forward``, ``backward``, ``workspace_size``) for CUDA tensors, plus
    ``device_count()``; every call takes ``stream`` (``torch.cuda.current_stream(dev).cuda_stream``) and an
    optional ``workspace`` (uint8 CUDA tensor, see :func:`workspace_for`).

    Raises:
        RuntimeError: the CUDA engine was not built into this installation, or its libraries (cuStateVec,
            cuBLAS) cannot be loaded. The message says which and how to install it.
    """
    global _engine, _error
    if _engine is not None:
        return _engine
    with _lock:
        if _engine is not None:
            return _engine
        if _error is not None:
            raise RuntimeError(_error)
        try:
            importlib.import_module("qaa._engine_cpu")  # registers the shared Circuit type first
        except ImportError:
            pass
        try:
            _engine = importlib.import_module("qaa._engine_cuda")
            return _engine
        except ModuleNotFoundError as exc:
            if exc.name not in ("qaa._engine_cuda", "qaa"):
                raise
            _error = f"qaa: the CUDA engine is not built (no module qaa._engine_cuda); {_INSTALL_HINT}"
            raise RuntimeError(_error) from None
        except ImportError as first:
            # Usually: libcustatevec.so.1 / libcublas.so.13 not found by the module's RPATH. Preload the wheels'
            # libraries from any site-packages folder and try once more.
            loaded = _preload_wheel_libraries()
            try:
                _engine = importlib.import_module("qaa._engine_cuda")
                return _engine
            except ImportError as second:
                _error = (
                    "qaa: the CUDA engine qaa._engine_cuda is installed but cannot be loaded: the cuStateVec "
                    f"library was not found or does not load ({second}; first attempt: {first}; preloaded: "
                    f"{loaded or 'nothing found'}). Install the runtime libraries with "
                    "`pip install custatevec-cu13 nvidia-cublas` (or `pip install \".[cuda]\"`), or "
                    f"{_INSTALL_HINT}"
                )
                raise RuntimeError(_error) from None


def cuda_unavailable_reason() -> Optional[str]:
    """``None`` when the CUDA engine is importable and sees at least one device, else a one-line reason."""
    try:
        eng = cuda_engine()
    except RuntimeError as exc:
        return str(exc)
    if eng.device_count() < 1:
        return "qaa: the CUDA engine is built but no CUDA device is visible (or the driver is missing)"
    return None


def cuda_available() -> bool:
    """True when the CUDA engine is importable and at least one CUDA device is visible."""
    return cuda_unavailable_reason() is None


def workspace_for(op: str, circuit, batch: int, dtype, device):
    """Allocate (through torch's caching allocator) the scratch one CUDA engine call needs.

    Args:
        op: ``"embed"``, ``"apply"``, ``"readout"``, ``"vjp"``, ``"forward"``, ``"backward"`` or
            ``"circuit_matrix"``.
        circuit: the ``Circuit`` of the call; batch: its batch size B.
        dtype: ``torch.float32`` or ``torch.float64`` (the call's real dtype); device: the CUDA device.

    Returns:
        A 1-D ``torch.uint8`` CUDA tensor to pass as ``workspace=``, or ``None`` when the call needs none.
    Raises:
        RuntimeError: the CUDA engine is unavailable (see :func:`cuda_engine`); ValueError: unknown op/dtype.
    """
    import torch

    names = {torch.float32: "float32", torch.float64: "float64"}
    if dtype not in names:
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    nbytes = int(cuda_engine().workspace_size(op, circuit, int(batch), names[dtype]))
    if nbytes == 0:
        return None
    return torch.empty(nbytes, dtype=torch.uint8, device=device)
