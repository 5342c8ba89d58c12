// Parity of a backend with the CPU backend on the fused token-level calls (forward, backward) and the
// state-level calls (apply both ways, vjp), over every kernel shape of the fused engine: n = 1..5 (one thread
// per state, phantom index bits), 6..10 (2..32 threads per state), 11..13 (64..256 threads per state), both
// ansaetze, both readouts, with the edge rows of embedding.hpp: a type-parameterised suite (ParityTest,
// On<Traits, T> parameters as in backend_test_suite.hpp), instantiated by backend_fused_emulation_test.cpp and
// backend_fused_cuda_test.cpp.
#pragma once

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "backend_test_suite.hpp"

namespace qaa::test {

template <typename P>
class ParityTest : public BackendTest<P> {
 public:
  using T = typename P::T;
  std::unique_ptr<Backend<T>> cpu = make_cpu_backend<T>();
  static constexpr double kTol = std::is_same_v<T, float> ? 1e-5 : 1e-12;

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

  void check_fused(const Circuit& c, int64_t B, int64_t d, Readout r, const std::string& what) {
    const int64_t F = readout_features(r, c.n_qubits());
    const auto theta = this->randn(c.n_params());
    const auto x = inputs(B, d);
    const auto g = this->randn(B * F);
    const auto gn = this->randn(B);
    T* f = this->template dev_zeros<T>(B * F);
    T* nr = this->template dev_zeros<T>(B);
    T* gt = this->template dev_zeros<T>(c.n_params());
    T* gx = this->template dev_zeros<T>(B * d);
    T* dth = this->dev(theta);
    T* dx = this->dev(x);
    this->be->forward(c, dth, dx, B, d, r, f, nr, ExecContext{});
    this->be->backward(c, dth, dx, B, d, r, this->dev(g), this->dev(gn), gt, gx, ExecContext{});
    std::vector<T> f_c(B * F), nr_c(B), gt_c(c.n_params()), gx_c(B * d);
    cpu->forward(c, theta.data(), x.data(), B, d, r, f_c.data(), nr_c.data(), {});
    cpu->backward(c, theta.data(), x.data(), B, d, r, g.data(), gn.data(), gt_c.data(), gx_c.data(), {});
    expect_close_rel(this->host(f, B * F), f_c, kTol, what + " features");
    expect_close_rel(this->host(nr, B), nr_c, kTol, what + " norms");
    expect_close_rel(this->host(gt, c.n_params()), gt_c, kTol, what + " grad_theta");
    expect_close_rel(this->host(gx, B * d), gx_c, kTol, what + " grad_x");
  }
};

TYPED_TEST_SUITE_P(ParityTest);

TYPED_TEST_P(ParityTest, FusedCallsMatchCpuAtEveryKernelShape) {
  for (const char* name : {"ry_cnot_ring", "ry_rz_ring_ry"}) {
    for (int n : {1, 2, 3, 5, 6, 8, 10, 11, 13}) {
      for (Readout r : {Readout::kZ, Readout::kProbs}) {
        if (n == 13 && r == Readout::kProbs) continue;  // the probs path is shape-independent; keeps CI short
        const Circuit c = build_ansatz(name, n, 2);
        const int64_t N = c.dim(), B = n >= 11 ? 5 : 11, d = N > 4 ? N - 3 : N;
        this->check_fused(c, B, d, r, std::string(name) + " n=" + std::to_string(n) + (r == Readout::kZ ? " z" : " probs"));
      }
    }
  }
}

TYPED_TEST_P(ParityTest, GeneralCircuitsMatchCpu) {
  // CZ, RX, RZ, shared parameters and CNOTs in both directions, on every kernel shape
  for (int n : {2, 4, 7, 12}) {
    for (Readout r : {Readout::kZ, Readout::kProbs}) {
      this->check_fused(all_gates_circuit(n), 6, int64_t{1} << n, r, "all gates n=" + std::to_string(n));
    }
  }
}

TYPED_TEST_P(ParityTest, StateLevelCallsMatchCpu) {
  using T = typename TypeParam::T;
  using C = std::complex<T>;
  for (int n : {3, 7, 11}) {
    const Circuit c = all_gates_circuit(n);
    const int64_t N = c.dim(), B = 4;
    const auto theta = this->randn(c.n_params());
    std::vector<C> psi(B * N);
    for (auto& a : psi) a = C(this->randn(1)[0], this->randn(1)[0]);
    T* dth = this->dev(theta);
    for (bool adjoint : {false, true}) {
      C* p = this->dev(psi);
      this->be->apply(c, dth, p, B, adjoint, ExecContext{});
      std::vector<C> q = psi;
      this->cpu->apply(c, theta.data(), q.data(), B, adjoint, {});
      const auto got = this->host(p, B * N);
      std::vector<T> a, b;
      for (size_t i = 0; i < q.size(); ++i) {
        a.push_back(got[i].real()), a.push_back(got[i].imag());
        b.push_back(q[i].real()), b.push_back(q[i].imag());
      }
      expect_close_rel(a, b, this->kTol, std::string("apply n=") + std::to_string(n) + (adjoint ? " adjoint" : ""));
    }
    for (Readout r : {Readout::kZ, Readout::kProbs}) {
      const int64_t F = readout_features(r, n);
      const auto g = this->randn(B * F);
      T* gt = this->template dev_zeros<T>(c.n_params());
      T* gp = this->template dev_zeros<T>(B * N);
      this->be->vjp(c, dth, this->dev(psi), this->dev(g), r, B, gt, gp, ExecContext{});
      std::vector<T> gt_c(c.n_params()), gp_c(B * N);
      this->cpu->vjp(c, theta.data(), psi.data(), g.data(), r, B, gt_c.data(), gp_c.data(), {});
      expect_close_rel(this->host(gt, c.n_params()), gt_c, this->kTol, "vjp grad_theta n=" + std::to_string(n));
      expect_close_rel(this->host(gp, B * N), gp_c, this->kTol, "vjp grad_psi0 n=" + std::to_string(n));
    }
  }
}

REGISTER_TYPED_TEST_SUITE_P(ParityTest, FusedCallsMatchCpuAtEveryKernelShape, GeneralCircuitsMatchCpu,
                            StateLevelCallsMatchCpu);

}  // namespace qaa::test
