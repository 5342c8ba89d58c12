// CTest entry for the fused CUDA engine (cpp/src/cuda/fused/): the shared backend checks and the CPU parity
// checks on make_fused_cuda_backend (in fused-only mode, no fallback), then parity with the cuStateVec engine
// when it is built in, and bitwise repeatability of grad theta. Without a CUDA device every test reports
// SKIPPED with the reason "no CUDA device".
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend_test_suite.hpp"
#include "cuda_memory.hpp"
#include "fused/engine_fused.hpp"
#include "parity_checks.hpp"
#include "qaa/backend.hpp"
#if QAA_WITH_CUSTATEVEC
#include "engine_cuda.hpp"
#endif

namespace qaa::test {

std::string fused_skip_reason() {
  static const std::string reason = fused_cuda_device_count() > 0 ? std::string() : std::string("no CUDA device");
  return reason;
}

struct FusedCudaTraits : MemoryOn<CudaMemory> {
  template <typename T>
  static std::unique_ptr<Backend<T>> make() { return make_fused_cuda_backend<T>(nullptr); }
  static std::string skip_reason() { return fused_skip_reason(); }
};

INSTANTIATE_TYPED_TEST_SUITE_P(FusedCuda, BackendTest, BackendTypes<FusedCudaTraits>);
INSTANTIATE_TYPED_TEST_SUITE_P(FusedCuda, BackendVjpTest, BackendFloat64<FusedCudaTraits>);
INSTANTIATE_TYPED_TEST_SUITE_P(FusedCuda, ParityTest, BackendTypes<FusedCudaTraits>);

/// Device copy of a host vector (test helper; freed by the caller through CudaMemory::release).
template <typename V>
V* upload(const std::vector<V>& h) {
  auto& m = FusedCudaTraits::memory();
  void* p = m.allocate(h.size() * sizeof(V));
  m.to_device(p, h.data(), h.size() * sizeof(V));
  return static_cast<V*>(p);
}

TEST(FusedCuda, GradThetaIsBitwiseRepeatable) {
  if (!fused_skip_reason().empty()) GTEST_SKIP() << fused_skip_reason();
  auto be = make_fused_cuda_backend<float>(nullptr);
  const Circuit c = build_ansatz("ry_cnot_ring", 10, 4);
  const int64_t B = 3000, d = 576;
  std::mt19937_64 rng(11);
  std::normal_distribution<float> nd;
  std::vector<float> theta(c.n_params()), x(B * d), g(B * 10);
  for (auto* v : {&theta, &x, &g})
    for (auto& e : *v) e = nd(rng);
  auto& mem = FusedCudaTraits::memory();
  float *dth = upload(theta), *dx = upload(x), *dg = upload(g), *gt = upload(theta), *gx = upload(x);
  std::vector<float> first(c.n_params()), again(c.n_params());
  for (int rep = 0; rep < 3; ++rep) {
    be->backward(c, dth, dx, B, d, Readout::kZ, dg, nullptr, gt, gx, ExecContext{});
    mem.synchronize();
    mem.to_host(rep == 0 ? first.data() : again.data(), gt, first.size() * sizeof(float));
    if (rep > 0) EXPECT_EQ(0, std::memcmp(first.data(), again.data(), first.size() * sizeof(float))) << rep;
  }
  for (float* p : {dth, dx, dg, gt, gx}) mem.release(p);
}

TEST(FusedCuda, UnsupportedCircuitWithoutFallbackRaises) {
  if (!fused_skip_reason().empty()) GTEST_SKIP() << fused_skip_reason();
  auto be = make_fused_cuda_backend<float>(nullptr);
  const Circuit c = build_ansatz("ry_cnot_ring", 14, 1);
  auto& mem = FusedCudaTraits::memory();
  float* th = upload(std::vector<float>(64, 0.f));
  float* x = upload(std::vector<float>(4, 1.f));
  float* f = upload(std::vector<float>(64, 0.f));
  EXPECT_THROW(be->forward(c, th, x, 1, 4, Readout::kZ, f, f + 32, ExecContext{}), std::invalid_argument);
  for (float* p : {th, x, f}) mem.release(p);
}

#if QAA_WITH_CUSTATEVEC
TEST(FusedCuda, MatchesTheCuStateVecEngine) {
  if (!fused_skip_reason().empty()) GTEST_SKIP() << fused_skip_reason();
  auto fz = make_fused_cuda_backend<double>(nullptr);
  auto cs = make_cuda_backend<double>();
  for (const char* name : {"ry_cnot_ring", "ry_rz_ring_ry"}) {
    const Circuit c = build_ansatz(name, 9, 3);
    const int64_t B = 37, d = 500;
    std::mt19937_64 rng(3);
    std::normal_distribution<double> nd;
    std::vector<double> theta(c.n_params()), x(B * d), g(B * 9);
    for (auto* v : {&theta, &x, &g})
      for (auto& e : *v) e = nd(rng);
    std::vector<double> out[2];
    int k = 0;
    auto& mem = FusedCudaTraits::memory();
    for (Backend<double>* be : {fz.get(), cs.get()}) {
      double *dth = upload(theta), *dx = upload(x), *dg = upload(g), *gt = upload(theta), *gx = upload(x),
             *f = upload(g), *nr = upload(x);
      be->forward(c, dth, dx, B, d, Readout::kZ, f, nr, ExecContext{});
      be->backward(c, dth, dx, B, d, Readout::kZ, dg, nullptr, gt, gx, ExecContext{});
      mem.synchronize();
      std::vector<double> h(g.size() + theta.size() + x.size());
      mem.to_host(h.data(), f, g.size() * sizeof(double));
      mem.to_host(h.data() + g.size(), gt, theta.size() * sizeof(double));
      mem.to_host(h.data() + g.size() + theta.size(), gx, x.size() * sizeof(double));
      out[k++] = h;
      for (double* p : {dth, dx, dg, gt, gx, f, nr}) mem.release(p);
    }
    expect_close_rel(out[0], out[1], 1e-12, name);
  }
}
#endif

}  // namespace qaa::test
