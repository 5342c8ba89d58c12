// What the device kernels of the CUDA engines share: the amplitude type, the launch sizes and the block-wide
// reductions.
//
// Every kernel runs on the stream it is launched on and never synchronises with the host. Reductions are
// deterministic: fixed launch geometry, fixed combination order, double-precision accumulators.
#pragma once

#include <cuda_runtime.h>

#include "qaa/host_device.hpp"

namespace qaa::cuda {

/// One amplitude; same size, alignment and layout as std::complex<T> (real part first).
template <typename T>
struct alignas(2 * sizeof(T)) Amp {
  T re, im;
};

/// Threads per block of the element-wise and reduction kernels (a multiple of 32).
inline constexpr int kThreads = 256;
/// Threads per block of the one-block-per-row kernels (embedding, its VJP, the Z readout).
inline constexpr int kRowThreads = 128;

using hd::MaxOp;
using hd::SumOp;

/// Block-wide reduction of v with op. Every thread of the block must call it (no divergent call sites); the
/// result is returned to all threads. Combination order is fixed, so results are bitwise reproducible.
template <typename V, typename Op>
__device__ inline V block_all_reduce(V v, Op op, V identity) {
  __shared__ V warp_vals[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int n_warps = (blockDim.x + 31) >> 5;
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_down_sync(0xffffffffu, v, off));
  __syncthreads();  // the previous call's readers are done with warp_vals
  if (lane == 0) warp_vals[warp] = v;
  __syncthreads();
  if (warp == 0) {
    V w = lane < n_warps ? warp_vals[lane] : identity;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) w = op(w, __shfl_down_sync(0xffffffffu, w, off));
    if (lane == 0) warp_vals[0] = w;
  }
  __syncthreads();
  return warp_vals[0];
}

}  // namespace qaa::cuda
