// Implementation of the fused CUDA engine, included by engine_fused.cu (float64 and the process-wide
// functions) and engine_fused_f32.cu (float32): two translation units, so the two precisions' kernels compile
// in parallel. See engine_fused.hpp and README.md in this folder.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <complex>
#include <initializer_list>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include "../cuda_runtime_support.cuh"
#include "../embedding_kernels.cuh"
#include "../gate_kernels.cuh"
#include "../measurement_kernels.cuh"
#include "engine_fused.hpp"
#include "fused_calls.hpp"
#include "fused_state.hpp"

namespace qaa {
namespace fused {

/// The engine choice of set_fused_mode (defined in engine_fused.cu).
extern std::atomic<int> g_mode;


namespace {

using cuda::align_up;
using cuda::device_of;
using cuda::kWorkspaceAlign;
using cuda::Scratch;

/// Executor of the calling thread's lane on the device (see fused_state.hpp).
template <typename T, bool CPLX>
struct DevEx {
  Lane<T, CPLX>& lane;
  int t;
  int G;
  T* buf_re;
  T* buf_im;
  double* red;  // block scratch for groups of more than one warp: one entry (<= 8 bytes) per warp of the block

  __device__ int lanes() const { return G; }
  __device__ bool leader() const { return t == 0; }
  __device__ void sync() {
    if (G > 32) {
      __syncthreads();
    } else {
      __syncwarp();
    }
  }
  template <typename F>
  __device__ void each(F&& f) { f(lane, t); }
  template <typename F, typename Op>
  __device__ auto reduce(F&& f, Op op) {
    auto v = f(lane, t);
    using V = decltype(v);
    for (int off = (G < 32 ? G : 32) / 2; off >= 1; off >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, off));
    if (G > 32) {
      // Warp totals in the block's scratch (one entry per warp of the block; a block may hold two 64-thread
      // groups), then this group's warps combined in warp order.
      V* r = reinterpret_cast<V*>(red);
      const int base = (static_cast<int>(threadIdx.x) / G) * (G / 32);
      __syncthreads();
      if ((threadIdx.x & 31) == 0) r[threadIdx.x >> 5] = v;
      __syncthreads();
      V total = r[base];
      for (int w = 1; w < G / 32; ++w) total = op(total, r[base + w]);
      v = total;
    }
    return v;
  }
};

/// Dynamic shared memory of one block: half-angle table, reduction scratch, the groups' transpose buffers.
template <typename T, bool CPLX>
size_t smem_bytes(const Plan& P, const LaunchShape& L) {
  const size_t table = align_up(2 * sizeof(T) * std::max(P.n_slots, 1));
  const size_t red = 8 * sizeof(double);
  const size_t bufs = static_cast<size_t>(L.groups_per_block) * buffer_entries(P.n_eff) * (CPLX ? 2 : 1) * sizeof(T);
  return table + red + bufs;
}

template <typename T, bool CPLX, Mode M>
__global__ void __launch_bounds__(256) fused_kernel(const __grid_constant__ Plan plan, const T* __restrict__ theta,
                                                    const Args<T> args, int64_t groups) {
  extern __shared__ __align__(16) unsigned char smem[];
  const Plan& P = plan;
  const int G = 1 << P.thread_bits;
  const int gpb = blockDim.x / G;
  const int gib = threadIdx.x / G, t = threadIdx.x % G;
  T* tc = reinterpret_cast<T*>(smem);
  T* ts = tc + P.n_slots;
  const size_t table = ((2 * sizeof(T) * (P.n_slots > 0 ? P.n_slots : 1)) + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign;
  double* red = reinterpret_cast<double*>(smem + table);
  T* bufs = reinterpret_cast<T*>(smem + table + 8 * sizeof(double));
  const int entries = buffer_entries(P.n_eff);
  T* buf_re = bufs + static_cast<size_t>(gib) * entries * (CPLX ? 2 : 1);
  T* buf_im = CPLX ? buf_re + entries : buf_re;
  for (int k = threadIdx.x; k < P.n_slots; k += blockDim.x) half_angle(theta, P.slot_param[k], &tc[k], &ts[k]);
  const int64_t g = int64_t(blockIdx.x) * gpb + gib;
  double* acc = args.grad_acc != nullptr ? args.grad_acc + g * P.n_slots : nullptr;
  if (acc != nullptr && t == 0) {
    for (int k = 0; k < P.n_slots; ++k) acc[k] = 0;
  }
  __syncthreads();
  const HalfAngles<T> ha{tc, ts};
  Lane<T, CPLX> lane;
  DevEx<T, CPLX> ex{lane, t, G, buf_re, buf_im, red};
  // Every group runs the same number of iterations (idle ones on a zero state), so warps stay converged.
  for (int64_t row0 = 0; row0 < args.batch; row0 += groups) run_state<T, CPLX, M>(ex, P, ha, args, row0 + g, acc);
}

/// slot_sum[k] = sum over groups of acc[g][k], one block per slot, fixed order (strided partial sums, then a
/// tree over the block).
__global__ void slot_sum_kernel(const double* __restrict__ acc, int64_t groups, int n_slots, double* __restrict__ out) {
  __shared__ double part[256];
  const int k = blockIdx.x;
  double v = 0;
  for (int64_t g = threadIdx.x; g < groups; g += blockDim.x) v += acc[g * n_slots + k];
  part[threadIdx.x] = v;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[k] = part[0];
}

struct SlotParams {
  int16_t p[kMaxSlots];
};

/// grad_theta[p] = sum of slot_sum over the slots reading theta[p], in slot order.
template <typename T>
__global__ void param_sum_kernel(const double* __restrict__ slot_sum, const __grid_constant__ SlotParams sp, int n_slots,
                                 int n_params, T* __restrict__ grad_theta) {
  const int p = blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= n_params) return;
  double v = 0;
  for (int k = 0; k < n_slots; ++k) v += sp.p[k] == p ? slot_sum[k] : 0.0;
  grad_theta[p] = static_cast<T>(v);
}

/// Scratch of a gradient call: per-group running sums and per-slot totals.
struct GradLayout {
  size_t acc = 0, slot_sum = 0, total = 0;
};
inline GradLayout grad_layout(const Plan& P, int64_t batch) {
  const LaunchShape L = launch_shape(P.thread_bits, batch);
  GradLayout g;
  g.acc = 0;
  g.slot_sum = align_up(static_cast<size_t>(L.groups) * std::max(P.n_slots, 1) * sizeof(double));
  g.total = g.slot_sum + align_up(std::max(P.n_slots, 1) * sizeof(double));
  return g;
}

template <typename T, bool CPLX, Mode M>
void launch(const Plan& P, const T* theta, Args<T> A, T* grad_theta, const ExecContext& ctx, cudaStream_t s) {
  const LaunchShape L = launch_shape(P.thread_bits, A.batch);
  const bool grads = M == Mode::kBackward || M == Mode::kVjp;
  const GradLayout GL = grad_layout(P, A.batch);
  Scratch scratch(ctx, grads ? GL.total : 0, s);
  if (grads) A.grad_acc = scratch.at<double>(GL.acc);
  const size_t smem = smem_bytes<T, CPLX>(P, L);
  auto kernel = fused_kernel<T, CPLX, M>;
  if (smem > 48 * 1024) QAA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  kernel<<<static_cast<unsigned>(L.blocks), L.threads, smem, s>>>(P, theta, A, L.groups);
  QAA_CUDA_CHECK_LAUNCH();
  if (!grads) return;
  double* slot_sum = scratch.at<double>(GL.slot_sum);
  if (P.n_slots > 0) {
    slot_sum_kernel<<<P.n_slots, 256, 0, s>>>(A.grad_acc, L.groups, P.n_slots, slot_sum);
    QAA_CUDA_CHECK_LAUNCH();
  }
  if (P.n_params > 0) {
    SlotParams sp{};
    for (int k = 0; k < P.n_slots; ++k) sp.p[k] = P.slot_param[k];
    param_sum_kernel<T><<<(P.n_params + 255) / 256, 256, 0, s>>>(slot_sum, sp, P.n_slots, P.n_params, grad_theta);
    QAA_CUDA_CHECK_LAUNCH();
  }
}

/// Every array argument must be device memory on the call's device.
inline void same_device(int dev, const void* p, const char* name) {
  if (p == nullptr) return;
  const int d = device_of(p, name);
  if (d != dev) {
    throw std::invalid_argument(std::string("qaa fused CUDA backend: ") + name + " is on device " + std::to_string(d) +
                                ", the call's arrays on device " + std::to_string(dev));
  }
}

template <typename T>
class FusedBackend final : public Backend<T> {
 public:
  using Complex = std::complex<T>;
  using A = cuda::Amp<T>;
  explicit FusedBackend(std::unique_ptr<Backend<T>> fallback) : fb_(std::move(fallback)) {}

