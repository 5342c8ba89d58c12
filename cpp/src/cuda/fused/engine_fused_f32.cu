// The fused CUDA engine's float32 kernels (engine_fused_impl.cuh; the rest is in engine_fused.cu).
#include "engine_fused_impl.cuh"

namespace qaa {
template std::unique_ptr<Backend<float>> make_fused_cuda_backend<float>(std::unique_ptr<Backend<float>>);
}  // namespace qaa
