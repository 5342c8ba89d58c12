// Device kernels of the CUDA backend: amplitude embedding and its VJP, readouts, the readout observable,
// gate matrices built on the device from theta, the per-gate adjoint derivative terms and their reduction.
// Gates themselves are applied by cuStateVec (see engine_cuda.cu).
//
// Every kernel runs on the stream it is launched on and never synchronises with the host. Reductions are
// deterministic: fixed launch geometry, fixed combination order, double-precision accumulators.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "qaa/circuit.hpp"
#include "qaa/embedding.hpp"
#include "qaa/readout.hpp"

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
/// Rotations whose matrices one build_matrices_kernel launch computes (descriptors travel as kernel
/// arguments, so no host-to-device copy is needed; 4 + 4 * 256 bytes of parameters).
inline constexpr int kRotationsPerLaunch = 256;

// ---------------------------------------------------------------------------------------------------------
// Block-wide reductions. Every thread of the block must call them (no divergent call sites); the result is
// returned to all threads. Combination order is fixed, so results are bitwise reproducible.
// ---------------------------------------------------------------------------------------------------------
struct SumOp {
  template <typename V>
  __device__ V operator()(V a, V b) const { return a + b; }
};
struct MaxOp {
  template <typename V>
  __device__ V operator()(V a, V b) const { return a > b ? a : b; }
};

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

// ---------------------------------------------------------------------------------------------------------
// Amplitude embedding: the row statistics of embedding.hpp, each pass reduced over the block.
// ---------------------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------------------
// Readouts and the readout observable.
// ---------------------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------------------
// Gate matrices, computed on the device from theta (no host round trip for theta).
// ---------------------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------------------
// Adjoint-method derivative terms.
// ---------------------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------------------
// Circuit matrix helpers.
// ---------------------------------------------------------------------------------------------------------

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