  std::string name() const override { return fb_ ? "cuda-fused+" + fb_->name() : "cuda-fused"; }
  size_t workspace_size(Op op, const Circuit& c, int64_t batch) const override {
    const auto P = plan_for(c);
    if (!P) return fb_ ? fb_->workspace_size(op, c, batch) : 0;
    size_t need = 0;
    if (op == Op::kVjp || op == Op::kBackward) need = grad_layout(*P, batch).total;
    if (fb_ && static_cast<FusedMode>(g_mode.load()) != FusedMode::kFused) need = std::max(need, fb_->workspace_size(op, c, batch));
    return need;
  }

  void embed(int n, const T* x, int64_t B, int64_t d, Complex* psi0, T* norms, const ExecContext& ctx) override {
    if (n < 1 || n > kMaxQubits) throw std::invalid_argument("qaa fused CUDA backend: n_qubits out of range");
    const int64_t N = int64_t{1} << n;
    check_width(d, N);
    if (B == 0) return;
    const int dev = device_of(x, "x");
    same_device(dev, psi0, "psi0");
    same_device(dev, norms, "norms");
    cuda::DeviceGuard guard(dev);
    cuda::embed_kernel<T><<<grid(B), cuda::kRowThreads, 0, stream(ctx)>>>(x, B, d, N, amp(psi0), norms);
    QAA_CUDA_CHECK_LAUNCH();
  }

