// The checks every engine backend must pass: type-parameterised GoogleTest suites (BackendTest,
// BackendVjpTest), instantiated once per backend by its test file (backend_cpu_test.cpp,
// backend_cuda_test.cpp) with On<Traits, T> parameters. A backend's Traits provides
//   template <typename T> static std::unique_ptr<Backend<T>> make();   the backend under test
//   static std::string skip_reason();    non-empty: every check skips (e.g. no GPU)
//   static DeviceMemory& memory();       memory on the backend's device (device_memory.hpp; MemoryOn gives it)
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <complex>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "device_memory.hpp"
#include "qaa/backend.hpp"

namespace qaa::test {

/// Norm-wise relative comparison; infinite entries must match exactly, NaN is never accepted.
template <typename T>
void expect_close_rel(const std::vector<T>& got, const std::vector<T>& want, double rtol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_FALSE(std::isnan(got[i])) << what << " entry " << i;
    if (std::isinf(want[i]) || std::isinf(got[i])) {
      EXPECT_EQ(got[i], want[i]) << what << " entry " << i;
      continue;
    }
    const double e = double(got[i]) - double(want[i]);
    num += e * e;
    den += double(want[i]) * double(want[i]);
  }
  EXPECT_LE(std::sqrt(num), rtol * std::max(std::sqrt(den), 1.0)) << what;
}

/// Parameter of the suites: the backend's traits and the real type.
template <typename BackendTraits, typename Real>
struct On {
  using Traits = BackendTraits;
  using T = Real;
};

/// Base of a backend's Traits: memory() is one process-wide Memory (a DeviceMemory).
template <typename Memory>
struct MemoryOn {
  static DeviceMemory& memory() {
    static Memory m;
    return m;
  }
};

/// float32 and float64 on one backend.
template <typename Traits>
using BackendTypes = ::testing::Types<On<Traits, float>, On<Traits, double>>;
/// float64 only (the finite-difference suite).
template <typename Traits>
using BackendFloat64 = ::testing::Types<On<Traits, double>>;

template <typename P>
class BackendTest : public ::testing::Test {
 public:
  using T = typename P::T;
  using C = std::complex<T>;
  void SetUp() override {
    const std::string reason = P::Traits::skip_reason();
    if (!reason.empty()) GTEST_SKIP() << reason;
    be = P::Traits::template make<T>();
  }

  static DeviceMemory& mem() { return P::Traits::memory(); }

  /// Device copy of a host vector; freed with the fixture.
  template <typename V>
  V* dev(const std::vector<V>& h) {
    void* p = mem().allocate(h.size() * sizeof(V));
    if (!h.empty()) mem().to_device(p, h.data(), h.size() * sizeof(V));
    owned.push_back(p);
    return static_cast<V*>(p);
  }
  template <typename V>
  V* dev_zeros(size_t n) { return dev(std::vector<V>(n, V(0))); }
  template <typename V>
  std::vector<V> host(const V* p, size_t n) {
    mem().synchronize();
    std::vector<V> h(n);
    if (n) mem().to_host(h.data(), p, n * sizeof(V));
    return h;
  }
  void TearDown() override {
    if (be) for (void* p : owned) mem().release(p);
  }

