// Parity of a backend with the CPU backend on the fused token-level calls (forward, backward) and the
// state-level calls (apply both ways, vjp), over every kernel shape of the fused engine: n = 1..5 (one thread
// per state, phantom index bits), 6..10 (2..32 threads per state), 11..13 (64..256 threads per state), both
// ansaetze, both readouts, with the edge rows of embedding.hpp: a type-parameterised suite (ParityTest, the
// CpuParity fixture of cpu_parity.hpp), instantiated by backend_fused_emulation_test.cpp and
// backend_fused_cuda_test.cpp.
#pragma once

#include <string>
#include <vector>

#include "cpu_parity.hpp"

namespace qaa::test {

template <typename P>
class ParityTest : public CpuParity<P> {};

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
