// CUDA backend of the qaa engine on cuStateVec (design notes: README.md in this folder).
//
// Gates: custatevecApplyMatrixBatched, BROADCAST map (one matrix shared by the whole batch), with the 2x2
// matrices built on the device from theta by build_matrices_kernel (theta never travels to the host), the
// adjoint flag for inverse gates, and CNOT / CZ as X / Z with one control bit. Everything else (embedding,
// readouts, observable, derivative terms and their reduction) are the kernels of kernels_cuda.cuh.
#include <algorithm>
#include <atomic>
#include <complex>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda_support.cuh"
#include "engine_cuda.hpp"
#include "kernels_cuda.cuh"

namespace qaa {

namespace cuda {
namespace {

constexpr size_t kDefaultChunkBytes = size_t{128} << 20;
std::atomic<size_t> g_chunk_bytes{0};

/// Most state vectors one cuStateVec call gets (its nSVs is 32-bit).
constexpr int64_t kMaxSvsPerCall = int64_t{1} << 30;
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

/// Host-side view of a circuit for the device: rotation slots and their descriptors.
struct Plan {
  int n = 0;
  int64_t N = 0;
  int R = 0;                      // rotation gates
  int P = 0;                      // parameters
  bool has_two_qubit = false;
  std::vector<int32_t> slot;      // per gate: rotation slot (matrix index) or -1
  std::vector<int32_t> codes;     // per rotation slot: param * 4 + kind
};

Plan make_plan(const Circuit& c) {
  Plan p;
  p.n = c.n_qubits();
  p.N = c.dim();
  p.P = c.n_params();
  p.slot.reserve(c.gates().size());
  for (const Gate& g : c.gates()) {
    if (is_rotation(g.kind)) {
      p.slot.push_back(p.R++);
      p.codes.push_back(g.param * 4 + static_cast<int32_t>(g.kind));
    } else {
      p.slot.push_back(-1);
      p.has_two_qubit = true;
    }
  }
  return p;
}

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

template <typename T>
struct TypeInfo;
template <>
struct TypeInfo<float> {
  static constexpr cudaDataType_t data = CUDA_C_32F;
  static constexpr custatevecComputeType_t compute = CUSTATEVEC_COMPUTE_32F;
};
template <>
struct TypeInfo<double> {
  static constexpr cudaDataType_t data = CUDA_C_64F;
  static constexpr custatevecComputeType_t compute = CUSTATEVEC_COMPUTE_64F;
};

/// Build the device gate matrices of `plan` from device theta (see build_matrices_kernel).
template <typename T>
void build_matrices(const Plan& plan, const T* theta, Amp<T>* mats, int32_t* rot_param, cudaStream_t stream) {
  int done = 0;
  do {
    RotationBatch rb{};
    rb.offset = done;
    rb.count = std::min(plan.R - done, kRotationsPerLaunch);
    rb.const_slot = plan.R;
    rb.write_consts = done == 0 ? 1 : 0;
    for (int i = 0; i < rb.count; ++i) rb.code[i] = plan.codes[done + i];
    build_matrices_kernel<T><<<1, kRotationsPerLaunch, 0, stream>>>(rb, theta, mats, rot_param);
    QAA_CUDA_CHECK_LAUNCH();
    done += rb.count;
  } while (done < plan.R);
}

/// Applies the gates of one circuit to contiguous batches of states through cuStateVec.
template <typename T>
class GateRunner {
 public:
  /// `max_svs`: the most states any later call passes (sizes cuStateVec's extra workspace, normally 0).
  GateRunner(custatevecHandle_t handle, const Circuit& c, const Plan& plan, const Amp<T>* mats, int64_t max_svs,
             cudaStream_t stream)
      : handle_(handle), circuit_(c), plan_(plan), mats_(mats), extra_(extra_bytes(handle, plan, mats, max_svs), stream) {}