  // ---- host-level conveniences over the device API ----
  std::vector<C> matrix(const Circuit& c, const std::vector<T>& theta) {
    const size_t N = c.dim();
    C* u = dev_zeros<C>(N * N);
    be->circuit_matrix(c, dev(theta), u, ExecContext{});
    return host(u, N * N);
  }
  std::vector<T> forward(const Circuit& c, const std::vector<T>& theta, const std::vector<T>& x, int64_t B,
                         Readout r, std::vector<T>* norms_out = nullptr) {
    const int64_t d = static_cast<int64_t>(x.size()) / B, F = readout_features(r, c.n_qubits());
    T* f = dev_zeros<T>(B * F);
    T* nrm = dev_zeros<T>(B);
    be->forward(c, dev(theta), dev(x), B, d, r, f, nrm, ExecContext{});
    if (norms_out) *norms_out = host(nrm, B);
    return host(f, B * F);
  }
  // Loss L = sum <g, features> + sum gn * norms
  double loss(const Circuit& c, const std::vector<T>& theta, const std::vector<T>& x, int64_t B, Readout r,
              const std::vector<T>& g, const std::vector<T>& gn) {
    std::vector<T> norms;
    const auto f = forward(c, theta, x, B, r, &norms);
    double acc = 0;
    for (size_t i = 0; i < f.size(); ++i) acc += double(f[i]) * double(g[i]);
    for (size_t i = 0; i < norms.size(); ++i) acc += double(norms[i]) * double(gn[i]);
    return acc;
  }

  std::unique_ptr<Backend<T>> be;
  std::vector<void*> owned;
  std::mt19937_64 rng{1234};
  std::vector<T> randn(size_t n, double scale = 1.0) {
    std::normal_distribution<double> nd(0.0, scale);
    std::vector<T> v(n);
    for (auto& e : v) e = static_cast<T>(nd(rng));
    return v;
  }
};

TYPED_TEST_SUITE_P(BackendTest);

template <typename T>
constexpr double tol() { return std::is_same_v<T, float> ? 2e-5 : 1e-12; }

/// A circuit holding every gate kind, with shared parameters.
inline Circuit all_gates_circuit(int n) {
  Circuit c(n);
  int p = 0;
  for (int q = 0; q < n; ++q) c.add_rotation(GateKind::RX, q, p++);
  c.add_two_qubit(GateKind::CNOT, 0, n - 1);
  for (int q = 0; q < n; ++q) c.add_rotation(GateKind::RY, q, p++);
  c.add_two_qubit(GateKind::CZ, n - 1, 0);
  for (int q = 0; q < n; ++q) c.add_rotation(GateKind::RZ, q, p++);
  c.add_two_qubit(GateKind::CNOT, 1, 0);
  c.add_rotation(GateKind::RY, 0, 0);  // shares theta[0] with the first RX
  return c;
}

// ---------------- gate matrices ----------------
TYPED_TEST_P(BackendTest, SingleQubitGateMatrices) {
  using T = typename TypeParam::T;
  using C = std::complex<T>;
  const double t = 0.7318;
  const double c = std::cos(t / 2), s = std::sin(t / 2);
  struct Case { GateKind k; std::complex<double> m[4]; };
  const std::complex<double> I(0, 1);
  const Case cases[] = {
      {GateKind::RX, {c, -I * s, -I * s, c}},
      {GateKind::RY, {c, -s, s, c}},
      {GateKind::RZ, {std::exp(-I * (t / 2)), 0.0, 0.0, std::exp(I * (t / 2))}},
  };
  for (const auto& cs : cases) {
    Circuit circ(1);
    circ.add_rotation(cs.k, 0, 0);
    const auto u = this->matrix(circ, {static_cast<T>(t)});
    for (int i = 0; i < 4; ++i) {
      EXPECT_NEAR(u[i].real(), cs.m[i].real(), tol<T>()) << gate_name(cs.k) << " entry " << i;
      EXPECT_NEAR(u[i].imag(), cs.m[i].imag(), tol<T>()) << gate_name(cs.k) << " entry " << i;
    }
  }
  (void)sizeof(C);
}

TYPED_TEST_P(BackendTest, WireZeroIsMostSignificantBit) {
  using T = typename TypeParam::T;
  // RY(pi) on wire 0 of 2 qubits maps |00> to |10> = basis index 2.
  Circuit circ(2);
  circ.add_rotation(GateKind::RY, 0, 0);
  const auto u = this->matrix(circ, {static_cast<T>(M_PI)});
  EXPECT_NEAR(u[2 * 4 + 0].real(), 1.0, tol<T>());
  EXPECT_NEAR(std::abs(u[1 * 4 + 0]), 0.0, tol<T>());
}

