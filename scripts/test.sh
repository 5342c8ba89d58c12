#!/usr/bin/env bash
# Run every test: C++ unit tests (CTest; CPU backend, host emulation of the fused CUDA kernel, the CUDA engines
# compiled and their tests skipped without a device, and the CPU and emulation tests again under
# AddressSanitizer + UndefinedBehaviorSanitizer), then pytest.
#   QAA_VENV       the environment made by scripts/setup.sh (default .venv)
#   QAA_TEST_SLOW  1 to include tests marked slow (real-model training runs)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${QAA_VENV:-.venv}"
VENV="$(cd "$VENV" && pwd)"  # absolute: CMake runs tools from its build folders
PY="$VENV/bin/python"
JOBS="${QAA_JOBS:-2}"
CMAKE="$VENV/bin/cmake"; [ -x "$CMAKE" ] || CMAKE=cmake
CTEST="$VENV/bin/ctest"; [ -x "$CTEST" ] || CTEST=ctest

echo "== C++ tests (CPU backend, fused-kernel emulation; CUDA engines built when nvcc is found) =="
"$CMAKE" -S . -B build/tests -G Ninja -DCMAKE_MAKE_PROGRAM="$VENV/bin/ninja" -DQAA_BUILD_TESTS=ON \
  -DQAA_CUDA="${QAA_CUDA:-AUTO}" -DPython_EXECUTABLE="$PY" >/dev/null
"$CMAKE" --build build/tests -j "$JOBS"
"$CTEST" --test-dir build/tests --output-on-failure -j "$JOBS"

echo "== C++ tests under AddressSanitizer and UndefinedBehaviorSanitizer (CPU backend, fused-kernel emulation) =="
"$CMAKE" -S . -B build/asan -G Ninja -DCMAKE_MAKE_PROGRAM="$VENV/bin/ninja" -DQAA_BUILD_TESTS=ON -DQAA_CUDA=OFF \
  -DQAA_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
"$CMAKE" --build build/asan -j "$JOBS"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 "$CTEST" --test-dir build/asan --output-on-failure -j "$JOBS"

echo "== pytest (on an empty qaa cache: nothing cached on this machine may make the suite pass) =="
MARK="not slow"; [ "${QAA_TEST_SLOW:-0}" = "1" ] && MARK=""
EMPTY_CACHE="$(mktemp -d)"
trap 'rm -rf "$EMPTY_CACHE"' EXIT
QAA_CACHE_DIR="${QAA_TEST_CACHE_DIR:-$EMPTY_CACHE}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
  "$PY" -m pytest -q -m "$MARK" tests
