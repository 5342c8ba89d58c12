// The CPU backend: the shared backend suites (backend_test_suite.hpp) instantiated for make_cpu_backend,
// and the checks only the CPU backend has (thread-count independence, extreme rows against the host embedding).
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "backend_test_suite.hpp"
#include "qaa/backend.hpp"

namespace qaa::test {

struct CpuTraits : MemoryOn<HostMemory> {
  template <typename T>
  static std::unique_ptr<Backend<T>> make() { return make_cpu_backend<T>(); }
  static std::string skip_reason() { return {}; }
};

INSTANTIATE_TYPED_TEST_SUITE_P(Cpu, BackendTest, BackendTypes<CpuTraits>);
INSTANTIATE_TYPED_TEST_SUITE_P(Cpu, BackendVjpTest, BackendFloat64<CpuTraits>);

TEST(CpuThreads, ResultsIndependentOfThreadCount) {
  auto be = make_cpu_backend<double>();
  const Circuit c = build_ansatz("ry_rz_ring_ry", 5, 2);
  std::vector<double> theta(c.n_params()), x(37 * 20), g(37 * 5), gt1(c.n_params()), gt2(c.n_params());
  std::vector<double> gx1(x.size()), gx2(x.size());
  for (size_t i = 0; i < theta.size(); ++i) theta[i] = 0.1 * i;
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37 * i);
  for (size_t i = 0; i < g.size(); ++i) g[i] = std::cos(0.11 * i);
  set_cpu_threads(1);
  be->backward(c, theta.data(), x.data(), 37, 20, Readout::kZ, g.data(), nullptr, gt1.data(), gx1.data(), {});
  set_cpu_threads(2);
  be->backward(c, theta.data(), x.data(), 37, 20, Readout::kZ, g.data(), nullptr, gt2.data(), gx2.data(), {});
  set_cpu_threads(0);
  for (size_t i = 0; i < gt1.size(); ++i) EXPECT_NEAR(gt1[i], gt2[i], 1e-12);
  for (size_t i = 0; i < gx1.size(); ++i) EXPECT_EQ(gx1[i], gx2[i]);
}

/// Rows a fine-tuning run meets: zero (padding), NaN, +-inf, norms beyond T's range, subnormal, and regular.
using RealTypes = ::testing::Types<float, double>;

template <typename T>
class CpuEdgeRows : public ::testing::Test {};
TYPED_TEST_SUITE(CpuEdgeRows, RealTypes);

