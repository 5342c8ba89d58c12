// CUDA backend of the qaa engine on cuStateVec (design notes: README.md in this folder): call orchestration,
// the scratch layout and chunking of the batch, and the adjoint sweep. The gates go through cuStateVec
// (gate_runner.cuh); everything else (embedding, readouts, observable, derivative terms and their reduction) is
// the device kernels of embedding_kernels.cuh, measurement_kernels.cuh and adjoint_kernels.cuh.
#include <algorithm>
#include <atomic>
#include <complex>
#include <string>

#include "adjoint_kernels.cuh"
#include "cuda_support.cuh"
#include "embedding_kernels.cuh"
#include "engine_cuda.hpp"
#include "gate_kernels.cuh"
#include "gate_runner.cuh"
#include "measurement_kernels.cuh"

namespace qaa {

namespace cuda {
namespace {

constexpr size_t kDefaultChunkBytes = size_t{128} << 20;
std::atomic<size_t> g_chunk_bytes{0};

/// Most blocks a rotation's derivative-term kernel runs with (each writes one partial sum).
constexpr int kMaxGradBlocks = 512;
/// Most blocks of a grid-stride kernel.
constexpr int64_t kMaxBlocks = 65536;

size_t chunk_bytes() {
  const size_t v = g_chunk_bytes.load(std::memory_order_relaxed);
  return v ? v : kDefaultChunkBytes;
}

int grid_for(int64_t total, int threads) {
  return static_cast<int>(std::clamp<int64_t>((total + threads - 1) / threads, 1, kMaxBlocks));
}
int row_grid(int64_t rows) { return static_cast<int>(std::clamp<int64_t>(rows, 1, kMaxBlocks)); }

/// Byte offsets of the scratch regions of one call (all 256-byte aligned) and the chunking of the batch.
struct Layout {
  int64_t chunk = 0;    // states per chunk (0 when the op keeps no states or the batch is empty)
  int grad_blocks = 0;  // blocks (= partial sums) per rotation and chunk
  size_t mats = 0, rot_param = 0, states = 0, gate_acc = 0, partial = 0;
  size_t total = 0;
};

Layout make_layout(Op op, const Circuit& c, int64_t batch, size_t amp_bytes) {
  Layout L;
  int R = 0;
  for (const Gate& g : c.gates()) R += is_rotation(g.kind) ? 1 : 0;
  const int64_t N = c.dim();
  const bool mats = op == Op::kApply || op == Op::kVjp || op == Op::kForward || op == Op::kBackward ||
                    op == Op::kMatrix;
  const bool two_states = op == Op::kVjp || op == Op::kBackward;
  const bool one_state = op == Op::kForward;
  size_t off = 0;
  auto take = [&off](size_t bytes) {
    const size_t at = off;
    off += align_up(bytes);
    return at;
  };
  if (mats) {
    L.mats = take(static_cast<size_t>(R + 2) * 4 * amp_bytes);
    L.rot_param = take(static_cast<size_t>(std::max(R, 1)) * sizeof(int32_t));
  }
  if ((one_state || two_states) && batch > 0) {
    const int64_t row_bytes = N * static_cast<int64_t>(amp_bytes);
    const int64_t per_chunk = std::max<int64_t>(1, static_cast<int64_t>(chunk_bytes()) / row_bytes);
    L.chunk = std::min({batch, per_chunk, kMaxSvsPerCall / 2});
    L.states = take(static_cast<size_t>(L.chunk * row_bytes) * (two_states ? 2 : 1));
  }
  if (two_states && batch > 0) {
    const int64_t pairs = L.chunk * (N / 2);
    L.grad_blocks = static_cast<int>(std::clamp<int64_t>((pairs + kThreads * 4 - 1) / (kThreads * 4), 1, kMaxGradBlocks));
    L.gate_acc = take(static_cast<size_t>(std::max(R, 1)) * sizeof(double));
    L.partial = take(static_cast<size_t>(std::max(R, 1)) * L.grad_blocks * sizeof(double));
  }
  L.total = off;
  return L;
}

void check_qubits(int n) {
  if (n < 1 || n > kMaxQubits) {
    throw std::invalid_argument("qaa CUDA backend: n_qubits must be in [1, " + std::to_string(kMaxQubits) +
                                "], got " + std::to_string(n));
  }
}

void check_width(int64_t d, int64_t N) {
  if (d < 1 || d > N) {
    throw std::invalid_argument("qaa CUDA backend: input width " + std::to_string(d) + " must be in [1, " +
                                std::to_string(N) + "]");
  }
}

/// One call that applies the circuit through cuStateVec, set up in this order: the circuit's plan, the scratch
/// layout of `op` and the scratch, the gate matrices built from theta (and, for vjp and backward, the zeroed
/// per-rotation accumulators), then the cuStateVec handle of (device, stream), held for the call, and the gate
/// runner sized for the most states one cuStateVec call of `op` passes.
template <typename T>
class CircuitCall {
 public:
  using A = Amp<T>;

