// The CUDA backend: the shared backend suites (backend_test_suite.hpp) instantiated for make_cuda_backend,
// plus parity with the CPU backend, chunking, caller workspace, streams and argument errors. Without a CUDA
// device (or driver) every test reports SKIPPED with the reason "no CUDA device".
#include <cuda_runtime.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend_test_suite.hpp"
#include "cpu_parity.hpp"
#include "cuda_memory.hpp"
#include "engine_cuda.hpp"
#include "qaa/backend.hpp"

namespace qaa::test {

struct CudaTraits : MemoryOn<CudaMemory> {
  template <typename T>
  static std::unique_ptr<Backend<T>> make() { return make_cuda_backend<T>(); }
  static std::string skip_reason() {
    static const std::string reason = cuda_device_count() > 0 ? std::string() : std::string("no CUDA device");
    return reason;
  }
};

INSTANTIATE_TYPED_TEST_SUITE_P(Cuda, BackendTest, BackendTypes<CudaTraits>);
INSTANTIATE_TYPED_TEST_SUITE_P(Cuda, BackendVjpTest, BackendFloat64<CudaTraits>);

template <typename T>
std::vector<T> flatten(const std::vector<std::complex<T>>& v) {
  std::vector<T> out;
  out.reserve(2 * v.size());
  for (const auto& a : v) {
    out.push_back(a.real());
    out.push_back(a.imag());
  }
  return out;
}

using RealTypes = ::testing::Types<float, double>;

/// Restores the default chunk size when a test ends.
struct ChunkBytesGuard {
  explicit ChunkBytesGuard(size_t bytes) { set_cuda_chunk_bytes(bytes); }
  ~ChunkBytesGuard() { set_cuda_chunk_bytes(0); }
};

template <typename T>
class CudaBackendTest : public CpuParity<On<CudaTraits, T>> {};

TYPED_TEST_SUITE(CudaBackendTest, RealTypes);

TYPED_TEST(CudaBackendTest, FusedForwardBackwardMatchCpu) {
  for (const char* name : {"ry_cnot_ring", "ry_rz_ring_ry", "ry_layers"}) {
    for (int n : {1, 2, 4, 7, 10}) {
      for (Readout r : {Readout::kZ, Readout::kProbs}) {
        const Circuit c = build_ansatz(name, n, 2);
        const int64_t N = c.dim(), B = 23, d = N > 4 ? N - 3 : N;
        this->check_fused(c, B, d, r, std::string(name) + " n=" + std::to_string(n) + (r == Readout::kZ ? " z" : " probs"));
      }
    }
  }
}

TYPED_TEST(CudaBackendTest, StateLevelApiMatchesCpu) {
  using T = TypeParam;
  using C = std::complex<T>;
  for (int n : {2, 5}) {
    const Circuit c = all_gates_circuit(n);
    const int64_t N = c.dim(), B = 9, d = N - 1;
    const auto theta = this->randn(c.n_params());
    const auto x = this->inputs(B, d);
    T* dth = this->dev(theta);
    // embed
    C* psi = this->template dev_zeros<C>(B * N);
    T* nr = this->template dev_zeros<T>(B);
    this->be->embed(n, this->dev(x), B, d, psi, nr, ExecContext{});
    std::vector<C> psi_cpu(B * N);
    std::vector<T> nr_cpu(B);
    this->cpu->embed(n, x.data(), B, d, psi_cpu.data(), nr_cpu.data(), {});
    expect_close_rel(flatten(this->host(psi, B * N)), flatten(psi_cpu), this->kTol, "embed psi0");
    expect_close_rel(this->host(nr, B), nr_cpu, this->kTol, "embed norms");
    // apply, forward and adjoint
    for (bool adjoint : {false, true}) {
      C* p = this->dev(psi_cpu);
      this->be->apply(c, dth, p, B, adjoint, ExecContext{});
      std::vector<C> q = psi_cpu;
      this->cpu->apply(c, theta.data(), q.data(), B, adjoint, {});
      expect_close_rel(flatten(this->host(p, B * N)), flatten(q), this->kTol,
                       adjoint ? "apply adjoint" : "apply");
    }
    // readouts and the state-level VJP on U psi0
    std::vector<C> fin = psi_cpu;
    this->cpu->apply(c, theta.data(), fin.data(), B, false, {});
    C* dfin = this->dev(fin);
    for (Readout r : {Readout::kZ, Readout::kProbs}) {
      const int64_t F = readout_features(r, n);
      T* f = this->template dev_zeros<T>(B * F);
      this->be->readout(n, dfin, B, r, f, ExecContext{});
      std::vector<T> f_cpu(B * F);
      this->cpu->readout(n, fin.data(), B, r, f_cpu.data(), {});
      expect_close_rel(this->host(f, B * F), f_cpu, this->kTol, "readout");
      const auto g = this->randn(B * F);
      T* gt = this->template dev_zeros<T>(c.n_params());
      T* gp = this->template dev_zeros<T>(B * N);
      this->be->vjp(c, dth, dfin, this->dev(g), r, B, gt, gp, ExecContext{});
      std::vector<T> gt_cpu(c.n_params()), gp_cpu(B * N);
      this->cpu->vjp(c, theta.data(), fin.data(), g.data(), r, B, gt_cpu.data(), gp_cpu.data(), {});
      expect_close_rel(this->host(gt, c.n_params()), gt_cpu, this->kTol, "vjp grad_theta");
      expect_close_rel(this->host(gp, B * N), gp_cpu, this->kTol, "vjp grad_psi0");
    }
    // circuit matrix
    std::vector<C> u_cpu(N * N);
    this->cpu->circuit_matrix(c, theta.data(), u_cpu.data(), {});
    expect_close_rel(flatten(this->matrix(c, theta)), flatten(u_cpu), this->kTol, "circuit_matrix");
  }
}

TYPED_TEST(CudaBackendTest, ChunkingDoesNotChangeResults) {
  using T = TypeParam;
  const Circuit c = build_ansatz("ry_rz_ring_ry", 5, 2);
  const int64_t N = c.dim(), B = 20, d = 29;
  const auto theta = this->randn(c.n_params());
  const auto x = this->inputs(B, d);
  for (Readout r : {Readout::kZ, Readout::kProbs}) {
    const auto g = this->randn(B * readout_features(r, 5));
    const auto gn = this->randn(B);
    const auto whole = this->run_backend(c, theta, x, B, d, r, g, gn);
    ChunkBytesGuard small(3 * N * sizeof(std::complex<T>));  // 3 states per chunk: 7 chunks, the last of 2
    EXPECT_EQ(this->be->workspace_size(Op::kBackward, c, B), this->be->workspace_size(Op::kBackward, c, 3));
    this->expect_same(this->run_backend(c, theta, x, B, d, r, g, gn), whole, this->kTol, "chunked");
  }
}

TYPED_TEST(CudaBackendTest, CallerWorkspaceAndStream) {
  using T = TypeParam;
  const Circuit c = build_ansatz("ry_cnot_ring", 6, 3);
  const int64_t B = 17, d = 50;
  const auto theta = this->randn(c.n_params());
  const auto x = this->inputs(B, d);
  const auto g = this->randn(B * 6);
  const auto gn = this->randn(B);
  const auto ref = this->run_backend(c, theta, x, B, d, Readout::kZ, g, gn);
  size_t need = 0;
  for (Op op : {Op::kForward, Op::kBackward}) need = std::max(need, this->be->workspace_size(op, c, B));
  ASSERT_GT(need, 0u);
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  ExecContext ctx;
  ctx.stream = stream;
  ctx.workspace = this->mem().allocate(need);
  ctx.workspace_bytes = need;
  this->owned.push_back(ctx.workspace);
  const auto got = this->run_backend(c, theta, x, B, d, Readout::kZ, g, gn, ctx);  // host() synchronises the device
  this->expect_same(got, ref, this->kTol, "caller workspace on a non-blocking stream");
  ctx.workspace_bytes = this->be->workspace_size(Op::kBackward, c, B) - 1;
  T* gt = this->template dev_zeros<T>(c.n_params());
  T* gx = this->template dev_zeros<T>(B * d);
  EXPECT_THROW(this->be->backward(c, this->dev(theta), this->dev(x), B, d, Readout::kZ, this->dev(g), nullptr, gt,
                                  gx, ctx),
               std::invalid_argument);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  ASSERT_EQ(cudaStreamDestroy(stream), cudaSuccess);
}

TYPED_TEST(CudaBackendTest, ExtremeMagnitudeRows) {
  // float64: a subnormal row (1/max|x| overflows, so the embedding divides); float32: a row whose norm
  // exceeds FLT_MAX (reported as +inf while the state stays regular). No NaN anywhere, gradients finite.
  using T = TypeParam;
  using C = std::complex<T>;
  std::vector<T> x;
  std::vector<double> want_psi;
  double want_norm;
  if constexpr (std::is_same_v<T, double>) {
    x = {3e-310, 0, 4e-310, 0};
    want_psi = {0.6, 0, 0.8, 0};
    want_norm = 5e-310;
  } else {
    x = {2e38f, 0, 2e38f, 2e38f};
    const double r = 1 / std::sqrt(3.0);
    want_psi = {r, 0, r, r};
    want_norm = std::numeric_limits<double>::infinity();
  }
  const int64_t B = 1, d = 4;
  C* psi = this->template dev_zeros<C>(4);
  T* nr = this->template dev_zeros<T>(1);
  this->be->embed(2, this->dev(x), B, d, psi, nr, ExecContext{});
  const auto p = this->host(psi, 4);
  const T norm = this->host(nr, 1)[0];
  for (int k = 0; k < 4; ++k) EXPECT_NEAR(p[k].real(), want_psi[k], 10 * tol<T>()) << k;
  if (std::isinf(want_norm)) {
    EXPECT_TRUE(std::isinf(norm) && norm > 0);
  } else {
    EXPECT_NEAR(double(norm) / want_norm, 1.0, 1e-9);
  }
  // Loss = norm only (zero feature cotangent): grad_x = psi0, grad_theta = 0.
  const Circuit c = build_ansatz("ry_cnot_ring", 2, 1);
  const std::vector<T> g(2, T(0)), gn(1, T(1));
  const auto theta = this->randn(c.n_params());
  const auto out = this->run_backend(c, theta, x, B, d, Readout::kZ, g, gn);
  for (T f : out.features) EXPECT_TRUE(std::isfinite(f));
  for (T v : out.grad_theta) EXPECT_EQ(v, T(0));
  for (int k = 0; k < 4; ++k) EXPECT_NEAR(out.grad_x[k], want_psi[k], 10 * tol<T>()) << k;
}

TYPED_TEST(CudaBackendTest, ArgumentErrorsAndEmptyBatch) {
  using T = TypeParam;
  const Circuit c = build_ansatz("ry_cnot_ring", 3, 1);
  const std::vector<T> host_x(2 * 8, T(1));
  T* dth = this->dev(this->randn(c.n_params()));
  T* f = this->template dev_zeros<T>(2 * 3);
  T* nr = this->template dev_zeros<T>(2);
  EXPECT_THROW(this->be->forward(c, dth, host_x.data(), 2, 8, Readout::kZ, f, nr, ExecContext{}),
               std::invalid_argument);
  EXPECT_THROW(this->be->forward(c, dth, this->dev(host_x), 2, 9, Readout::kZ, f, nr, ExecContext{}),
               std::invalid_argument);
  // An empty batch still defines grad_theta (= 0).
  T* gt = this->dev(std::vector<T>(c.n_params(), T(1)));
  this->be->backward(c, dth, this->dev(host_x), 0, 8, Readout::kZ, f, nullptr, gt, nullptr, ExecContext{});
  for (T v : this->host(gt, c.n_params())) EXPECT_EQ(v, T(0));
}

}  // namespace qaa::test