TYPED_TEST_P(BackendTest, TwoQubitGateMatrices) {
  using T = typename TypeParam::T;
  Circuit cn(2);
  cn.add_two_qubit(GateKind::CNOT, 0, 1);  // control wire 0 (MSB)
  const auto u = this->matrix(cn, {});
  const int perm[4] = {0, 1, 3, 2};  // |10> <-> |11>
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) EXPECT_NEAR(u[i * 4 + j].real(), perm[j] == i ? 1.0 : 0.0, tol<T>());
  Circuit cz(2);
  cz.add_two_qubit(GateKind::CZ, 0, 1);
  const auto z = this->matrix(cz, {});
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) EXPECT_NEAR(z[i * 4 + j].real(), i == j ? (i == 3 ? -1.0 : 1.0) : 0.0, tol<T>());
}

TYPED_TEST_P(BackendTest, MatrixIsUnitaryAndAdjointInverts) {
  using T = typename TypeParam::T;
  using C = std::complex<T>;
  const Circuit c = all_gates_circuit(3);
  const auto theta = this->randn(c.n_params());
  const auto u = this->matrix(c, theta);
  const int N = 8;
  for (int i = 0; i < N; ++i)
    for (int j = 0; j < N; ++j) {
      std::complex<double> acc = 0;
      for (int k = 0; k < N; ++k) acc += std::conj(std::complex<double>(u[k * N + i])) * std::complex<double>(u[k * N + j]);
      EXPECT_NEAR(acc.real(), i == j ? 1.0 : 0.0, 10 * tol<T>());
      EXPECT_NEAR(acc.imag(), 0.0, 10 * tol<T>());
    }
  // apply then apply(adjoint) returns the input
  const int64_t B = 3;
  std::vector<C> psi(B * N);
  for (auto& a : psi) a = C(this->randn(1)[0], this->randn(1)[0]);
  C* dpsi = this->dev(psi);
  T* dth = this->dev(theta);
  this->be->apply(c, dth, dpsi, B, false, ExecContext{});
  this->be->apply(c, dth, dpsi, B, true, ExecContext{});
  const auto back = this->host(dpsi, B * N);
  for (size_t i = 0; i < psi.size(); ++i) EXPECT_NEAR(std::abs(back[i] - psi[i]), 0.0, 10 * tol<T>());
}

// ---------------- embedding ----------------
TYPED_TEST_P(BackendTest, EmbeddingNormalisesPadsAndHandlesEdgeRows) {
  using T = typename TypeParam::T;
  using C = std::complex<T>;
  const int n = 3;
  const int64_t d = 5, B = 5;
  const T big = std::is_same_v<T, float> ? T(1e30) : T(1e300);
  const T inf = std::numeric_limits<T>::infinity(), nan = std::numeric_limits<T>::quiet_NaN();
  std::vector<T> x = {3, 0, 4, 0, 0,          // regular: norm 5
                      0, 0, 0, 0, 0,          // zero row
                      big, big, 0, 0, 0,      // would overflow a naive sum of squares
                      1, nan, 2, 0, 0,        // NaN row
                      -inf, 1, inf, 0, 0};    // infinite row: limit (-1, 0, 1)/sqrt 2
  C* psi0 = this->template dev_zeros<C>(B * 8);
  T* norms = this->template dev_zeros<T>(B);
  this->be->embed(n, this->dev(x), B, d, psi0, norms, ExecContext{});
  const auto p = this->host(psi0, B * 8);
  const auto nr = this->host(norms, B);
  EXPECT_NEAR(nr[0], 5.0, 5 * tol<T>());
  EXPECT_NEAR(p[0].real(), 0.6, tol<T>());
  EXPECT_NEAR(p[2].real(), 0.8, tol<T>());
  for (int k = 5; k < 8; ++k) EXPECT_EQ(p[k], C(0));
  EXPECT_EQ(nr[1], T(0));
  for (int k = 0; k < 8; ++k) EXPECT_EQ(p[8 + k], C(0));
  EXPECT_NEAR(nr[2] / big, std::sqrt(2.0), 1e-6);
  EXPECT_NEAR(p[16].real(), 1 / std::sqrt(2.0), tol<T>());
  EXPECT_EQ(nr[3], T(0));
  for (int k = 0; k < 8; ++k) EXPECT_EQ(p[24 + k], C(0));
  EXPECT_TRUE(std::isinf(nr[4]));
  EXPECT_NEAR(p[32].real(), -1 / std::sqrt(2.0), tol<T>());
  EXPECT_NEAR(p[33].real(), 0.0, tol<T>());
  EXPECT_NEAR(p[34].real(), 1 / std::sqrt(2.0), tol<T>());
  for (const auto& a : p) EXPECT_TRUE(std::isfinite(a.real()) && std::isfinite(a.imag()));
}

