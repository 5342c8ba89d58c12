"""Write type stubs (.pyi) for qaa's compiled modules, next to them.

Usage: stubgen.py QAA_DIR MODULE [MODULE ...]

QAA_DIR is the folder holding the compiled modules (the install tree's qaa/). Each MODULE (e.g. _engine_cpu)
is loaded from there as qaa.MODULE under a bare `qaa` package object, so qaa's Python files (and torch) are
not imported; modules are loaded in the order given (qaa._circuit before the backends that import it). A
module whose file is absent is skipped; one whose file is present but fails to load (the CUDA module without
its cuStateVec library) is skipped with a note. Stubs come from nanobind's stubgen.
"""
import importlib.util
import sys
import types
from pathlib import Path

from nanobind.stubgen import StubGen


def main() -> int:
    qaa_dir = Path(sys.argv[1])
    pkg = types.ModuleType("qaa")
    pkg.__path__ = [str(qaa_dir)]
    sys.modules["qaa"] = pkg
    for name in sys.argv[2:]:
        files = sorted(qaa_dir.glob(name + ".*.so")) + sorted(qaa_dir.glob(name + ".*.pyd"))
        if not files:
            continue
        full = "qaa." + name
        spec = importlib.util.spec_from_file_location(full, files[0])
        try:
            mod = importlib.util.module_from_spec(spec)  # loads the shared library
            sys.modules[full] = mod
            spec.loader.exec_module(mod)
        except ImportError as e:
            sys.modules.pop(full, None)
            print(f"qaa stubgen: {full} not loadable here, no stub written ({e})")
            continue
        setattr(pkg, name, mod)
        sg = StubGen(mod, quiet=True)
        sg.put(mod)
        (qaa_dir / (name + ".pyi")).write_text(sg.get())
        print(f"qaa stubgen: wrote {qaa_dir / (name + '.pyi')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
