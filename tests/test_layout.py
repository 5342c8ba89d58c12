"""The package's shape: each concern written once, the layers importing only downwards, nothing outside the
repository cited. These read the source tree, so they fail when a second copy of a helper appears."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "qaa"


def _sources():
    return {p.relative_to(SRC).as_posix(): p.read_text(encoding="utf-8") for p in SRC.rglob("*.py")}


def _defining(pattern: str) -> list:
    rx = re.compile(pattern, re.M)
    return sorted(name for name, text in _sources().items() if rx.search(text))


@pytest.mark.parametrize("pattern, where", [
    (r"^def (atomic_write_files|_write_files_atomically|_atomic_write\w*)\(", ["tuners/save_load.py"]),
    (r"tempfile\.mkstemp\(", ["tuners/save_load.py"]),
    (r"^def (set_submodule|_set_submodule)\(", ["tuners/utils.py"]),
    (r"setattr\(parent,", ["tuners/utils.py"]),
    (r"^def (matches_target|module_matches)\(", ["tuners/utils.py"]),
    (r"re\.fullmatch\(", ["tuners/utils.py"]),
    (r"^def (get_nb_trainable_parameters|trainable_parameter_summary)\(", ["tuners/utils.py"]),
    (r"^def print_trainable_parameters\(", ["tuners/utils.py"]),
    (r"^def (layer_dims|linear_dims)\(", ["tuners/utils.py"]),
    (r"^def (tensors_digest|_tensors_digest)\(", ["tuners/save_load.py"]),
])
def test_each_helper_is_written_once(pattern, where):
    assert _defining(pattern) == where


def test_no_literal_qubit_limit():
    assert _defining(r"MAX_QUBITS\s*(:\s*int\s*)?=\s*\d") == []
    assert _defining(r"MAX_QUBITS\s*(:\s*int\s*)?=\s*int\(_engine_cpu\.MAX_QUBITS\)") == ["engine/core.py"]


def test_library_layers_never_import_the_experiments():
    for name, text in _sources().items():
        if name.startswith(("engine/", "tuners/")):
            assert not re.search(r"(from|import)\s+(qaa\.experiments|\.\.experiments|\.\.\.experiments)", text), name


def test_no_file_outside_the_repository_is_cited():
    texts = [p for p in ROOT.rglob("*") if p.is_file() and p.suffix in {".py", ".md", ".hpp", ".cpp", ".cu", ".cuh",
                                                                        ".sh", ".txt", ".toml", ".cmake"}
             and not any(part in {".git", ".venv", "build", "runs", "__pycache__"} for part in p.parts)
             and p != Path(__file__).resolve()]
    for p in texts:
        text = p.read_text(encoding="utf-8", errors="replace")
        assert "DESIGN.md" not in text and "GPU-NOTES" not in text and "../shared" not in text, p
