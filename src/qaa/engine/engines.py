"""Which statevector engines this installation of qaa holds."""
from __future__ import annotations

from typing import Dict

__all__ = ["engines"]


def engines() -> Dict[str, dict]:
    """Report the engines present, without printing anything and without touching a GPU beyond a device count.

    Returns:
        A dict with one entry per engine, each a dict with ``built`` (bool), ``usable`` (bool: built, loadable
        and, for CUDA engines, at least one device visible) and ``detail`` (str: version or the reason it is
        not usable):

        * ``"cpu"``: the C++/OpenMP engine (always built);
        * ``"cuda-fused"``: the fused CUDA kernel (circuits of up to 13 qubits), built whenever nvcc was found
          at build time;
        * ``"custatevec"``: the per-gate cuStateVec engine (general circuits, larger n), built when cuStateVec
          was found at build time.
    """
    out = {"cpu": {"built": True, "usable": True, "detail": "OpenMP C++ engine"}}
    try:
        from .cuda import _cuda_module

        mod = _cuda_module()
        info = dict(mod.build_info()) if hasattr(mod, "build_info") else {"fused": "", "custatevec": "yes"}
        n_dev = int(mod.device_count())
        no_dev = None if n_dev > 0 else "no CUDA device visible"
        arch = f"nvcc {info.get('nvcc', '?')}, sm {info.get('cuda_architectures', '?')}"
        fused = info.get("fused") == "yes"
        cusv = info.get("custatevec", "")
        out["cuda-fused"] = {"built": fused, "usable": fused and no_dev is None,
                             "detail": (no_dev or arch) if fused else "not built"}
        out["custatevec"] = {"built": bool(cusv), "usable": bool(cusv) and no_dev is None,
                             "detail": (no_dev or f"cuStateVec {cusv}") if cusv else
                             "not built (cuStateVec was not found at build time, or QAA_CUSTATEVEC=OFF)"}
    except RuntimeError as exc:  # module not built or its libraries not loadable
        for name in ("cuda-fused", "custatevec"):
            out[name] = {"built": False, "usable": False, "detail": str(exc)}
    return out