// ---------------- norm preservation and readout ranges ----------------
TYPED_TEST_P(BackendTest, NormPreservedAndReadoutRanges) {
  using T = typename TypeParam::T;
  for (const char* name : {"ry_cnot_ring", "ry_rz_ring_ry", "ry_layers"}) {
    const Circuit c = build_ansatz(name, 5, 3);
    const auto theta = this->randn(c.n_params());
    const int64_t B = 7, d = 27;
    const auto x = this->randn(B * d);
    const auto probs = this->forward(c, theta, x, B, Readout::kProbs);
    const auto z = this->forward(c, theta, x, B, Readout::kZ);
    for (int64_t b = 0; b < B; ++b) {
      double s = 0;
      for (int k = 0; k < 32; ++k) {
        EXPECT_GE(probs[b * 32 + k], T(0));
        s += probs[b * 32 + k];
      }
      EXPECT_NEAR(s, 1.0, 10 * tol<T>()) << name;
      for (int q = 0; q < 5; ++q) {
        EXPECT_LE(std::fabs(z[b * 5 + q]), 1.0 + 10 * tol<T>());
        // <Z_q> from the probabilities
        double zq = 0;
        for (int k = 0; k < 32; ++k) zq += ((k >> (4 - q)) & 1 ? -1.0 : 1.0) * probs[b * 32 + k];
        EXPECT_NEAR(z[b * 5 + q], zq, 10 * tol<T>());
      }
    }
  }
}

TYPED_TEST_P(BackendTest, FusedForwardEqualsStateLevelPipeline) {
  using T = typename TypeParam::T;
  using C = std::complex<T>;
  const Circuit c = build_ansatz("ry_rz_ring_ry", 4, 2);
  const auto theta = this->randn(c.n_params());
  const int64_t B = 5, d = 13, N = 16;
  const auto x = this->randn(B * d);
  const auto fused = this->forward(c, theta, x, B, Readout::kZ);
  C* psi = this->template dev_zeros<C>(B * N);
  T* nrm = this->template dev_zeros<T>(B);
  T* f = this->template dev_zeros<T>(B * 4);
  T* dth = this->dev(theta);
  this->be->embed(4, this->dev(x), B, d, psi, nrm, ExecContext{});
  this->be->apply(c, dth, psi, B, false, ExecContext{});
  this->be->readout(4, psi, B, Readout::kZ, f, ExecContext{});
  const auto staged = this->host(f, B * 4);
  for (size_t i = 0; i < staged.size(); ++i) EXPECT_NEAR(fused[i], staged[i], 10 * tol<T>());
}

// ---------------- adjoint VJP against central finite differences (float64) ----------------
inline double rel_err(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-300);
}

