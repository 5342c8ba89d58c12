// CTest entry for the fused CUDA engine (cpp/src/cuda/fused/): the shared backend checks and the CPU parity
// checks on make_fused_cuda_backend (in fused-only mode, no fallback), then parity with the cuStateVec engine
// when it is built in, and bitwise repeatability of grad theta. Without a CUDA device every test reports
// SKIPPED with the reason "no CUDA device".
#include <cstring>
#include <string>
#include <vector>

#include "fused/engine_fused.hpp"
#include "qaa/backend.hpp"
#if QAA_WITH_CUSTATEVEC
#include "engine_cuda.hpp"
#endif

namespace {
std::string fused_skip_reason() {
  static const std::string reason = qaa::fused_cuda_device_count() > 0 ? std::string() : std::string("no CUDA device");
  return reason;
}
}  // namespace

#define QAA_TEST_FACTORY(T) ::qaa::make_fused_cuda_backend<T>(nullptr)
#define QAA_TEST_SKIP_REASON() fused_skip_reason()
#include "backend_checks.hpp"
#include "parity_checks.hpp"

namespace qaa::test {

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
  auto up = [&](const std::vector<float>& h) {
    void* p = be->allocate(h.size() * sizeof(float));
    be->to_device(p, h.data(), h.size() * sizeof(float));
    return static_cast<float*>(p);
  };
  float *dth = up(theta), *dx = up(x), *dg = up(g), *gt = up(theta), *gx = up(x);
  std::vector<float> first(c.n_params()), again(c.n_params());
  for (int rep = 0; rep < 3; ++rep) {
    be->backward(c, dth, dx, B, d, Readout::kZ, dg, nullptr, gt, gx, ExecContext{});
    be->synchronize();
    be->to_host(rep == 0 ? first.data() : again.data(), gt, first.size() * sizeof(float));
    if (rep > 0) EXPECT_EQ(0, std::memcmp(first.data(), again.data(), first.size() * sizeof(float))) << rep;
  }
  for (float* p : {dth, dx, dg, gt, gx}) be->release(p);
}

TEST(FusedCuda, UnsupportedCircuitWithoutFallbackRaises) {
  if (!fused_skip_reason().empty()) GTEST_SKIP() << fused_skip_reason();
  auto be = make_fused_cuda_backend<float>(nullptr);
  const Circuit c = build_ansatz("ry_cnot_ring", 14, 1);
  float* th = static_cast<float*>(be->allocate(64 * sizeof(float)));
  float* x = static_cast<float*>(be->allocate(4 * sizeof(float)));
  float* f = static_cast<float*>(be->allocate(64 * sizeof(float)));
  EXPECT_THROW(be->forward(c, th, x, 1, 4, Readout::kZ, f, f + 32, ExecContext{}), std::invalid_argument);
  for (float* p : {th, x, f}) be->release(p);
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
    for (Backend<double>* be : {fz.get(), cs.get()}) {
      auto up = [&](const std::vector<double>& h) {
        void* p = be->allocate(h.size() * sizeof(double));
        be->to_device(p, h.data(), h.size() * sizeof(double));
        return static_cast<double*>(p);
      };
      double *dth = up(theta), *dx = up(x), *dg = up(g), *gt = up(theta), *gx = up(x), *f = up(g), *nr = up(x);
      be->forward(c, dth, dx, B, d, Readout::kZ, f, nr, ExecContext{});
      be->backward(c, dth, dx, B, d, Readout::kZ, dg, nullptr, gt, gx, ExecContext{});
      be->synchronize();
      std::vector<double> h(g.size() + theta.size() + x.size());
      be->to_host(h.data(), f, g.size() * sizeof(double));
      be->to_host(h.data() + g.size(), gt, theta.size() * sizeof(double));
      be->to_host(h.data() + g.size() + theta.size(), gx, x.size() * sizeof(double));
      out[k++] = h;
      for (double* p : {dth, dx, dg, gt, gx, f, nr}) be->release(p);
    }
    expect_close_rel(out[0], out[1], 1e-12, name);
  }
}
#endif

}  // namespace qaa::test