  CircuitCall(Op op, const Circuit& c, const T* theta, int64_t batch, int dev, const ExecContext& ctx,
              cudaStream_t s)
      : circuit_(c),
        s_(s),
        plan_(make_plan(c)),
        L_(make_layout(op, c, batch, sizeof(A))),
        scratch_(ctx, L_.total, s),
        mats_(prepare(op, theta)),
        lease_(HandleCache::acquire(dev, s)),
        run_(lease_.handle, c, plan_, mats_, max_svs(op, L_, batch), s) {}
  CircuitCall(const CircuitCall&) = delete;
  CircuitCall& operator=(const CircuitCall&) = delete;

  GateRunner<T>& gates() { return run_; }

  /// f(b0, rows, states) for each chunk [b0, b0 + rows) of the batch [0, B), `states` the chunk's state buffer
  /// (room for two chunks of states in vjp and backward).
  template <typename F>
  void each_chunk(int64_t B, F&& f) {
    A* states = scratch_.at<A>(L_.states);
    for (int64_t b0 = 0; b0 < B; b0 += L_.chunk) f(b0, std::min(L_.chunk, B - b0), states);
  }

  /// Adjoint pass over one chunk. On entry phi[rows, N] = U psi0; lam[rows, N] (adjacent to phi, so one
  /// cuStateVec call moves both) becomes O phi, O the diagonal observable of the readout cotangent g[rows, F],
  /// and on exit lam = U^dagger O U psi0. Each rotation's derivative term goes to its partial sums before the
  /// gate is undone on both phi and lam; the chunk's terms are then added to the per-rotation accumulators.
  void adjoint(A* phi, int64_t rows, const T* g, Readout r) {
    const int64_t N = plan_.N;
    A* lam = phi + rows * N;
    observable_kernel<T><<<grid_for(rows * N, kThreads), kThreads, 0, s_>>>(
        phi, lam, g, rows * N, plan_.n, r == Readout::kProbs ? 1 : 0);
    QAA_CUDA_CHECK_LAUNCH();
    double* partial = scratch_.at<double>(L_.partial);
    for (size_t gi = circuit_.gates().size(); gi-- > 0;) {
      const Gate& gate = circuit_.gates()[gi];
      const int k = plan_.slot[gi];
      if (k >= 0) {
        rotation_grad_kernel<T><<<L_.grad_blocks, kThreads, 0, s_>>>(static_cast<int>(gate.kind), phi, lam, rows,
                                                                     plan_.n, plan_.n - 1 - gate.wires[0],
                                                                     partial + int64_t(k) * L_.grad_blocks);
        QAA_CUDA_CHECK_LAUNCH();
      }
      run_.gate(phi, 2 * rows, gi, true);
    }
    if (plan_.R > 0) {
      accumulate_partials_kernel<<<(plan_.R + kThreads - 1) / kThreads, kThreads, 0, s_>>>(
          partial, L_.grad_blocks, plan_.R, scratch_.at<double>(L_.gate_acc));
      QAA_CUDA_CHECK_LAUNCH();
    }
  }

  /// Sum the per-rotation accumulators into grad_theta[P] (on the device; no host sync).
  void finish_grads(T* grad_theta) {
    if (plan_.P == 0) return;
    finalize_grad_kernel<T><<<(plan_.P + kThreads - 1) / kThreads, kThreads, 0, s_>>>(
        scratch_.at<double>(L_.gate_acc), scratch_.at<int32_t>(L_.rot_param), plan_.R, plan_.P, grad_theta);
    QAA_CUDA_CHECK_LAUNCH();
  }

