// CTest entry for the CPU backend: runs the shared backend checks against make_cpu_backend.
#include <string>

#include "qaa/backend.hpp"

#define QAA_TEST_FACTORY(T) ::qaa::make_cpu_backend<T>()
#define QAA_TEST_SKIP_REASON() std::string()
#include "backend_checks.hpp"

namespace qaa::test {

TEST(Circuit, AnsatzShapesAndErrors) {
  const Circuit c = build_ansatz("ry_cnot_ring", 10, 4);
  EXPECT_EQ(c.n_params(), 40);
  EXPECT_EQ(c.gates().size(), 4u * (10 + 10));
  EXPECT_TRUE(c.is_real());
  const Circuit r = build_ansatz("ry_rz_ring_ry", 4, 2);
  EXPECT_EQ(r.n_params(), 24);
  EXPECT_FALSE(r.is_real());
  EXPECT_THROW(build_ansatz("nope", 3, 1), std::invalid_argument);
  EXPECT_THROW(build_ansatz("ry_cnot_ring", 0, 1), std::invalid_argument);
  EXPECT_THROW(build_ansatz("ry_cnot_ring", 3, 0), std::invalid_argument);
  EXPECT_THROW(build_ansatz("ry_cnot_ring", kMaxQubits + 1, 1), std::invalid_argument);
  Circuit k(3);
  EXPECT_THROW(k.add_rotation(GateKind::RY, 3, 0), std::invalid_argument);
  EXPECT_THROW(k.add_rotation(GateKind::CNOT, 0, 0), std::invalid_argument);
  EXPECT_THROW(k.add_two_qubit(GateKind::CNOT, 1, 1), std::invalid_argument);
  EXPECT_EQ(qubits_for_dim(576), 10);
  EXPECT_EQ(qubits_for_dim(1024), 10);
  EXPECT_EQ(qubits_for_dim(1025), 11);
  EXPECT_EQ(qubits_for_dim(1), 1);
}

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

}  // namespace qaa::test