  /// Apply gate `gi` (or its inverse when `adjoint`) to `rows` states sv[rows, N].
  void gate(Amp<T>* sv, int64_t rows, size_t gi, bool adjoint) {
    const Gate& g = circuit_.gates()[gi];
    const int n = plan_.n;
    const Amp<T>* m;
    int32_t target, control = -1;
    if (is_rotation(g.kind)) {
      target = n - 1 - g.wires[0];
      m = mats_ + 4 * int64_t(plan_.slot[gi]);
    } else {
      // CNOT(c, t) = X on t controlled by c; CZ(a, b) = Z on b controlled by a (symmetric).
      target = n - 1 - g.wires[1];
      control = n - 1 - g.wires[0];
      m = mats_ + 4 * int64_t(plan_.R + (g.kind == GateKind::CNOT ? 0 : 1));
    }
    const uint32_t n_controls = control >= 0 ? 1u : 0u;
    for (int64_t b0 = 0; b0 < rows; b0 += kMaxSvsPerCall) {
      const int64_t cnt = std::min(rows - b0, kMaxSvsPerCall);
      QAA_CUSV_CHECK(custatevecApplyMatrixBatched(
          handle_, sv + b0 * plan_.N, TypeInfo<T>::data, static_cast<uint32_t>(n), static_cast<uint32_t>(cnt),
          static_cast<custatevecIndex_t>(plan_.N), CUSTATEVEC_MATRIX_MAP_TYPE_BROADCAST, nullptr, m,
          TypeInfo<T>::data, CUSTATEVEC_MATRIX_LAYOUT_ROW, adjoint ? 1 : 0, 1, &target, 1,
          n_controls ? &control : nullptr, nullptr, n_controls, TypeInfo<T>::compute, extra_.get(), extra_.size()));
    }
  }

  /// Apply the whole circuit (U), or its inverse (U^dagger: gates reversed, each adjoint).
  void circuit(Amp<T>* sv, int64_t rows, bool adjoint) {
    const size_t G = circuit_.gates().size();
    if (!adjoint) {
      for (size_t gi = 0; gi < G; ++gi) gate(sv, rows, gi, false);
    } else {
      for (size_t gi = G; gi-- > 0;) gate(sv, rows, gi, true);
    }
  }

 private:
  static size_t extra_bytes(custatevecHandle_t h, const Plan& plan, const Amp<T>* mats, int64_t max_svs) {
    size_t need = 0;
    const uint32_t svs = static_cast<uint32_t>(std::clamp<int64_t>(max_svs, 1, kMaxSvsPerCall));
    for (uint32_t n_controls : {0u, 1u}) {
      if (n_controls == 0 && plan.R == 0) continue;
      if (n_controls == 1 && !plan.has_two_qubit) continue;
      size_t bytes = 0;
      QAA_CUSV_CHECK(custatevecApplyMatrixBatchedGetWorkspaceSize(
          h, TypeInfo<T>::data, static_cast<uint32_t>(plan.n), svs, static_cast<custatevecIndex_t>(plan.N),
          CUSTATEVEC_MATRIX_MAP_TYPE_BROADCAST, nullptr, mats, TypeInfo<T>::data, CUSTATEVEC_MATRIX_LAYOUT_ROW, 0, 1,
          1, n_controls, TypeInfo<T>::compute, &bytes));
      need = std::max(need, bytes);
    }
    return need;
  }

