// The circuit IR and the built-in ansaetze (qaa/circuit.hpp): shapes, errors and size limits.
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <stdexcept>

#include "qaa/circuit.hpp"

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

TEST(Circuit, HugeSizesAreRejectedNotOverflowed) {
  // qubits_for_dim used a signed shift that overflowed (and looped forever) for d > 2^62.
  EXPECT_EQ(qubits_for_dim((int64_t{1} << 62) + 1), 63);
  EXPECT_EQ(qubits_for_dim(std::numeric_limits<int64_t>::max()), 63);
  EXPECT_EQ(qubits_for_dim(int64_t{1} << 21), 21);
  Circuit c(2);
  EXPECT_THROW(c.add_rotation(GateKind::RY, 0, kMaxParams), std::invalid_argument);
  EXPECT_THROW(c.add_rotation(GateKind::RY, 0, std::numeric_limits<int>::max()), std::invalid_argument);
  EXPECT_THROW(c.add_rotation(GateKind::RY, 0, -1), std::invalid_argument);
  EXPECT_THROW(c.reserve_params(kMaxParams + 1), std::invalid_argument);
  EXPECT_EQ(c.n_params(), 0);
  EXPECT_THROW(build_ansatz("ry_cnot_ring", 20, 1 << 30), std::invalid_argument);
  EXPECT_THROW(build_ansatz("ry_rz_ring_ry", 20, kMaxParams / 60 + 1), std::invalid_argument);
}

}  // namespace qaa::test
