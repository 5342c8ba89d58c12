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


def _imports_package_root(name: str, text: str) -> list:
    """Lines of module ``name`` (relative to src/qaa) that import the package's ``__init__`` (``import qaa``,
    ``from qaa import x``, or a relative ``from .. import x`` reaching the root with ``x`` not a subpackage)."""
    depth = name.count("/")  # 0 for qaa/x.py
    subpackages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in SRC.glob("*.py")} | subpackages | {"_engine_cpu", "_engine_cuda", "_engine_custatevec"}
    bad = []
    for line in text.splitlines():
        s = line.strip()
        if re.match(r"(import qaa\s*$|import qaa\s+as|from qaa import)", s):
            bad.append(s)
            continue
        m = re.match(r"from (\.+) import (.+)", s)
        if m and len(m.group(1)) == depth + 1:
            names = [n.strip().split(" as ")[0] for n in m.group(2).strip("()").split(",") if n.strip()]
            if any(n not in modules for n in names):
                bad.append(s)
    return bad


def test_nothing_below_the_package_imports_its_init():
    """The package's __init__ sits on top: modules below import what they use from the layer that defines it
    (the version from qaa/_version.py), never the package itself."""
    found = {name: _imports_package_root(name, text) for name, text in _sources().items() if name != "__init__.py"}
    assert {k: v for k, v in found.items() if v} == {}


def test_the_version_is_written_once():
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert re.search(rf'^__version__ = "{re.escape(version)}"$', (SRC / "_version.py").read_text(), re.M)
    assert _defining(r"^__version__\s*=") == ["_version.py"]


def test_every_public_name_is_documented_in_the_design():
    import qaa

    design = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    missing = [n for n in qaa.__all__ if n != "__version__" and f"`{n}`" not in design and f"`{n}(" not in design]
    assert missing == []
    for name in qaa.__all__:
        assert getattr(qaa, name) is not None, name
