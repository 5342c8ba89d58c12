// The fused CUDA engine of qaa: each state stays on chip (registers and shared memory) through all gates of a
// call. Plain C++ header (no CUDA headers), so bindings and tests compile with the host compiler alone.
#pragma once

#include <memory>
#include <string>

#include "qaa/backend.hpp"

namespace qaa {

/// Which engine the fused backend uses for a call.
///   kAuto      forward/backward: the fused kernel when the circuit fits its plan (n <= 13, see
///              fused_plan.hpp), otherwise the fallback backend (cuStateVec per-gate), or std::invalid_argument
///              when there is none; state-level calls (apply, vjp, circuit_matrix): the fallback when there is
///              one, else the fused kernel;
///   kFused     the fused kernel only (std::invalid_argument when the circuit does not fit);
///   kFallback  the fallback backend only (std::invalid_argument when there is none).
enum class FusedMode : int { kAuto = 0, kFused = 1, kFallback = 2 };
void set_fused_mode(FusedMode m);
FusedMode get_fused_mode();

/// The fused CUDA backend for T = float or double, on CUDA device memory (same contract as
/// make_cuda_backend in ../engine_cuda.hpp: the device of the call's main array is made current, work is
/// queued on ExecContext::stream, scratch comes from ExecContext::workspace or a stream-ordered allocation).
/// `fallback` (may be null) serves the calls the fused kernel cannot (larger circuits), and every call when
/// the mode is kFallback. Errors: std::invalid_argument for host pointers, arrays on another device than
/// the call's main array, a too small workspace or an unsupported circuit without fallback;
/// std::runtime_error with the CUDA error name for failed runtime calls.
template <typename T>
std::unique_ptr<Backend<T>> make_fused_cuda_backend(std::unique_ptr<Backend<T>> fallback);

/// Number of CUDA devices visible (0 without device or driver); never throws. Does not need cuStateVec.
int fused_cuda_device_count();

}  // namespace qaa
