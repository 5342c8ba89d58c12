// Parity with the CPU backend: a fixture (CpuParity, On<Traits, T> parameters as in backend_test_suite.hpp)
// that runs the fused token-level calls (forward, then backward) on the backend under test and on the CPU
// backend, on inputs with the edge rows of embedding.hpp, and compares every output. Used by the parity suite
// (parity_checks.hpp) and by the cuStateVec engine's own checks (backend_cuda_test.cpp).
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "backend_test_suite.hpp"

namespace qaa::test {

template <typename P>
class CpuParity : public BackendTest<P> {
 public:
  using T = typename P::T;
  /// Norm-wise relative tolerance of the comparisons with the CPU backend.
  static constexpr double kTol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  std::unique_ptr<Backend<T>> cpu = make_cpu_backend<T>();

  /// Inputs with the edge rows of embedding.hpp: a zero row, a NaN row, an infinite row and a huge row.
  std::vector<T> inputs(int64_t B, int64_t d) {
    auto x = this->randn(B * d);
    if (B >= 5) {
      for (int64_t i = 0; i < d; ++i) x[1 * d + i] = 0;
      x[2 * d + d / 2] = std::numeric_limits<T>::quiet_NaN();
      x[3 * d] = -std::numeric_limits<T>::infinity();
      for (int64_t i = 0; i < d; ++i) x[4 * d + i] *= std::is_same_v<T, float> ? T(1e36) : T(1e300);
    }
    return x;
  }

  /// The outputs of forward then backward.
  struct Fused {
    std::vector<T> features, norms, grad_theta, grad_x;
  };

  /// forward then backward on the backend under test (its device memory, the context `ctx`).
  Fused run_backend(const Circuit& c, const std::vector<T>& theta, const std::vector<T>& x, int64_t B, int64_t d,
                    Readout r, const std::vector<T>& g, const std::vector<T>& gn, const ExecContext& ctx = {}) {
    const int64_t F = readout_features(r, c.n_qubits());
    T* f = this->template dev_zeros<T>(B * F);
    T* nr = this->template dev_zeros<T>(B);
    T* gt = this->template dev_zeros<T>(c.n_params());
    T* gx = this->template dev_zeros<T>(B * d);
    T* dth = this->dev(theta);
    T* dx = this->dev(x);
    T* dg = this->dev(g);
    T* dgn = this->dev(gn);
    this->mem().synchronize();  // uploads done before work on a caller's (possibly non-blocking) stream
    this->be->forward(c, dth, dx, B, d, r, f, nr, ctx);
    this->be->backward(c, dth, dx, B, d, r, dg, dgn, gt, gx, ctx);
    return {this->host(f, B * F), this->host(nr, B), this->host(gt, c.n_params()), this->host(gx, B * d)};
  }

  /// forward then backward on the CPU backend.
  Fused run_cpu(const Circuit& c, const std::vector<T>& theta, const std::vector<T>& x, int64_t B, int64_t d,
                Readout r, const std::vector<T>& g, const std::vector<T>& gn) {
    const int64_t F = readout_features(r, c.n_qubits());
    Fused out{std::vector<T>(B * F), std::vector<T>(B), std::vector<T>(c.n_params()), std::vector<T>(B * d)};
    cpu->forward(c, theta.data(), x.data(), B, d, r, out.features.data(), out.norms.data(), {});
    cpu->backward(c, theta.data(), x.data(), B, d, r, g.data(), gn.data(), out.grad_theta.data(), out.grad_x.data(),
                  {});
    return out;
  }

  void expect_same(const Fused& got, const Fused& want, double tol, const std::string& what) {
    expect_close_rel(got.features, want.features, tol, what + " features");
    expect_close_rel(got.norms, want.norms, tol, what + " norms");
    expect_close_rel(got.grad_theta, want.grad_theta, tol, what + " grad_theta");
    expect_close_rel(got.grad_x, want.grad_x, tol, what + " grad_x");
  }

  /// forward and backward of circuit c on B random edge-row inputs of width d, random cotangents of the
  /// features and norms: the backend under test against the CPU backend.
  void check_fused(const Circuit& c, int64_t B, int64_t d, Readout r, const std::string& what) {
    const auto theta = this->randn(c.n_params());
    const auto x = inputs(B, d);
    const auto g = this->randn(B * readout_features(r, c.n_qubits()));
    const auto gn = this->randn(B);
    expect_same(run_backend(c, theta, x, B, d, r, g, gn), run_cpu(c, theta, x, B, d, r, g, gn), kTol, what);
  }
};

}  // namespace qaa::test