/// Central finite differences (loss(v + eps e_i) - loss(v - eps e_i)) / (2 eps) for every entry i of v.
template <typename Loss>
std::vector<double> central_differences(const std::vector<double>& v, Loss&& loss, double eps = 1e-6) {
  std::vector<double> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    auto vp = v, vm = v;
    vp[i] += eps;
    vm[i] -= eps;
    out[i] = (loss(vp) - loss(vm)) / (2 * eps);
  }
  return out;
}

template <typename Fixture>
void check_fused_vjp(Fixture* f, const Circuit& c, Readout r, int64_t B, int64_t d) {
  using T = double;
  const auto theta = f->randn(c.n_params());
  auto x = f->randn(B * d);
  const int64_t F = readout_features(r, c.n_qubits());
  const auto g = f->randn(B * F);
  const auto gn = f->randn(B);
  T* gt = f->template dev_zeros<T>(c.n_params());
  T* gx = f->template dev_zeros<T>(B * d);
  f->be->backward(c, f->dev(theta), f->dev(x), B, d, r, f->dev(g), f->dev(gn), gt, gx, ExecContext{});
  const auto grad_theta = f->host(gt, c.n_params());
  const auto grad_x = f->host(gx, B * d);
  const auto fd_theta =
      central_differences(theta, [&](const std::vector<T>& th) { return f->loss(c, th, x, B, r, g, gn); });
  const auto fd_x =
      central_differences(x, [&](const std::vector<T>& xs) { return f->loss(c, theta, xs, B, r, g, gn); });
  EXPECT_LT(rel_err(grad_theta, fd_theta), 1e-7);
  EXPECT_LT(rel_err(grad_x, fd_x), 1e-7);
}

/// The finite-difference checks, run in float64 only (instantiate with On<Traits, double>).
template <typename P>
class BackendVjpTest : public BackendTest<P> {};
TYPED_TEST_SUITE_P(BackendVjpTest);

TYPED_TEST_P(BackendVjpTest, EveryGateKindBothReadouts) {
  for (Readout r : {Readout::kZ, Readout::kProbs}) check_fused_vjp(this, all_gates_circuit(3), r, 3, 7);
}

TYPED_TEST_P(BackendVjpTest, BothAnsaetzeBothReadouts) {
  for (const char* name : {"ry_cnot_ring", "ry_rz_ring_ry", "ry_layers"})
    for (Readout r : {Readout::kZ, Readout::kProbs}) check_fused_vjp(this, build_ansatz(name, 3, 2), r, 2, 6);
}

TYPED_TEST_P(BackendVjpTest, StateLevelVjpMatchesFiniteDifferences) {
  using C = std::complex<double>;
  for (Readout r : {Readout::kZ, Readout::kProbs}) {
    const Circuit c = all_gates_circuit(3);
    const int64_t B = 2, N = 8, F = readout_features(r, 3);
    const auto theta = this->randn(c.n_params());
    const auto psi0 = this->randn(B * N);  // real, unnormalised input state: the VJP is linear algebra only
    const auto g = this->randn(B * F);
    auto run = [&](const std::vector<double>& th, const std::vector<double>& p0) {
      std::vector<C> cp(p0.begin(), p0.end());
      C* dpsi = this->dev(cp);
      this->be->apply(c, this->dev(th), dpsi, B, false, ExecContext{});
      double* f = this->template dev_zeros<double>(B * F);
      this->be->readout(3, dpsi, B, r, f, ExecContext{});
      const auto h = this->host(f, B * F);
      double acc = 0;
      for (size_t i = 0; i < h.size(); ++i) acc += h[i] * g[i];
      return std::make_pair(acc, this->host(dpsi, B * N));
    };
    const auto psi = run(theta, psi0).second;
    double* gt = this->template dev_zeros<double>(c.n_params());
    double* gp = this->template dev_zeros<double>(B * N);
    this->be->vjp(c, this->dev(theta), this->dev(psi), this->dev(g), r, B, gt, gp, ExecContext{});
    const auto grad_theta = this->host(gt, c.n_params());
    const auto grad_psi0 = this->host(gp, B * N);
    const auto fd_t = central_differences(theta, [&](const std::vector<double>& th) { return run(th, psi0).first; });
    const auto fd_p = central_differences(psi0, [&](const std::vector<double>& p0) { return run(theta, p0).first; });
    EXPECT_LT(rel_err(grad_theta, fd_t), 1e-7);
    EXPECT_LT(rel_err(grad_psi0, fd_p), 1e-7);
  }
}

