// The fused CUDA engine (see engine_fused.hpp, README.md in this folder): float64 kernels and the process-wide
// functions; engine_fused_f32.cu holds the float32 kernels (engine_fused_impl.cuh is shared).
#include "engine_fused_impl.cuh"

namespace qaa {
namespace fused {
std::atomic<int> g_mode{static_cast<int>(FusedMode::kAuto)};
}  // namespace fused

void set_fused_mode(FusedMode m) { fused::g_mode.store(static_cast<int>(m)); }
FusedMode get_fused_mode() { return static_cast<FusedMode>(fused::g_mode.load()); }

template std::unique_ptr<Backend<double>> make_fused_cuda_backend<double>(std::unique_ptr<Backend<double>>);

int fused_cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

}  // namespace qaa
