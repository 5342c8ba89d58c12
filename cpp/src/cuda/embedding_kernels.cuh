// Device kernels of the amplitude embedding and its VJP: the row statistics of qaa/embedding.hpp, each pass
// reduced over a block.
#pragma once

#include <cstdint>

#include "kernel_common.cuh"
#include "qaa/embedding.hpp"

namespace qaa::cuda {

/// Statistics of row x[0..d) (embedding.hpp), each of its two passes split over the block's threads.
/// Called by every thread of a block; the result is block-uniform.
template <typename T>
__device__ RowStats<T> row_stats(const T* x, int64_t d) {
  RowScan<T> scan;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) row_scan_add(scan, x[i]);
  scan.has_nan = block_all_reduce(scan.has_nan, MaxOp{}, 0);
  scan.n_inf = block_all_reduce(scan.n_inf, SumOp{}, 0);
  scan.amax = block_all_reduce(scan.amax, MaxOp{}, T(0));
  RowStats<T> st = row_stats_begin(scan);
  if (st.kind != RowKind::kRegular) return st;  // block-uniform branch
  double ss = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) ss += row_square_term(st, x[i]);
  row_stats_finish(st, block_all_reduce(ss, SumOp{}, 0.0));
  return st;
}

/// x[B,d] -> out[B,N] (complex, imaginary part 0) and norms[B] (skipped when null). One block per row.
template <typename T>
__global__ void embed_kernel(const T* __restrict__ x, int64_t B, int64_t d, int64_t N, Amp<T>* __restrict__ out,
                             T* __restrict__ norms) {
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    const T* xr = x + b * d;
    const RowStats<T> st = row_stats(xr, d);
    Amp<T>* o = out + b * N;
    for (int64_t i = threadIdx.x; i < N; i += blockDim.x) o[i] = Amp<T>{i < d ? embedded_value(st, xr[i]) : T(0), T(0)};
    if (threadIdx.x == 0 && norms != nullptr) norms[b] = st.norm;
  }
}

/// VJP of the embedding (embed_row_vjp): the cotangent of psi0 is g_i = 2 Re(lam[b, i]) (i < d), that of the
/// norm grad_norms[b] (0 when grad_norms is null). Writes grad_x[B,d]; zero, NaN and infinite rows get 0.
template <typename T>
__global__ void embed_vjp_kernel(const T* __restrict__ x, int64_t B, int64_t d, int64_t N,
                                 const Amp<T>* __restrict__ lam, const T* __restrict__ grad_norms,
                                 T* __restrict__ grad_x) {
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    const T* xr = x + b * d;
    T* gx = grad_x + b * d;
    const RowStats<T> st = row_stats(xr, d);
    if (st.kind != RowKind::kRegular) {  // block-uniform branch
      for (int64_t i = threadIdx.x; i < d; i += blockDim.x) gx[i] = T(0);
      continue;
    }
    const Amp<T>* l = lam + b * N;
    double dot = 0;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
      const T p = embedded_value(st, xr[i]);
      const T g = T(2) * l[i].re;
      dot += static_cast<double>(p) * static_cast<double>(g);
    }
    dot = block_all_reduce(dot, SumOp{}, 0.0);
    const double nrm = static_cast<double>(st.norm);
    const double gn = grad_norms != nullptr ? static_cast<double>(grad_norms[b]) : 0.0;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
      const double p = static_cast<double>(embedded_value(st, xr[i]));
      const double g = static_cast<double>(T(2) * l[i].re);
      gx[i] = static_cast<T>(embed_vjp_value(p, g, dot, nrm, gn));
    }
  }
}

}  // namespace qaa::cuda
