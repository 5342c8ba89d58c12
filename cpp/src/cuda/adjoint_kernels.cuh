// Device kernels of the adjoint method on cuStateVec states: each rotation's derivative terms, their per-block
// partial sums, the per-rotation accumulators and their sum per parameter.
#pragma once

#include <cstdint>

#include "kernel_common.cuh"
#include "qaa/circuit.hpp"

namespace qaa::cuda {

/// For one rotation on index bit `bit` (= n-1-wire) of `rows` states phi, lam [rows, 2^n]: each block writes
/// its share of sum over states and amplitude pairs of 2 Re <lam| (-i/2) G |phi> (G the rotation's generator)
/// to partial[blockIdx.x]. Launch with exactly the grid size the caller reserved partials for.
///   RX: Im(l0* p1) + Im(l1* p0);  RY: Re(l1* p0) - Re(l0* p1);  RZ: Im(l0* p0) - Im(l1* p1)
template <typename T>
__global__ void rotation_grad_kernel(int kind, const Amp<T>* __restrict__ phi, const Amp<T>* __restrict__ lam,
                                     int64_t rows, int n, int bit, double* __restrict__ partial) {
  const int64_t pairs = rows << (n - 1);
  const int64_t half_mask = (int64_t{1} << (n - 1)) - 1;
  const int64_t low = (int64_t{1} << bit) - 1;
  const int64_t s = int64_t{1} << bit;
  double acc = 0;
  for (int64_t g = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; g < pairs; g += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = g >> (n - 1), p = g & half_mask;
    const int64_t j = (b << n) | ((p & ~low) << 1) | (p & low);  // index with bit `bit` clear
    const Amp<T> l0 = lam[j], l1 = lam[j + s], p0 = phi[j], p1 = phi[j + s];
    const double l0r = l0.re, l0i = l0.im, l1r = l1.re, l1i = l1.im;
    const double p0r = p0.re, p0i = p0.im, p1r = p1.re, p1i = p1.im;
    if (kind == static_cast<int>(GateKind::RY)) {
      acc += (l1r * p0r + l1i * p0i) - (l0r * p1r + l0i * p1i);
    } else if (kind == static_cast<int>(GateKind::RX)) {
      acc += (l0r * p1i - l0i * p1r) + (l1r * p0i - l1i * p0r);
    } else {
      acc += (l0r * p0i - l0i * p0r) - (l1r * p1i - l1i * p1r);
    }
  }
  acc = block_all_reduce(acc, SumOp{}, 0.0);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

/// gate_acc[r] += sum_{j < blocks} partial[r * blocks + j] for every rotation r < R (one chunk's terms).
static __global__ void accumulate_partials_kernel(const double* __restrict__ partial, int blocks, int R,
                                           double* __restrict__ gate_acc) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= R) return;
  double s = 0;
  for (int j = 0; j < blocks; ++j) s += partial[int64_t(r) * blocks + j];
  gate_acc[r] += s;
}

/// grad_theta[p] = sum over rotations r reading theta[p] of gate_acc[r], for p < P.
template <typename T>
__global__ void finalize_grad_kernel(const double* __restrict__ gate_acc, const int32_t* __restrict__ rot_param,
                                     int R, int P, T* __restrict__ grad_theta) {
  const int p = blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= P) return;
  double s = 0;
  for (int r = R - 1; r >= 0; --r)
    if (rot_param[r] == p) s += gate_acc[r];
  grad_theta[p] = static_cast<T>(s);
}

}  // namespace qaa::cuda