  custatevecHandle_t handle_;
  const Circuit& circuit_;
  const Plan& plan_;
  const Amp<T>* mats_;
  TempBuffer extra_;
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
    const cudaStream_t s = stream(ctx);
    const Plan plan = make_plan(c);
    const Layout L = make_layout(Op::kApply, c, B, sizeof(A));
    Scratch scratch(ctx, L.total, s);
    A* mats = scratch.at<A>(L.mats);
    build_matrices<T>(plan, theta, mats, scratch.at<int32_t>(L.rot_param), s);
    auto lease = HandleCache::acquire(dev, s);
    GateRunner<T> run(lease.handle, c, plan, mats, B, s);
    run.circuit(amp(psi), B, adjoint);
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
    const int n = c.n_qubits();
    const int64_t N = c.dim(), F = readout_features(r, n);
    const Plan plan = make_plan(c);
    const Layout L = make_layout(Op::kVjp, c, B, sizeof(A));
    Scratch scratch(ctx, L.total, s);
    A* mats = scratch.at<A>(L.mats);
    build_matrices<T>(plan, theta, mats, scratch.at<int32_t>(L.rot_param), s);
    start_grads(plan, scratch, L, s);
    auto lease = HandleCache::acquire(dev, s);
    GateRunner<T> run(lease.handle, c, plan, mats, 2 * L.chunk, s);
    A* phi = scratch.at<A>(L.states);
    for (int64_t b0 = 0; b0 < B; b0 += L.chunk) {
      const int64_t rows = std::min(L.chunk, B - b0);
      A* lam = phi + rows * N;  // phi and lam adjacent: one cuStateVec call moves both
      QAA_CUDA_CHECK(cudaMemcpyAsync(phi, amp(psi) + b0 * N, rows * N * sizeof(A), cudaMemcpyDeviceToDevice, s));
      observable_kernel<T><<<grid_for(rows * N, kThreads), kThreads, 0, s>>>(
          phi, lam, grad_features + b0 * F, rows * N, n, r == Readout::kProbs ? 1 : 0);
      QAA_CUDA_CHECK_LAUNCH();
      adjoint_sweep(run, c, plan, L, scratch, phi, rows, s);
      two_re_kernel<T><<<grid_for(rows * N, kThreads), kThreads, 0, s>>>(lam, rows * N, grad_psi0 + b0 * N);
      QAA_CUDA_CHECK_LAUNCH();
    }
    finish_grads(plan, scratch, L, grad_theta, s);
  }

  void circuit_matrix(const Circuit& c, const T* theta, Complex* u, const ExecContext& ctx) override {
    const int dev = device_of(u, "u");
    DeviceGuard guard(dev);
    const cudaStream_t s = stream(ctx);
    const int n = c.n_qubits();
    const int64_t N = c.dim();
    const Plan plan = make_plan(c);
    const Layout L = make_layout(Op::kMatrix, c, N, sizeof(A));
    Scratch scratch(ctx, L.total, s);
    A* mats = scratch.at<A>(L.mats);
    build_matrices<T>(plan, theta, mats, scratch.at<int32_t>(L.rot_param), s);
    // Row j of u starts as e_j and becomes U e_j (column j of U); the transpose puts it in place.
    identity_kernel<T><<<grid_for(N * N, kThreads), kThreads, 0, s>>>(amp(u), n);
    QAA_CUDA_CHECK_LAUNCH();
    {
      auto lease = HandleCache::acquire(dev, s);
      GateRunner<T> run(lease.handle, c, plan, mats, N, s);
      run.circuit(amp(u), N, false);
    }
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
    const Plan plan = make_plan(c);
    const Layout L = make_layout(Op::kForward, c, B, sizeof(A));
    Scratch scratch(ctx, L.total, s);
    A* mats = scratch.at<A>(L.mats);
    build_matrices<T>(plan, theta, mats, scratch.at<int32_t>(L.rot_param), s);
    auto lease = HandleCache::acquire(dev, s);
    GateRunner<T> run(lease.handle, c, plan, mats, L.chunk, s);
    A* psi = scratch.at<A>(L.states);
    for (int64_t b0 = 0; b0 < B; b0 += L.chunk) {
      const int64_t rows = std::min(L.chunk, B - b0);
      embed_kernel<T><<<row_grid(rows), kRowThreads, 0, s>>>(x + b0 * d, rows, d, N, psi, norms + b0);
      QAA_CUDA_CHECK_LAUNCH();
      run.circuit(psi, rows, false);
      launch_readout(psi, rows, n, r, features + b0 * F, s);
    }
  }