 private:
  static bool grads(Op op) { return op == Op::kVjp || op == Op::kBackward; }
  /// The most states one cuStateVec call passes: a chunk (forward), phi and lam of a chunk (vjp, backward),
  /// else the whole batch.
  static int64_t max_svs(Op op, const Layout& L, int64_t batch) {
    if (grads(op)) return 2 * L.chunk;
    return op == Op::kForward ? L.chunk : batch;
  }
  /// The gate matrices (and the zeroed accumulators of a gradient call), queued on the call's stream.
  A* prepare(Op op, const T* theta) {
    A* mats = scratch_.at<A>(L_.mats);
    build_matrices<T>(plan_, theta, mats, scratch_.at<int32_t>(L_.rot_param), s_);
    if (grads(op) && plan_.R > 0) {
      QAA_CUDA_CHECK(cudaMemsetAsync(scratch_.at<double>(L_.gate_acc), 0, plan_.R * sizeof(double), s_));
    }
    return mats;
  }

  const Circuit& circuit_;
  cudaStream_t s_;
  Plan plan_;
  Layout L_;
  Scratch scratch_;
  A* mats_;
  HandleCache::Lease lease_;
  GateRunner<T> run_;
};

template <typename T>
class CudaBackend final : public Backend<T> {
 public:
  using Complex = std::complex<T>;
  using A = Amp<T>;
  static_assert(sizeof(A) == sizeof(Complex), "Amp<T> must have the layout of std::complex<T>");

  std::string name() const override { return "cuda"; }

  size_t workspace_size(Op op, const Circuit& c, int64_t batch) const override {
    return make_layout(op, c, batch, sizeof(A)).total;
  }

  // ---- state-level API ----
  void embed(int n, const T* x, int64_t B, int64_t d, Complex* psi0, T* norms, const ExecContext& ctx) override {
    check_qubits(n);
    const int64_t N = int64_t{1} << n;
    check_width(d, N);
    if (B == 0) return;
    DeviceGuard guard(device_of(x, "x"));
    const cudaStream_t s = stream(ctx);
    embed_kernel<T><<<row_grid(B), kRowThreads, 0, s>>>(x, B, d, N, amp(psi0), norms);
    QAA_CUDA_CHECK_LAUNCH();
  }

  void apply(const Circuit& c, const T* theta, Complex* psi, int64_t B, bool adjoint,
             const ExecContext& ctx) override {
    if (B == 0) return;
    const int dev = device_of(psi, "psi");
    DeviceGuard guard(dev);
    CircuitCall<T> call(Op::kApply, c, theta, B, dev, ctx, stream(ctx));
    call.gates().circuit(amp(psi), B, adjoint);
  }

  void readout(int n, const Complex* psi, int64_t B, Readout r, T* features, const ExecContext& ctx) override {
    check_qubits(n);
    if (B == 0) return;
    DeviceGuard guard(device_of(psi, "psi"));
    launch_readout(amp(psi), B, n, r, features, stream(ctx));
  }

  void vjp(const Circuit& c, const T* theta, const Complex* psi, const T* grad_features, Readout r, int64_t B,
           T* grad_theta, T* grad_psi0, const ExecContext& ctx) override {
    if (B == 0) {
      zero_grad_theta(c, grad_theta, ctx);
      return;
    }
    const int dev = device_of(psi, "psi");
    DeviceGuard guard(dev);
    const cudaStream_t s = stream(ctx);
    const int64_t N = c.dim(), F = readout_features(r, c.n_qubits());
    CircuitCall<T> call(Op::kVjp, c, theta, B, dev, ctx, s);
    call.each_chunk(B, [&](int64_t b0, int64_t rows, A* phi) {
      QAA_CUDA_CHECK(cudaMemcpyAsync(phi, amp(psi) + b0 * N, rows * N * sizeof(A), cudaMemcpyDeviceToDevice, s));
      call.adjoint(phi, rows, grad_features + b0 * F, r);
      two_re_kernel<T><<<grid_for(rows * N, kThreads), kThreads, 0, s>>>(phi + rows * N, rows * N, grad_psi0 + b0 * N);
      QAA_CUDA_CHECK_LAUNCH();
    });
    call.finish_grads(grad_theta);
  }

  void circuit_matrix(const Circuit& c, const T* theta, Complex* u, const ExecContext& ctx) override {
    const int dev = device_of(u, "u");
    DeviceGuard guard(dev);
    const cudaStream_t s = stream(ctx);
    const int n = c.n_qubits();
    const int64_t N = c.dim();
    CircuitCall<T> call(Op::kMatrix, c, theta, N, dev, ctx, s);
    // Row j of u starts as e_j and becomes U e_j (column j of U); the transpose puts it in place.
    identity_kernel<T><<<grid_for(N * N, kThreads), kThreads, 0, s>>>(amp(u), n);
    QAA_CUDA_CHECK_LAUNCH();
    call.gates().circuit(amp(u), N, false);
    transpose_kernel<T><<<grid_for(N * N, kThreads), kThreads, 0, s>>>(amp(u), n);
    QAA_CUDA_CHECK_LAUNCH();
  }

