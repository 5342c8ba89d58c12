"""Loader of the CUDA statevector engines ``qaa._engine_cuda`` (fused kernel; cuStateVec when built in).

The CUDA module is optional and imported lazily, so CPU-only machines never load CUDA libraries. It links
``libcustatevec.so.1`` from the ``custatevec-cu13`` wheel (found through its RPATH,
``site-packages/cuquantum/lib``; cuStateVec finds cuBLAS from the ``nvidia-cublas`` wheel the same way). When
the wheels live elsewhere (another site-packages folder, a user install), :func:`cuda_engine` preloads those
libraries with ``ctypes`` (``RTLD_GLOBAL``) before importing the module.

``pip install .`` builds the CUDA engines whenever nvcc is found (the cuStateVec engine too when the
``custatevec-cu13`` wheel is installed, e.g. ``pip install ".[cuda]" --no-build-isolation``).

:func:`cuda_engine` returns the module behind a thin torch adapter: every tensor argument must be on the
device of the call's main array (``x``, ``psi`` or ``u``; ValueError otherwise), and calls that need scratch
memory get it from torch's caching allocator on the current stream when no ``workspace=`` is passed.
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
    "reinstall with nvcc on PATH: `pip install \".[cuda]\" --no-build-isolation` builds the CUDA engines "
    "(add -C cmake.define.QAA_CUDA=ON to stop with an error when nvcc is missing)"
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


# Calls that need scratch: the argument giving the batch size (its dtype gives the real dtype).
_SCRATCH = {"apply": "psi", "vjp": "psi", "forward": "x", "backward": "x", "circuit_matrix": "u"}
_ARG_NAMES = {
    "embed": ("n_qubits", "x", "psi0", "norms"),
    "apply": ("circuit", "theta", "psi", "adjoint"),
    "readout": ("n_qubits", "psi", "readout", "features"),
    "vjp": ("circuit", "theta", "psi", "grad_features", "readout", "grad_theta", "grad_psi0"),
    "circuit_matrix": ("circuit", "theta", "u"),
    "forward": ("circuit", "theta", "x", "readout", "features", "norms"),
    "backward": ("circuit", "theta", "x", "readout", "grad_features", "grad_norms", "grad_theta", "grad_x"),
}


class _TorchAdapter:
    """The ``qaa._engine_cuda`` module with torch plumbing around its engine calls (see the module docstring).

    Other attributes are the module's own. Raises ValueError when a tensor argument is not on the device of the
    call's main array (``x``, ``psi`` or ``u``); everything else as the module raises.
    """

    def __init__(self, module):
        self._module = module

    def __getattr__(self, name):
        fn = getattr(self._module, name)
        if name not in _ARG_NAMES:
            return fn
        return lambda *args, **kwargs: self._call(name, fn, args, kwargs)

    def _call(self, name, fn, args, kwargs):
        import torch

        named = dict(zip(_ARG_NAMES[name], args))
        named.update({k: v for k, v in kwargs.items() if k in _ARG_NAMES[name]})
        tensors = [(k, v) for k, v in named.items() if isinstance(v, torch.Tensor)]
        if tensors:
            lead = next((k for k in ("x", "psi", "u") if isinstance(named.get(k), torch.Tensor)), tensors[0][0])
            main = named[lead].device
            for k, v in tensors:
                if v.device != main:
                    raise ValueError(f"qaa CUDA engine: {name}: {k} is on {v.device}, {lead} on {main}; every "
                                     f"tensor argument must be on {lead}'s device")
        key = _SCRATCH.get(name)
        t = named.get(key) if key else None
        if isinstance(t, torch.Tensor) and t.device.type == "cuda" and kwargs.get("workspace") is None:
            real = t.real.dtype if t.is_complex() else t.dtype
            if real in (torch.float32, torch.float64) and t.dim() >= 1:
                kwargs = dict(kwargs)
                kwargs["workspace"] = workspace_for(name, named["circuit"], int(t.shape[0]), real, t.device)
        return fn(*args, **kwargs)

    def __repr__(self):
        return f"<qaa CUDA engine {self._module.__name__} (torch adapter)>"


_NO_DEVICE = "qaa: the CUDA engine is built but no CUDA device is visible (or the driver is missing)"
_has_device = False


def cuda_engine():
    """Return the ``qaa._engine_cuda`` extension module (behind the torch adapter), importing it on first use
    (thread-safe).

    The module has the same functions as ``qaa._engine_cpu`` (``embed``, ``apply``, ``readout``, ``vjp``,
    ``circuit_matrix``, ``forward``, ``backward``, ``workspace_size``) for CUDA tensors, plus
    ``device_count()``, ``build_info()`` and ``set_engine`` / ``get_engine``; every call takes ``stream``
    (``torch.cuda.current_stream(dev).cuda_stream``) and an optional ``workspace`` (uint8 CUDA tensor, see
    :func:`workspace_for`; allocated from torch when omitted).

    Raises:
        RuntimeError: the CUDA engine was not built into this installation, its libraries cannot be loaded, or
            no CUDA device is visible. The message says which (and how to install it).
    """
    global _has_device
    eng = _cuda_module()
    if not _has_device:
        if eng.device_count() < 1:
            raise RuntimeError(_NO_DEVICE)
        _has_device = True
    return eng


def _cuda_module():
    """The loaded module behind the torch adapter, whether or not a device is visible (see cuda_engine)."""
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
            _engine = _TorchAdapter(importlib.import_module("qaa._engine_cuda"))
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
                _engine = _TorchAdapter(importlib.import_module("qaa._engine_cuda"))
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
        cuda_engine()
    except RuntimeError as exc:
        return str(exc)
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
    nbytes = int(_cuda_module().workspace_size(op, circuit, int(batch), names[dtype]))
    if nbytes == 0:
        return None
    # torch's caching allocator, on the current stream of `device`: reused across calls, freed stream-ordered,
    # 512-byte aligned (the engine asks for 256).
    return torch.empty(nbytes, dtype=torch.uint8, device=device)