TYPED_TEST_P(BackendTest, EdgeRowsGiveZeroOutputAndGradient) {
  using T = typename TypeParam::T;
  const Circuit c = build_ansatz("ry_cnot_ring", 3, 2);
  const auto theta = this->randn(c.n_params());
  const T nan = std::numeric_limits<T>::quiet_NaN();
  const std::vector<T> x = {0, 0, 0, 0, 0, nan, 1, 2, 3, 4};
  const int64_t B = 2, d = 5;
  const auto f = this->forward(c, theta, x, B, Readout::kZ);
  for (T v : f) EXPECT_EQ(v, T(0));
  const std::vector<T> g(B * 3, T(1));
  T* gt = this->template dev_zeros<T>(c.n_params());
  T* gx = this->template dev_zeros<T>(B * d);
  this->be->backward(c, this->dev(theta), this->dev(x), B, d, Readout::kZ, this->dev(g), nullptr, gt, gx,
                     ExecContext{});
  for (T v : this->host(gt, c.n_params())) EXPECT_EQ(v, T(0));
  for (T v : this->host(gx, B * d)) EXPECT_EQ(v, T(0));
}

TYPED_TEST_P(BackendTest, Float32AgreesWithFloat64) {
  using T = typename TypeParam::T;
  if (std::is_same_v<T, double>) GTEST_SKIP() << "compares float32 against float64";
  auto be64 = TypeParam::Traits::template make<double>();
  DeviceMemory& mem = this->mem();
  const Circuit c = build_ansatz("ry_rz_ring_ry", 6, 2);
  const int64_t B = 4, d = 50;
  const auto th32 = this->randn(c.n_params());
  const auto x32 = this->randn(B * d);
  const auto f32 = this->forward(c, th32, x32, B, Readout::kZ);
  std::vector<double> th(th32.begin(), th32.end()), x(x32.begin(), x32.end());
  auto d_alloc = [&](const std::vector<double>& h) {
    void* p = mem.allocate(h.size() * sizeof(double));
    mem.to_device(p, h.data(), h.size() * sizeof(double));
    return static_cast<double*>(p);
  };
  double* dth = d_alloc(th);
  double* dx = d_alloc(x);
  double* f = d_alloc(std::vector<double>(B * 6));
  double* nr = d_alloc(std::vector<double>(B));
  be64->forward(c, dth, dx, B, d, Readout::kZ, f, nr, ExecContext{});
  std::vector<double> f64(B * 6);
  mem.synchronize();
  mem.to_host(f64.data(), f, f64.size() * sizeof(double));
  for (size_t i = 0; i < f64.size(); ++i) EXPECT_NEAR(f32[i], f64[i], 1e-5);
  for (void* p : {(void*)dth, (void*)dx, (void*)f, (void*)nr}) mem.release(p);
}

REGISTER_TYPED_TEST_SUITE_P(BackendTest, SingleQubitGateMatrices, WireZeroIsMostSignificantBit, TwoQubitGateMatrices, MatrixIsUnitaryAndAdjointInverts, EmbeddingNormalisesPadsAndHandlesEdgeRows, NormPreservedAndReadoutRanges, FusedForwardEqualsStateLevelPipeline, EdgeRowsGiveZeroOutputAndGradient, Float32AgreesWithFloat64);
REGISTER_TYPED_TEST_SUITE_P(BackendVjpTest, EveryGateKindBothReadouts, BothAnsaetzeBothReadouts,
                            StateLevelVjpMatchesFiniteDifferences);

}  // namespace qaa::test
