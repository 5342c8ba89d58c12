// Device kernels of the readouts (qaa/readout.hpp), the readout's diagonal observable and the gradient with
// respect to a real initial state.
#pragma once

#include <cstdint>

#include "kernel_common.cuh"
#include "qaa/circuit.hpp"
#include "qaa/readout.hpp"

namespace qaa::cuda {

/// probs[i] = |psi[i]|^2 for i < total (= B * N).
template <typename T>
__global__ void probs_kernel(const Amp<T>* __restrict__ psi, int64_t total, T* __restrict__ probs) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const Amp<T> a = psi[i];
    probs[i] = probability(a.re, a.im);
  }
}

/// z[b, q] = <Z_q> of row b (readout.hpp), accumulated in double. One block per row.
template <typename T>
__global__ void z_kernel(const Amp<T>* __restrict__ psi, int64_t B, int n, T* __restrict__ z) {
  const int64_t N = int64_t{1} << n;
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    double acc[kMaxQubits];
    for (int q = 0; q < n; ++q) acc[q] = 0;
    const Amp<T>* p = psi + b * N;
    for (int64_t k = threadIdx.x; k < N; k += blockDim.x) {
      const Amp<T> a = p[k];
      const double pr = probability(static_cast<double>(a.re), static_cast<double>(a.im));
      for (int q = 0; q < n; ++q) acc[q] += z_term(pr, wire_set(k, n, q));
    }
    for (int q = 0; q < n; ++q) {
      const double s = block_all_reduce(acc[q], SumOp{}, 0.0);
      if (threadIdx.x == 0) z[b * n + q] = static_cast<T>(s);
    }
  }
}

/// lam[b, k] = o_b[k] * phi[b, k] where o_b is the diagonal observable with <psi|O_b|psi> = <g_b, readout(psi)>:
/// probs: o_b[k] = g[b, k]; z: o_b[k] = sum_q z_term(g[b, q], wire_set(k, n, q)). total = B * N.
template <typename T>
__global__ void observable_kernel(const Amp<T>* __restrict__ phi, Amp<T>* __restrict__ lam, const T* __restrict__ g,
                                  int64_t total, int n, int readout_probs) {
  const int64_t mask = (int64_t{1} << n) - 1;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    T o;
    if (readout_probs) {
      o = g[i];
    } else {
      const int64_t b = i >> n, k = i & mask;
      const T* gb = g + b * n;
      double acc = 0;
      for (int q = 0; q < n; ++q) acc += z_term(static_cast<double>(gb[q]), wire_set(k, n, q));
      o = static_cast<T>(acc);
    }
    const Amp<T> a = phi[i];
    lam[i] = Amp<T>{o * a.re, o * a.im};
  }
}

/// out[i] = 2 Re(lam[i]) for i < total: the gradient with respect to a real initial state.
template <typename T>
__global__ void two_re_kernel(const Amp<T>* __restrict__ lam, int64_t total, T* __restrict__ out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = T(2) * lam[i].re;
}

}  // namespace qaa::cuda
