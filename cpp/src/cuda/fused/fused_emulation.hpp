// Host emulation of the fused CUDA kernel: the kernel's per-state program (fused_state.hpp) run in plain C++
// over the lanes of each group, with the kernel's launch shape, frames, transposes, folded CNOT maps, adjoint
// order and fixed-order reductions. It implements qaa::Backend<T> on host memory so the shared backend checks
// (cpp/tests/backend_test_suite.hpp) run on it without a GPU. Slow (one core, no SIMD): a test vehicle, not an
// engine.
#pragma once

#include <memory>

#include "qaa/backend.hpp"

namespace qaa {

/// The emulated fused backend for T = float or double. Circuits must fit the fused plan (at most 13 qubits,
/// see fused/fused_plan.hpp); otherwise calls throw std::invalid_argument.
template <typename T>
std::unique_ptr<Backend<T>> make_fused_emulation_backend();

}  // namespace qaa