  void readout(int n, const Complex* psi, int64_t B, Readout r, T* f, const ExecContext& ctx) override {
    if (n < 1 || n > kMaxQubits) throw std::invalid_argument("qaa fused CUDA backend: n_qubits out of range");
    if (B == 0) return;
    const int dev = device_of(psi, "psi");
    same_device(dev, f, "features");
    cuda::DeviceGuard guard(dev);
    if (r == Readout::kProbs) {
      const int64_t total = B << n;
      cuda::probs_kernel<T><<<grid((total + 255) / 256), 256, 0, stream(ctx)>>>(amp(psi), total, f);
    } else {
      cuda::z_kernel<T><<<grid(B), cuda::kRowThreads, 0, stream(ctx)>>>(amp(psi), B, n, f);
    }
    QAA_CUDA_CHECK_LAUNCH();
  }

  void apply(const Circuit& c, const T* theta, Complex* psi, int64_t B, bool adjoint, const ExecContext& ctx) override {
    if (B == 0) return;
    const int dev = devices(psi, "psi", {{theta, "theta"}});
    const auto P = use_fused(c, true);
    if (!P) return fb_->apply(c, theta, psi, B, adjoint, ctx);
    cuda::DeviceGuard guard(dev);
    run_apply(launcher(*P, theta, ctx), B, psi, psi, adjoint);  // each group reads its whole row before writing it
  }

  void vjp(const Circuit& c, const T* theta, const Complex* psi, const T* gf, Readout r, int64_t B, T* grad_theta,
           T* grad_psi0, const ExecContext& ctx) override {
    const auto P = use_fused(c, true);
    if (B == 0 && P) return zero(c, grad_theta, ctx);
    const int dev = B == 0 ? 0 : devices(psi, "psi", {{theta, "theta"}, {gf, "grad_features"}, {grad_theta, "grad_theta"},
                                                  {grad_psi0, "grad_psi0"}});
    if (!P) return fb_->vjp(c, theta, psi, gf, r, B, grad_theta, grad_psi0, ctx);
    cuda::DeviceGuard guard(dev);
    run_vjp(launcher(*P, theta, ctx), B, r, psi, gf, grad_theta, grad_psi0);
  }

  void circuit_matrix(const Circuit& c, const T* theta, Complex* u, const ExecContext& ctx) override {
    const int dev = devices(u, "u", {{theta, "theta"}});
    const auto P = use_fused(c, true);
    if (!P) return fb_->circuit_matrix(c, theta, u, ctx);
    cuda::DeviceGuard guard(dev);
    const int n = c.n_qubits();
    const int64_t N = c.dim();
    const cudaStream_t s = stream(ctx);
    cuda::identity_kernel<T><<<grid((N * N + 255) / 256), 256, 0, s>>>(amp(u), n);
    QAA_CUDA_CHECK_LAUNCH();
    apply(c, theta, u, N, false, ctx);  // row j becomes U e_j, then the transpose puts it in column j
    cuda::transpose_kernel<T><<<grid((N * N + 255) / 256), 256, 0, s>>>(amp(u), n);
    QAA_CUDA_CHECK_LAUNCH();
  }

  void forward(const Circuit& c, const T* theta, const T* x, int64_t B, int64_t d, Readout r, T* f, T* norms,
               const ExecContext& ctx) override {
    check_width(d, c.dim());
    if (B == 0) return;
    const int dev = devices(x, "x", {{theta, "theta"}, {f, "features"}, {norms, "norms"}});
    const auto P = use_fused(c);
    if (!P) return fb_->forward(c, theta, x, B, d, r, f, norms, ctx);
    cuda::DeviceGuard guard(dev);
    run_forward(launcher(*P, theta, ctx), c, B, d, r, x, f, norms);
  }