  // ---- fused token-level API ----
  void forward(const Circuit& c, const T* theta, const T* x, int64_t B, int64_t d, Readout r, T* features, T* norms,
               const ExecContext& ctx) override {
    const int n = c.n_qubits();
    const int64_t N = c.dim(), F = readout_features(r, n);
    check_width(d, N);
    if (B == 0) return;
    const int dev = device_of(x, "x");
    DeviceGuard guard(dev);
    const cudaStream_t s = stream(ctx);
    CircuitCall<T> call(Op::kForward, c, theta, B, dev, ctx, s);
    call.each_chunk(B, [&](int64_t b0, int64_t rows, A* psi) {
      embed_kernel<T><<<row_grid(rows), kRowThreads, 0, s>>>(x + b0 * d, rows, d, N, psi, norms + b0);
      QAA_CUDA_CHECK_LAUNCH();
      call.gates().circuit(psi, rows, false);
      launch_readout(psi, rows, n, r, features + b0 * F, s);
    });
  }

  void backward(const Circuit& c, const T* theta, const T* x, int64_t B, int64_t d, Readout r,
                const T* grad_features, const T* grad_norms, T* grad_theta, T* grad_x,
                const ExecContext& ctx) override {
    const int64_t N = c.dim(), F = readout_features(r, c.n_qubits());
    check_width(d, N);
    if (B == 0) {
      zero_grad_theta(c, grad_theta, ctx);
      return;
    }
    const int dev = device_of(x, "x");
    DeviceGuard guard(dev);
    const cudaStream_t s = stream(ctx);
    CircuitCall<T> call(Op::kBackward, c, theta, B, dev, ctx, s);
    call.each_chunk(B, [&](int64_t b0, int64_t rows, A* phi) {
      embed_kernel<T><<<row_grid(rows), kRowThreads, 0, s>>>(x + b0 * d, rows, d, N, phi, nullptr);
      QAA_CUDA_CHECK_LAUNCH();
      call.gates().circuit(phi, rows, false);
      call.adjoint(phi, rows, grad_features + b0 * F, r);
      embed_vjp_kernel<T><<<row_grid(rows), kRowThreads, 0, s>>>(
          x + b0 * d, rows, d, N, phi + rows * N, grad_norms ? grad_norms + b0 : nullptr, grad_x + b0 * d);
      QAA_CUDA_CHECK_LAUNCH();
    });
    call.finish_grads(grad_theta);
  }

 private:
  static cudaStream_t stream(const ExecContext& ctx) { return static_cast<cudaStream_t>(ctx.stream); }
  static A* amp(Complex* p) { return reinterpret_cast<A*>(p); }
  static const A* amp(const Complex* p) { return reinterpret_cast<const A*>(p); }

  static void launch_readout(const A* psi, int64_t rows, int n, Readout r, T* features, cudaStream_t s) {
    if (r == Readout::kProbs) {
      const int64_t total = rows << n;
      probs_kernel<T><<<grid_for(total, kThreads), kThreads, 0, s>>>(psi, total, features);
    } else {
      z_kernel<T><<<row_grid(rows), kRowThreads, 0, s>>>(psi, rows, n, features);
    }
    QAA_CUDA_CHECK_LAUNCH();
  }

  /// grad_theta = 0 for an empty batch.
  static void zero_grad_theta(const Circuit& c, T* grad_theta, const ExecContext& ctx) {
    if (c.n_params() == 0) return;
    DeviceGuard guard(device_of(grad_theta, "grad_theta"));
    QAA_CUDA_CHECK(cudaMemsetAsync(grad_theta, 0, c.n_params() * sizeof(T), stream(ctx)));
  }
};

}  // namespace
}  // namespace cuda

template <typename T>
std::unique_ptr<Backend<T>> make_cuda_backend() {
  return std::make_unique<cuda::CudaBackend<T>>();
}

template std::unique_ptr<Backend<float>> make_cuda_backend<float>();
template std::unique_ptr<Backend<double>> make_cuda_backend<double>();

int cuda_device_count() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

void set_cuda_chunk_bytes(size_t bytes) { cuda::g_chunk_bytes.store(bytes, std::memory_order_relaxed); }
size_t get_cuda_chunk_bytes() { return cuda::chunk_bytes(); }

}  // namespace qaa
