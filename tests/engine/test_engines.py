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