  void backward(const Circuit& c, const T* theta, const T* x, int64_t B, int64_t d, Readout r, const T* gf,
                const T* gn, T* grad_theta, T* grad_x, const ExecContext& ctx) override {
    check_width(d, c.dim());
    const auto P = use_fused(c);
    if (B == 0 && P) return zero(c, grad_theta, ctx);
    const int dev = B == 0 ? 0 : devices(x, "x", {{theta, "theta"}, {gf, "grad_features"}, {gn, "grad_norms"},
                                                {grad_theta, "grad_theta"}, {grad_x, "grad_x"}});
    if (!P) return fb_->backward(c, theta, x, B, d, r, gf, gn, grad_theta, grad_x, ctx);
    cuda::DeviceGuard guard(dev);
    run_backward(launcher(*P, theta, ctx), c, B, d, r, x, gf, gn, grad_theta, grad_x);
  }

 private:
  static cudaStream_t stream(const ExecContext& ctx) { return static_cast<cudaStream_t>(ctx.stream); }
  /// The `run` of fused_calls.hpp: the fused kernel of plan P, launched on the call's stream.
  static auto launcher(const Plan& P, const T* theta, const ExecContext& ctx) {
    return [&P, theta, &ctx](auto cplx, auto mode, const Args<T>& a, T* grad_theta) {
      launch<T, decltype(cplx)::value, decltype(mode)::value>(P, theta, a, grad_theta, ctx, stream(ctx));
    };
  }
  /// The device of the call's main array; every other (non-null) array must be on it. Checked before a call
  /// goes to the fallback too.
  static int devices(const void* main, const char* name,
                     std::initializer_list<std::pair<const void*, const char*>> rest) {
    const int dev = device_of(main, name);
    for (const auto& [p, nm] : rest) same_device(dev, p, nm);
    return dev;
  }
  static A* amp(Complex* p) { return reinterpret_cast<A*>(p); }
  static const A* amp(const Complex* p) { return reinterpret_cast<const A*>(p); }
  static int grid(int64_t blocks) { return static_cast<int>(std::clamp<int64_t>(blocks, 1, 65536)); }
  static void check_width(int64_t d, int64_t N) {
    if (d < 1 || d > N) {
      throw std::invalid_argument("qaa fused CUDA backend: input width " + std::to_string(d) + " must be in [1, " +
                                  std::to_string(N) + "]");
    }
  }
  static std::optional<Plan> plan_for(const Circuit& c) {
    if (static_cast<FusedMode>(g_mode.load()) == FusedMode::kFallback) return std::nullopt;
    return make_plan(c);
  }
  /// The plan when the fused kernel serves this call; nullopt when the fallback does (or throws).
  /// In kAuto mode the state-level calls (`state_level`) go to the fallback when there is one: cuStateVec
  /// stays the engine of the state-level API; the fused kernel serves them only without it.
  std::optional<Plan> use_fused(const Circuit& c, bool state_level = false) const {
    const FusedMode m = static_cast<FusedMode>(g_mode.load());
    if (m == FusedMode::kAuto && state_level && fb_) return std::nullopt;
    if (m == FusedMode::kFallback) {
      if (!fb_) throw std::invalid_argument("qaa fused CUDA backend: mode 'custatevec' but cuStateVec was not built in");
      return std::nullopt;
    }
    std::string why;
    auto P = make_plan(c, &why);
    if (!P && (m == FusedMode::kFused || !fb_)) {
      throw std::invalid_argument("qaa fused CUDA backend: the circuit does not fit the fused kernel (" + why +
                                  ")" + (fb_ ? "" : " and cuStateVec, which runs larger circuits, was not built in"));
    }
    return P;
  }
  static void zero(const Circuit& c, T* grad_theta, const ExecContext& ctx) {
    if (c.n_params() == 0) return;
    cuda::DeviceGuard guard(device_of(grad_theta, "grad_theta"));
    QAA_CUDA_CHECK(cudaMemsetAsync(grad_theta, 0, c.n_params() * sizeof(T), stream(ctx)));
  }

  std::unique_ptr<Backend<T>> fb_;
};

}  // namespace
}  // namespace fused

template <typename T>
std::unique_ptr<Backend<T>> make_fused_cuda_backend(std::unique_ptr<Backend<T>> fallback) {
  return std::make_unique<fused::FusedBackend<T>>(std::move(fallback));
}

}  // namespace qaa
