// Plan of the fused statevector kernel: a circuit compiled for states that live in registers.
//
// Layout. A state of n qubits (n_eff = max(n, 5) index bits; for n < 5 the extra "phantom" bits are always 0)
// is held by a group of 2^(n_eff-5) threads with 32 amplitudes each: physical index p = (t << 5) | j, with j
// the register (5 register bits) and t the thread of the group (thread bits). A frame is the GF(2)-linear map
// L from physical to logical index (the logical index k of the state: wire q is bit n-1-q of k): the amplitude
// of basis state L(p) sits at physical position p. A frame is stored as its columns col[i] = L(e_i).
//
// Steps.
//   * kRot: a rotation RX/RY/RZ on one register bit `reg_bit`. The planner emits one only when the frame maps
//     register bit reg_bit to the rotated logical bit and to nothing else (col[reg_bit] = e_b and no other
//     column has bit b), so pairs (j, j ^ 2^reg_bit) are local to a thread and their roles fixed at compile
//     time.
//   * kCZ: a CZ on logical bits a, b: a sign on every amplitude whose logical index has both bits set, in any
//     frame.
//   * kMove: a transpose through shared memory from frame `from` to frame `to`: each thread writes its
//     amplitudes at logical address L_from(p) and reads back L_to(p).
// A CNOT costs no step: it maps the logical index linearly (target bit ^= control bit), so it is composed into
// the current frame (L <- A L) and the next kMove's addresses absorb it (one XOR per amplitude).
//
// The planner needs no device code; the structures are plain data, passed to the kernel as a launch argument.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "qaa/circuit.hpp"