  void backward(const Circuit& c, const T* theta, const T* x, int64_t B, int64_t d, Readout r,
                const T* grad_features, const T* grad_norms, T* grad_theta, T* grad_x,
                const ExecContext& ctx) override {
    const int n = c.n_qubits();
    const int64_t N = c.dim(), F = readout_features(r, n);
    check_width(d, N);
    if (B == 0) {
      zero_grad_theta(c, grad_theta, ctx);
      return;
    }
    const int dev = device_of(x, "x");
    DeviceGuard guard(dev);
    const cudaStream_t s = stream(ctx);
    const Plan plan = make_plan(c);
    const Layout L = make_layout(Op::kBackward, c, B, sizeof(A));
    Scratch scratch(ctx, L.total, s);
    A* mats = scratch.at<A>(L.mats);
    build_matrices<T>(plan, theta, mats, scratch.at<int32_t>(L.rot_param), s);
    start_grads(plan, scratch, L, s);
    auto lease = HandleCache::acquire(dev, s);
    GateRunner<T> run(lease.handle, c, plan, mats, 2 * L.chunk, s);
    A* phi = scratch.at<A>(L.states);
    for (int64_t b0 = 0; b0 < B; b0 += L.chunk) {
      const int64_t rows = std::min(L.chunk, B - b0);
      A* lam = phi + rows * N;
      embed_kernel<T><<<row_grid(rows), kRowThreads, 0, s>>>(x + b0 * d, rows, d, N, phi, nullptr);
      QAA_CUDA_CHECK_LAUNCH();
      run.circuit(phi, rows, false);
      observable_kernel<T><<<grid_for(rows * N, kThreads), kThreads, 0, s>>>(
          phi, lam, grad_features + b0 * F, rows * N, n, r == Readout::kProbs ? 1 : 0);
      QAA_CUDA_CHECK_LAUNCH();
      adjoint_sweep(run, c, plan, L, scratch, phi, rows, s);
      embed_vjp_kernel<T><<<row_grid(rows), kRowThreads, 0, s>>>(
          x + b0 * d, rows, d, N, lam, grad_norms ? grad_norms + b0 : nullptr, grad_x + b0 * d);
      QAA_CUDA_CHECK_LAUNCH();
    }
    finish_grads(plan, scratch, L, grad_theta, s);
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

  static void start_grads(const Plan& plan, const Scratch& scratch, const Layout& L, cudaStream_t s) {
    if (plan.R > 0) QAA_CUDA_CHECK(cudaMemsetAsync(scratch.at<double>(L.gate_acc), 0, plan.R * sizeof(double), s));
  }

  /// Sum the per-rotation accumulators into grad_theta[P] (on the device; no host sync).
  static void finish_grads(const Plan& plan, const Scratch& scratch, const Layout& L, T* grad_theta,
                           cudaStream_t s) {
    if (plan.P == 0) return;
    finalize_grad_kernel<T><<<(plan.P + kThreads - 1) / kThreads, kThreads, 0, s>>>(
        scratch.at<double>(L.gate_acc), scratch.at<int32_t>(L.rot_param), plan.R, plan.P, grad_theta);
    QAA_CUDA_CHECK_LAUNCH();
  }

  /// Adjoint sweep over one chunk. On entry phi[rows, N] = U psi0 and lam[rows, N] (adjacent to phi) = O phi;
  /// on exit lam = U^dagger O U psi0. Each rotation's derivative term goes to its partial sums before the
  /// gate is undone on both phi and lam; the chunk's terms are then added to the per-rotation accumulators.
  static void adjoint_sweep(GateRunner<T>& run, const Circuit& c, const Plan& plan, const Layout& L,
                            const Scratch& scratch, A* phi, int64_t rows, cudaStream_t s) {
    const A* lam = phi + rows * plan.N;
    double* partial = scratch.at<double>(L.partial);
    for (size_t gi = c.gates().size(); gi-- > 0;) {
      const Gate& g = c.gates()[gi];
      const int r = plan.slot[gi];
      if (r >= 0) {
        rotation_grad_kernel<T><<<L.grad_blocks, kThreads, 0, s>>>(static_cast<int>(g.kind), phi, lam, rows, plan.n,
                                                                   plan.n - 1 - g.wires[0],
                                                                   partial + int64_t(r) * L.grad_blocks);
        QAA_CUDA_CHECK_LAUNCH();
      }
      run.gate(phi, 2 * rows, gi, true);
    }
    if (plan.R > 0) {
      accumulate_partials_kernel<<<(plan.R + kThreads - 1) / kThreads, kThreads, 0, s>>>(
          partial, L.grad_blocks, plan.R, scratch.at<double>(L.gate_acc));
      QAA_CUDA_CHECK_LAUNCH();
    }
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
