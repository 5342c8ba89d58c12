// Compilation of a circuit for the CPU engine: for one theta, the gate list becomes a Program of lane
// operations (rotations with their cos/sin evaluated, runs of CNOT/CZ fused into one signed permutation,
// commuting RY gates grouped) that the gate kernels (gates.hpp) and the adjoint sweep (adjoint.hpp) run.
#pragma once

#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "qaa/circuit.hpp"
#include "qaa/readout.hpp"

namespace qaa::cpu {

/// One operation of a compiled program: a rotation on a stride, or a signed permutation (fused CNOT/CZ run).
template <typename T>
struct LaneOp {
  GateKind kind;      // RX, RY, RZ, or CNOT for "permutation"
  int64_t stride = 0;
  int32_t param = -1;
  T c = 1, s = 0;     // cos(t/2), sin(t/2)
  int32_t perm = -1;  // index into Program::perms
  // Group of up to kMaxGroup (2) commuting RY gates on distinct wires (real path), applied in one pass over
  // the plane: halves the memory sweeps. nk = 0 for a plain op. Gate 0 acts first.
  int nk = 0;
  int64_t gs[3] = {0, 0, 0};
  T gc[3] = {1, 1, 1}, gsn[3] = {0, 0, 0};
  int32_t gp[3] = {-1, -1, -1};
};

inline constexpr int kMaxGroup = 2;

template <typename T>
struct Program {
  std::vector<LaneOp<T>> ops;
  std::vector<std::vector<int32_t>> perms, inv_perms;  // gather index maps
  std::vector<std::vector<T>> signs, inv_signs;        // +-1 per row
};

/// Merge runs of RY ops on distinct wires into groups of up to kMaxGroup (they commute, so the order inside a
/// group is free; the adjoint sweep walks each group backwards).
template <typename T>
void group_rotations(Program<T>& prog) {
  std::vector<LaneOp<T>> out;
  for (const auto& op : prog.ops) {
    if (op.kind == GateKind::RY) {
      LaneOp<T>* last = out.empty() ? nullptr : &out.back();
      bool can = last && last->nk > 0 && last->nk < kMaxGroup;
      for (int j = 0; can && j < last->nk; ++j) can = last->gs[j] != op.stride;
      if (!can) {
        LaneOp<T> g;
        g.kind = GateKind::RY;
        out.push_back(g);
        last = &out.back();
      }
      const int j = last->nk++;
      last->gs[j] = op.stride;
      last->gc[j] = op.c;
      last->gsn[j] = op.s;
      last->gp[j] = op.param;
    } else {
      out.push_back(op);
    }
  }
  prog.ops.swap(out);
}

/// Compile a circuit for one theta: rotations keep their order, each maximal run of CNOT/CZ becomes one
/// signed permutation s'[k] = sign[k] * s[perm[k]] (and its inverse for the adjoint sweep). With `group`
/// (allowed only for a real circuit) runs of RY gates are grouped (group_rotations); the adjoint sweep's
/// real path needs that, a sweep over complex states needs it off.
template <typename T>
Program<T> compile_program(const Circuit& circ, const T* theta, bool group) {
  Program<T> prog;
  const int n = circ.n_qubits();
  const int64_t N = circ.dim();
  const auto& gates = circ.gates();
  size_t i = 0;
  while (i < gates.size()) {
    const Gate& g = gates[i];
    if (is_rotation(g.kind)) {
      LaneOp<T> op;
      op.kind = g.kind;
      op.stride = int64_t{1} << wire_bit(n, g.wires[0]);
      op.param = g.param;
      const double t = static_cast<double>(theta[g.param]) * 0.5;
      op.c = static_cast<T>(std::cos(t));
      op.s = static_cast<T>(std::sin(t));
      prog.ops.push_back(op);
      ++i;
      continue;
    }
    std::vector<int32_t> perm(N);
    std::vector<T> sign(N, T(1));
    for (int64_t k = 0; k < N; ++k) perm[k] = static_cast<int32_t>(k);
    while (i < gates.size() && is_two_qubit(gates[i].kind)) {
      const Gate& h = gates[i];
      const int64_t a = int64_t{1} << wire_bit(n, h.wires[0]);
      const int64_t b = int64_t{1} << wire_bit(n, h.wires[1]);
      if (h.kind == GateKind::CNOT) {
        std::vector<int32_t> np(N);
        std::vector<T> ns(N);
        for (int64_t k = 0; k < N; ++k) {
          const int64_t f = (k & a) ? (k ^ b) : k;
          np[k] = perm[f];
          ns[k] = sign[f];
        }
        perm.swap(np);
        sign.swap(ns);
      } else {  // CZ
        for (int64_t k = 0; k < N; ++k)
          if ((k & a) && (k & b)) sign[k] = -sign[k];
      }
      ++i;
    }
    std::vector<int32_t> inv(N);
    std::vector<T> inv_sign(N);
    for (int64_t k = 0; k < N; ++k) {
      inv[perm[k]] = static_cast<int32_t>(k);
    }
    for (int64_t j = 0; j < N; ++j) inv_sign[j] = sign[inv[j]];
    LaneOp<T> op;
    op.kind = GateKind::CNOT;
    op.perm = static_cast<int32_t>(prog.perms.size());
    prog.ops.push_back(op);
    prog.perms.push_back(std::move(perm));
    prog.signs.push_back(std::move(sign));
    prog.inv_perms.push_back(std::move(inv));
    prog.inv_signs.push_back(std::move(inv_sign));
  }
  if (group && circ.is_real()) group_rotations(prog);
  return prog;
}

}  // namespace qaa::cpu
