// CTest entry for the host emulation of the fused CUDA kernel (cpp/src/cuda/fused/): the shared backend checks
// plus parity with the CPU backend over the qubit counts of every kernel shape (one thread per state through
// 256 threads per state), the plan's structure (transposes per layer, CNOT rings folded, no step of their
// own) and bitwise repeatability of grad theta. Needs no GPU: this is the kernel's per-state algorithm.
#include <cmath>
#include <cstring>
#include <random>
#include <limits>
#include <string>
#include <vector>

#include "backend_test_suite.hpp"
#include "fused/fused_emulation.hpp"
#include "fused/fused_plan.hpp"
#include "parity_checks.hpp"
#include "qaa/backend.hpp"

namespace qaa::test {

struct FusedEmulationTraits : MemoryOn<HostMemory> {
  template <typename T>
  static std::unique_ptr<Backend<T>> make() { return make_fused_emulation_backend<T>(); }
  static std::string skip_reason() { return {}; }
};

INSTANTIATE_TYPED_TEST_SUITE_P(FusedEmulation, BackendTest, BackendTypes<FusedEmulationTraits>);
INSTANTIATE_TYPED_TEST_SUITE_P(FusedEmulation, BackendVjpTest, BackendFloat64<FusedEmulationTraits>);
INSTANTIATE_TYPED_TEST_SUITE_P(FusedEmulation, ParityTest, BackendTypes<FusedEmulationTraits>);

TEST(FusedPlan, RingIsFoldedAndLayersNeedAtMostTwoTransposes) {
  for (int n : {1, 2, 4, 5, 6, 9, 10, 11, 13}) {
    const Circuit c = build_ansatz("ry_cnot_ring", n, 4);
    const auto plan = fused::make_plan(c);
    ASSERT_TRUE(plan.has_value()) << n;
    int rot = 0, cz = 0, moves = 0;
    for (int k = 0; k < plan->n_steps; ++k) {
      const auto& s = plan->steps[k];
      rot += s.kind == fused::kRot;
      cz += s.kind == fused::kCZ;
      moves += s.kind == fused::kMove;
    }
    EXPECT_EQ(rot, 4 * n) << n;
    EXPECT_EQ(cz, 0) << n;  // CNOTs are frame changes, never steps
    const int per_layer = (n + fused::kRegBits - 1) / fused::kRegBits;  // register loads per layer
    // the first register load is the embedding's own frame; each later one, and each layer after a ring, a
    // transpose
    EXPECT_LE(moves, 4 * per_layer - 1 + (n > 1 ? 0 : 0)) << n;
    EXPECT_EQ(plan->thread_bits, std::max(n, 5) - 5) << n;
  }
  const auto p10 = fused::make_plan(build_ansatz("ry_cnot_ring", 10, 4));
  EXPECT_EQ(p10->n_moves, 7);  // 2 per layer, the first load free
}

TEST(FusedPlan, TooLargeCircuitsAreRejectedWithAReason) {
  std::string why;
  EXPECT_FALSE(fused::make_plan(build_ansatz("ry_cnot_ring", 14, 1), &why).has_value());
  EXPECT_NE(why.find("n_qubits"), std::string::npos);
  EXPECT_FALSE(fused::make_plan(build_ansatz("ry_rz_ring_ry", 10, 40), &why).has_value());
}

TEST(FusedEmulation, GradThetaIsBitwiseRepeatable) {
  auto be = make_fused_emulation_backend<float>();
  const Circuit c = build_ansatz("ry_cnot_ring", 10, 2);
  const int64_t B = 9, d = 1000;
  std::mt19937_64 rng(7);
  std::normal_distribution<float> nd;
  std::vector<float> theta(c.n_params()), x(B * d), g(B * 10), gx(B * d);
  for (auto* v : {&theta, &x, &g})
    for (auto& e : *v) e = nd(rng);
  std::vector<float> gt1(c.n_params()), gt2(c.n_params());
  be->backward(c, theta.data(), x.data(), B, d, Readout::kZ, g.data(), nullptr, gt1.data(), gx.data(), {});
  be->backward(c, theta.data(), x.data(), B, d, Readout::kZ, g.data(), nullptr, gt2.data(), gx.data(), {});
  EXPECT_EQ(0, std::memcmp(gt1.data(), gt2.data(), gt1.size() * sizeof(float)));
}

}  // namespace qaa::test
