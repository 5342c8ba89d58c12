"""qaa.engines(): which engines an installation holds (runs on every machine)."""
from __future__ import annotations

import qaa


def test_engines_reports_every_engine_without_printing(capsys):
    info = qaa.engines()
    assert set(info) == {"cpu", "cuda-fused", "custatevec"}
    assert info["cpu"]["built"] and info["cpu"]["usable"]
    for name, entry in info.items():
        assert set(entry) == {"built", "usable", "detail"}, name
        assert isinstance(entry["detail"], str) and entry["detail"], name
        assert not entry["usable"] or entry["built"], name
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_import_prints_nothing():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", "import qaa"], capture_output=True, text=True, check=True)
    assert r.stdout == "" and r.stderr == ""


def _custatevec_header() -> bool:
    """cuStateVec's header from the custatevec wheel (site-packages/cuquantum/include) is installed."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("cuquantum")
    roots = list(spec.submodule_search_locations or []) if spec else []
    return any(os.path.isfile(os.path.join(r, "include", "custatevec.h")) for r in roots)


def test_the_build_holds_the_cuda_engines_when_the_toolkit_and_custatevec_are_installed():
    """With nvcc on the PATH and the [cuda] extra installed, the package must have been built with both CUDA
    engines (they compile and link without a device); a build configured before cuStateVec was installed is
    caught here. Skipped where either is missing or the build opted out (QAA_CUDA=OFF)."""
    import os
    import shutil

    import pytest

    if os.environ.get("QAA_CUDA", "AUTO").upper() == "OFF":
        pytest.skip("QAA_CUDA=OFF: the CUDA engines were not asked for")
    if shutil.which("nvcc") is None or not _custatevec_header():
        pytest.skip("nvcc or the custatevec wheel is missing: the CUDA engines cannot be built here")
    info = qaa.engines()
    assert info["cuda-fused"]["built"], info["cuda-fused"]["detail"]
    assert info["custatevec"]["built"], info["custatevec"]["detail"]