namespace qaa::fused {

inline constexpr int kRegBits = 5;                 // register bits per thread
inline constexpr int kRegs = 1 << kRegBits;        // amplitudes per thread
inline constexpr int kMaxFusedQubits = 13;         // one thread block (256 threads) per state at n = 13
inline constexpr int kMaxSteps = 768;
inline constexpr int kMaxFrames = 96;
inline constexpr int kMaxSlots = 512;              // rotation gates
inline constexpr int kMaxFusedParams = 32767;

enum StepKind : uint8_t { kRot = 0, kCZ = 1, kMove = 2 };

/// One step. kRot: `gate` (GateKind RX/RY/RZ), `reg_bit`, `slot` (rotation index: cos/sin table entry and
/// gradient accumulator). kCZ: logical bits `gate` and `reg_bit`, `frame` (current). kMove: `frame` = to,
/// `slot` = from.
struct Step {
  uint8_t kind;
  uint8_t gate;
  uint8_t reg_bit;
  uint8_t frame;
  int16_t slot;
  int16_t unused;
};

struct Frame {
  uint16_t col[16];  // col[i] = logical image of physical bit i (i < n_eff)
};

struct Plan {
  int n = 0;            // qubits
  int n_eff = 0;        // index bits held (max(n, 5))
  int thread_bits = 0;  // n_eff - 5: a state is held by 2^thread_bits threads
  int n_steps = 0;
  int n_frames = 0;
  int n_slots = 0;      // rotation gates
  int n_params = 0;
  int first_frame = 0;  // frame of the embedded / loaded state
  int last_frame = 0;   // frame of the final state
  int n_moves = 0;      // kMove steps (transposes) of one pass over the circuit
  Step steps[kMaxSteps];
  Frame frames[kMaxFrames];
  int16_t slot_param[kMaxSlots];  // theta index of each rotation slot
  uint8_t slot_gate[kMaxSlots];   // GateKind of each rotation slot
};

/// Threads per block when a state needs fewer (several states per block); a state of 2^thread_bits > 128
/// threads gets a block of its own.
inline constexpr int kBlockThreads = 128;
/// Most blocks of one launch: blocks loop over the batch, so the number of per-group gradient rows (and the
/// order of their reduction) depends only on the batch size.
inline constexpr int64_t kMaxBlocks = 2048;

struct LaunchShape {
  int threads = 0;           // per block
  int groups_per_block = 0;  // states processed side by side in one block
  int64_t blocks = 0;
  int64_t groups = 0;        // blocks * groups_per_block: group g handles rows g, g + groups, g + 2 groups, ...
};

inline LaunchShape launch_shape(int thread_bits, int64_t batch) {
  LaunchShape s;
  const int G = 1 << thread_bits;
  s.threads = G > kBlockThreads ? G : kBlockThreads;
  s.groups_per_block = s.threads / G;
  s.blocks = (batch + s.groups_per_block - 1) / s.groups_per_block;
  if (s.blocks > kMaxBlocks) s.blocks = kMaxBlocks;
  if (s.blocks < 1) s.blocks = 1;
  s.groups = s.blocks * s.groups_per_block;
  return s;
}

/// Compile `c` for the fused kernel, or return nullopt with a reason (too many qubits, gates, frames or
/// parameters for the fixed-size plan).
inline std::optional<Plan> make_plan(const Circuit& c, std::string* why = nullptr) {
  auto fail = [why](const std::string& s) -> std::optional<Plan> {
    if (why) *why = s;
    return std::nullopt;
  };
  const int n = c.n_qubits();
  if (n > kMaxFusedQubits) return fail("n_qubits > " + std::to_string(kMaxFusedQubits));
  if (c.n_params() > kMaxFusedParams) return fail("more than " + std::to_string(kMaxFusedParams) + " parameters");
  auto plan = std::make_optional<Plan>();
  Plan& P = *plan;
  P.n = n;
  P.n_eff = n < kRegBits ? kRegBits : n;
  P.thread_bits = P.n_eff - kRegBits;
  P.n_params = c.n_params();
  const int ne = P.n_eff;

  Frame cur{};
  bool have_frame = false, dirty = true;  // dirty: cur differs from frames[n_frames - 1]
  bool overflow = false;
  auto push_frame = [&]() -> int {
    if (!dirty) return P.n_frames - 1;
    if (P.n_frames >= kMaxFrames) {
      overflow = true;
      return 0;
    }
    P.frames[P.n_frames++] = cur;
    dirty = false;
    return P.n_frames - 1;
  };
  auto push_step = [&](const Step& s) {
    if (P.n_steps >= kMaxSteps) {
      overflow = true;
      return;
    }
    P.steps[P.n_steps++] = s;
  };
  // A permutation frame with logical bits `want` (in order, at most 5) on register bits 0.., the other
  // logical bits after them in ascending order.
  auto permutation = [&](const std::vector<int>& want) {
    Frame f{};
    std::vector<int> order(want);
    for (int b = 0; b < ne; ++b) {
      bool used = false;
      for (int w : want) used = used || w == b;
      if (!used) order.push_back(b);
    }
    for (int i = 0; i < ne; ++i) f.col[i] = static_cast<uint16_t>(1u << order[i]);
    return f;
  };
  // Register bit holding logical bit b alone in the current frame, or -1.
  auto reg_of = [&](int b) {
    if (!have_frame) return -1;
    int found = -1;
    for (int i = 0; i < ne; ++i) {
      if (((cur.col[i] >> b) & 1u) == 0) continue;
      if (cur.col[i] != (1u << b) || found >= 0) return -1;
      found = i;
    }
    return found < kRegBits ? found : -1;
  };
  auto move_to = [&](const Frame& f) {
    if (!have_frame) {
      cur = f;
      have_frame = true;
      dirty = true;
      P.first_frame = push_frame();
      return;
    }
    const int from = push_frame();
    cur = f;
    dirty = true;
    const int to = push_frame();
    push_step(Step{kMove, 0, 0, static_cast<uint8_t>(to), static_cast<int16_t>(from), 0});
    ++P.n_moves;
  };
  auto ensure_frame = [&]() {
    if (!have_frame) move_to(permutation({}));
  };

  std::vector<int> block;  // pending rotation gates (indices into c.gates())
  const auto& gates = c.gates();
  auto flush = [&]() {
    std::vector<int> rest = block;
    block.clear();
    while (!rest.empty() && !overflow) {
      std::vector<int> later;
      for (int gi : rest) {
        const Gate& g = gates[gi];
        const int b = n - 1 - g.wires[0];
        const int r = reg_of(b);
        // A gate waits when its wire is not in a register, or when an earlier gate on its wire waits.
        bool blocked = r < 0;
        for (int li : later) blocked = blocked || gates[li].wires[0] == g.wires[0];
        if (blocked) {
          later.push_back(gi);
          continue;
        }
        if (P.n_slots >= kMaxSlots) {
          overflow = true;
          return;
        }
        const int slot = P.n_slots++;
        P.slot_param[slot] = static_cast<int16_t>(g.param);
        P.slot_gate[slot] = static_cast<uint8_t>(g.kind);
        push_step(Step{kRot, static_cast<uint8_t>(g.kind), static_cast<uint8_t>(r), 0, static_cast<int16_t>(slot), 0});
      }
      if (later.empty()) break;
      std::vector<int> want;
      for (int gi : later) {
        const int b = n - 1 - gates[gi].wires[0];
        bool have = false;
        for (int w : want) have = have || w == b;
        if (!have && static_cast<int>(want.size()) < kRegBits) want.push_back(b);
      }
      move_to(permutation(want));
      rest.swap(later);
    }
  };

  for (int gi = 0; gi < static_cast<int>(gates.size()) && !overflow; ++gi) {
    const Gate& g = gates[gi];
    if (is_rotation(g.kind)) {
      block.push_back(gi);
      continue;
    }
    flush();
    ensure_frame();
    const int a = n - 1 - g.wires[0], b = n - 1 - g.wires[1];
    if (g.kind == GateKind::CNOT) {
      // target bit b ^= control bit a, composed into the frame: col <- A col.
      for (int i = 0; i < ne; ++i) {
        if ((cur.col[i] >> a) & 1u) cur.col[i] = static_cast<uint16_t>(cur.col[i] ^ (1u << b));
      }
      dirty = true;
    } else {  // CZ
      const int f = push_frame();
      push_step(Step{kCZ, static_cast<uint8_t>(a), static_cast<uint8_t>(b), static_cast<uint8_t>(f), 0, 0});
    }
  }
  flush();
  ensure_frame();
  P.last_frame = push_frame();
  if (overflow) return fail("the circuit needs more steps, frames or rotation slots than the fused plan holds");
  return plan;
}

}  // namespace qaa::fused
