// Device kernels of the gate matrices, built on the device from theta (no host round trip for theta), and of
// the circuit matrix (identity start, in-place transpose). The gates themselves are applied by cuStateVec
// (gate_runner.cuh) or the fused kernel (fused/).
#pragma once

#include <cstdint>

#include "kernel_common.cuh"
#include "qaa/circuit.hpp"

namespace qaa::cuda {

/// Rotations whose matrices one build_matrices_kernel launch computes (descriptors travel as kernel
/// arguments, so no host-to-device copy is needed; 4 + 4 * 256 bytes of parameters).
inline constexpr int kRotationsPerLaunch = 256;

/// Descriptors of up to kRotationsPerLaunch rotations, passed by value as kernel arguments.
/// code[i] = param * 4 + kind (kind: 0 RX, 1 RY, 2 RZ, as qaa::GateKind).
struct RotationBatch {
  int32_t offset;          // slot of code[0] in the matrix array
  int32_t count;           // rotations in this batch
  int32_t const_slot;      // slot of the X matrix (Z follows) when write_consts
  int32_t write_consts;
  int32_t code[kRotationsPerLaunch];
};

/// Row-major 2x2 matrices: mats[4 * (offset + i) ..] for rotation i of the batch; rot_param[offset + i] its
/// parameter index. With write_consts, also X (for CNOT) at slot const_slot and Z (for CZ) at const_slot + 1.
template <typename T>
__global__ void build_matrices_kernel(RotationBatch rb, const T* __restrict__ theta, Amp<T>* __restrict__ mats,
                                      int32_t* __restrict__ rot_param) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < rb.count) {
    const int32_t code = rb.code[i];
    const int kind = code & 3;
    const int32_t param = code >> 2;
    const double t = static_cast<double>(theta[param]) * 0.5;
    const T c = static_cast<T>(cos(t)), s = static_cast<T>(sin(t));
    Amp<T>* m = mats + 4 * int64_t(rb.offset + i);
    if (kind == static_cast<int>(GateKind::RX)) {         // [[c, -i s], [-i s, c]]
      m[0] = {c, T(0)}; m[1] = {T(0), -s}; m[2] = {T(0), -s}; m[3] = {c, T(0)};
    } else if (kind == static_cast<int>(GateKind::RY)) {  // [[c, -s], [s, c]]
      m[0] = {c, T(0)}; m[1] = {-s, T(0)}; m[2] = {s, T(0)}; m[3] = {c, T(0)};
    } else {                                              // RZ: diag(c - i s, c + i s)
      m[0] = {c, -s}; m[1] = {T(0), T(0)}; m[2] = {T(0), T(0)}; m[3] = {c, s};
    }
    rot_param[rb.offset + i] = param;
  }
  if (rb.write_consts && i == 0) {
    Amp<T>* x = mats + 4 * int64_t(rb.const_slot);
    x[0] = {T(0), T(0)}; x[1] = {T(1), T(0)}; x[2] = {T(1), T(0)}; x[3] = {T(0), T(0)};
    Amp<T>* z = x + 4;
    z[0] = {T(1), T(0)}; z[1] = {T(0), T(0)}; z[2] = {T(0), T(0)}; z[3] = {T(-1), T(0)};
  }
}

/// u[N,N] = identity (row j is the basis state e_j).
template <typename T>
__global__ void identity_kernel(Amp<T>* __restrict__ u, int n) {
  const int64_t N = int64_t{1} << n, total = N * N;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    u[i] = Amp<T>{(i >> n) == (i & (N - 1)) ? T(1) : T(0), T(0)};
}

/// In-place transpose of u[N,N] (each off-diagonal pair swapped by exactly one thread).
template <typename T>
__global__ void transpose_kernel(Amp<T>* __restrict__ u, int n) {
  const int64_t N = int64_t{1} << n, total = N * N;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = idx >> n, j = idx & (N - 1);
    if (i < j) {
      const Amp<T> a = u[i * N + j];
      u[i * N + j] = u[j * N + i];
      u[j * N + i] = a;
    }
  }
}

}  // namespace qaa::cuda