TYPED_TEST(CpuEdgeRows, ExtremeMagnitudesStayFiniteAndNeverNaN) {
  using T = TypeParam;
  using C = std::complex<T>;
  auto be = make_cpu_backend<T>();
  const T inf = std::numeric_limits<T>::infinity(), nan = std::numeric_limits<T>::quiet_NaN();
  const T big = std::numeric_limits<T>::max() * T(0.9), sub = std::numeric_limits<T>::denorm_min() * T(3);
  const int64_t d = 6, B = 9;
  const std::vector<T> x = {
      0, 0, 0, 0, 0, 0,                   // zero
      1, nan, 0, 0, 0, 0,                 // NaN
      inf, -inf, 1, 0, 0, 0,              // infinities
      big, big, -big, big, 0, 0,          // ||x|| overflows T
      sub, -sub, sub, 0, 0, 0,            // subnormal: 1/max|x| overflows
      std::numeric_limits<T>::min(), 0, 0, 0, 0, 0,  // smallest normal
      big, sub, 0, 0, 0, 0,               // huge and tiny together
      1, 2, 3, 4, 5, 6,                   // regular
      -1, 0.5, 0, 0, 0, 2};               // regular
  for (const char* name : {"ry_cnot_ring", "ry_rz_ring_ry", "ry_layers"}) {
    const Circuit c = build_ansatz(name, 3, 2);
    std::vector<T> theta(c.n_params());
    for (size_t i = 0; i < theta.size(); ++i) theta[i] = T(0.3) * T(i + 1);
    for (Readout r : {Readout::kZ, Readout::kProbs}) {
      const int64_t F = readout_features(r, 3);
      std::vector<T> f(B * F), nrm(B), f2(B * F);
      be->forward(c, theta.data(), x.data(), B, d, r, f.data(), nrm.data(), {});
      for (T v : f) EXPECT_TRUE(std::isfinite(v));
      for (int64_t k = 0; k < F; ++k) EXPECT_EQ(f[k], T(0));
      for (int64_t k = 0; k < F; ++k) EXPECT_EQ(f[F + k], T(0));
      EXPECT_EQ(nrm[0], T(0));
      EXPECT_EQ(nrm[1], T(0));
      EXPECT_EQ(nrm[2], inf);
      EXPECT_EQ(nrm[3], inf);
      EXPECT_GT(nrm[4], T(0));
      if (r == Readout::kProbs) {
        for (int64_t b = 2; b < B; ++b) {
          double s = 0;
          for (int64_t k = 0; k < F; ++k) s += f[b * F + k];
          EXPECT_NEAR(s, 1.0, 1e-5) << "row " << b;
        }
      }
      // the state-level pipeline agrees with the fused one
      std::vector<C> psi(B * 8);
      std::vector<T> n2(B);
      be->embed(3, x.data(), B, d, psi.data(), n2.data(), {});
      be->apply(c, theta.data(), psi.data(), B, false, {});
      be->readout(3, psi.data(), B, r, f2.data(), {});
      for (int64_t i = 0; i < B * F; ++i) EXPECT_NEAR(f[i], f2[i], 1e-5);
      // gradients: finite for every row with a finite true gradient, zero for rows without a state, never NaN
      std::vector<T> g(B * F, T(1)), gn(B, T(1)), gt(c.n_params(), T(7)), gx(B * d, T(7));
      be->backward(c, theta.data(), x.data(), B, d, r, g.data(), gn.data(), gt.data(), gx.data(), {});
      for (T v : gt) EXPECT_TRUE(std::isfinite(v));
      for (int64_t i = 0; i < B * d; ++i) EXPECT_FALSE(std::isnan(gx[i])) << "grad_x[" << i << "]";
      for (int64_t i = 0; i < 3 * d; ++i) EXPECT_EQ(gx[i], T(0));
      for (int64_t i = 3 * d; i < 4 * d; ++i) EXPECT_TRUE(std::isfinite(gx[i]));  // 1/||x|| -> 0
      for (int64_t i = 7 * d; i < B * d; ++i) EXPECT_TRUE(std::isfinite(gx[i]));
    }
  }
}

TYPED_TEST(CpuEdgeRows, EmptyBatchTouchesNothing) {
  using T = TypeParam;
  auto be = make_cpu_backend<T>();
  const Circuit c = build_ansatz("ry_rz_ring_ry", 3, 1);
  std::vector<T> theta(c.n_params(), T(0.1)), gt(c.n_params(), T(5));
  be->forward(c, theta.data(), nullptr, 0, 8, Readout::kZ, nullptr, nullptr, {});
  be->backward(c, theta.data(), nullptr, 0, 8, Readout::kZ, nullptr, nullptr, gt.data(), nullptr, {});
  for (T v : gt) EXPECT_EQ(v, T(0));
  be->embed(3, nullptr, 0, 8, nullptr, nullptr, {});
  be->apply(c, theta.data(), nullptr, 0, true, {});
  be->readout(3, nullptr, 0, Readout::kProbs, nullptr, {});
  std::fill(gt.begin(), gt.end(), T(5));
  be->vjp(c, theta.data(), nullptr, nullptr, Readout::kZ, 0, gt.data(), nullptr, {});
  for (T v : gt) EXPECT_EQ(v, T(0));
}

}  // namespace qaa::test
