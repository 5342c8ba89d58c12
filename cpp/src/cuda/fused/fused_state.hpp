// The per-state algorithm of the fused kernel, written once for the device (one CUDA thread per "lane" of a
// group) and for the host emulation (plain C++ looping over the lanes of a group). See fused_plan.hpp for the
// layout, frames and steps.
//
// An executor `Ex` supplies what differs between the two:
//   Ex::kGroupMax          upper bound of lanes per group (for host arrays; unused on the device)
//   int lanes() const      lanes per group, 2^thread_bits
//   void each(F f)         run f(Lane& lane, int t) for this thread's lane (device) or every lane (host)
//   void sync()            barrier of the group between the two halves of a transpose
//   V reduce(F f, Op op)   combine f(lane, t) over the group in a fixed order (xor butterfly over offsets
//                          min(lanes,32)/2 .. 1 inside each warp of 32 lanes, then the warp totals in warp
//                          order); every lane gets the result. The host emulation follows the same order, so
//                          its reductions round exactly as the device's.
//   T* buf_re, *buf_im     the group's shared-memory transpose buffer (2^n_eff + 2^(n_eff-5) entries each)
// Embedding and readout math are those of the CPU backend (qaa/embedding.hpp, qaa/readout.hpp).
#pragma once

#include <cmath>
#include <cstdint>

#include "fused_plan.hpp"
#include "qaa/embedding.hpp"
#include "qaa/host_device.hpp"
#include "qaa/readout.hpp"

// Full unrolling of the loops over a lane's registers, so register indices are compile-time constants.
// (nvcc: the device pass unrolls; its host pass needs nothing. A host compiler: GCC's unroll pragma.)
#if defined(__CUDA_ARCH__)
#define QAA_UNROLL _Pragma("unroll")
#elif defined(__CUDACC__)
#define QAA_UNROLL
#elif defined(__GNUC__) && !defined(__clang__)
#define QAA_UNROLL _Pragma("GCC unroll 32")
#else
#define QAA_UNROLL
#endif

namespace qaa::fused {

template <int V>
struct IntC {
  static constexpr int value = V;
};

/// 32 amplitudes of one lane (im unused on the real path).
template <typename T, bool CPLX>
struct Regs {
  T re[kRegs];
  T im[CPLX ? kRegs : 1];
};

template <typename T, bool CPLX>
struct Lane {
  Regs<T, CPLX> phi, lam;
};

using hd::MaxOp;
using hd::SumOp;

QAA_HOST_DEVICE inline int pad_index(uint32_t k) { return static_cast<int>(k + (k >> kRegBits)); }
QAA_HOST_DEVICE inline int buffer_entries(int n_eff) { return (1 << n_eff) + (1 << (n_eff - kRegBits)); }

/// Logical index of thread t's physical bits under frame f (the register bits contribute reg_part).
QAA_HOST_DEVICE inline uint32_t thread_part(const Frame& f, int thread_bits, int t) {
  uint32_t k = 0;
  for (int i = 0; i < thread_bits; ++i) {
    if ((t >> i) & 1) k ^= f.col[kRegBits + i];
  }
  return k;
}

/// reg[j] = logical image of register index j under frame f.
QAA_HOST_DEVICE inline void reg_parts(const Frame& f, uint32_t (&reg)[kRegs]) {
  reg[0] = 0;
QAA_UNROLL
  for (int j = 1; j < kRegs; ++j) {
    int low = 0;
    while (!((j >> low) & 1)) ++low;
    reg[j] = reg[j & (j - 1)] ^ f.col[low];
  }
}

/// body(j, k) for each register j of thread t, k the logical index of its amplitude under frame f. The loop is
/// fully unrolled, so j is a compile-time constant in every copy of the body.
template <typename F>
QAA_HOST_DEVICE inline void for_each_amp(const Frame& f, int thread_bits, int t, F&& body) {
  uint32_t reg[kRegs];
  reg_parts(f, reg);
  const uint32_t base = thread_part(f, thread_bits, t);
QAA_UNROLL
  for (int j = 0; j < kRegs; ++j) body(j, base ^ reg[j]);
}

/// body(lane, j, k) for every lane of the group and each of its registers j (k as in for_each_amp).
template <typename T, bool CPLX, typename Ex, typename F>
QAA_HOST_DEVICE inline void each_amp(Ex& ex, const Plan& P, const Frame& f, F&& body) {
  ex.each([&](Lane<T, CPLX>& L, int t) {
    for_each_amp(f, P.thread_bits, t, [&](int j, uint32_t k) { body(L, j, k); });
  });
}

/// Call f(IntC<b>{}) for the runtime register bit b (so register indices stay compile-time constants).
template <typename F>
QAA_HOST_DEVICE inline void with_reg_bit(int b, F&& f) {
  switch (b) {
    case 0: f(IntC<0>{}); break;
    case 1: f(IntC<1>{}); break;
    case 2: f(IntC<2>{}); break;
    case 3: f(IntC<3>{}); break;
    default: f(IntC<4>{}); break;
  }
}

/// Rotation of kind `gate` (RX, RY, RZ) with cos/sin of half the angle, on register bit BIT of one lane.
/// The inverse is the same call with -s.
template <int BIT, typename T, bool CPLX>
QAA_HOST_DEVICE inline void rotate(Regs<T, CPLX>& r, int gate, T c, T s) {
  constexpr int lo = (1 << BIT) - 1;
  if (!CPLX || gate == static_cast<int>(GateKind::RY)) {
QAA_UNROLL
    for (int i = 0; i < kRegs / 2; ++i) {
      const int j0 = ((i & ~lo) << 1) | (i & lo), j1 = j0 | (1 << BIT);
      const T a = r.re[j0], b = r.re[j1];
      r.re[j0] = c * a - s * b;
      r.re[j1] = s * a + c * b;
      if constexpr (CPLX) {
        const T ai = r.im[j0], bi = r.im[j1];
        r.im[j0] = c * ai - s * bi;
        r.im[j1] = s * ai + c * bi;
      }
    }
  } else if constexpr (CPLX) {
    if (gate == static_cast<int>(GateKind::RX)) {
QAA_UNROLL
      for (int i = 0; i < kRegs / 2; ++i) {
        const int j0 = ((i & ~lo) << 1) | (i & lo), j1 = j0 | (1 << BIT);
        const T ar = r.re[j0], ai = r.im[j0], br = r.re[j1], bi = r.im[j1];
        r.re[j0] = c * ar + s * bi;  // c a - i s b
        r.im[j0] = c * ai - s * br;
        r.re[j1] = c * br + s * ai;  // -i s a + c b
        r.im[j1] = c * bi - s * ar;
      }
    } else {  // RZ: diag(c - i s, c + i s)
QAA_UNROLL
      for (int i = 0; i < kRegs / 2; ++i) {
        const int j0 = ((i & ~lo) << 1) | (i & lo), j1 = j0 | (1 << BIT);
        const T ar = r.re[j0], ai = r.im[j0], br = r.re[j1], bi = r.im[j1];
        r.re[j0] = c * ar + s * ai;
        r.im[j0] = c * ai - s * ar;
        r.re[j1] = c * br - s * bi;
        r.im[j1] = c * bi + s * br;
      }
    }
  }
}

/// This lane's part of Im <lam| P |phi> for the rotation's generator P (X, Y or Z) on register bit BIT: the
/// derivative term dL/dtheta = 2 Re <lam| (-i/2) P |phi> of the adjoint method.
template <int BIT, typename T, bool CPLX>
QAA_HOST_DEVICE inline T grad_term(const Regs<T, CPLX>& phi, const Regs<T, CPLX>& lam, int gate) {
  constexpr int lo = (1 << BIT) - 1;
  T acc = 0;
  if (!CPLX || gate == static_cast<int>(GateKind::RY)) {
QAA_UNROLL
    for (int i = 0; i < kRegs / 2; ++i) {
      const int j0 = ((i & ~lo) << 1) | (i & lo), j1 = j0 | (1 << BIT);
      acc += lam.re[j1] * phi.re[j0] - lam.re[j0] * phi.re[j1];
      if constexpr (CPLX) acc += lam.im[j1] * phi.im[j0] - lam.im[j0] * phi.im[j1];
    }
  } else if constexpr (CPLX) {
    const bool x = gate == static_cast<int>(GateKind::RX);
QAA_UNROLL
    for (int i = 0; i < kRegs / 2; ++i) {
      const int j0 = ((i & ~lo) << 1) | (i & lo), j1 = j0 | (1 << BIT);
      if (x) {
        acc += (lam.re[j0] * phi.im[j1] - lam.im[j0] * phi.re[j1]) + (lam.re[j1] * phi.im[j0] - lam.im[j1] * phi.re[j0]);
      } else {
        acc += (lam.re[j0] * phi.im[j0] - lam.im[j0] * phi.re[j0]) - (lam.re[j1] * phi.im[j1] - lam.im[j1] * phi.re[j1]);
      }
    }
  }
  return acc;
}

/// Cos and sin of half of each rotation slot's angle (sign flipped by the caller for inverses).
template <typename T>
struct HalfAngles {
  const T* c;
  const T* s;
};

/// c = cos(theta[param] / 2), s = sin(theta[param] / 2) of every rotation slot, in T.
template <typename T>
QAA_HOST_DEVICE inline void half_angle(const T* theta, int param, T* c, T* s) {
  const T h = theta[param] / T(2);
#if defined(__CUDA_ARCH__)
  *c = cos(h);
  *s = sin(h);
#else
  *c = std::cos(h);
  *s = std::sin(h);
#endif
}

/// Per-call arguments of the fused state program.
template <typename T>
struct Args {
  int64_t batch = 0;
  int64_t d = 0;                // input width (embedding modes)
  int readout = 0;              // Readout
  const T* x = nullptr;         // [B, d]
  const T* psi_in = nullptr;    // [B, N] complex (interleaved), state-level modes
  T* psi_out = nullptr;         // [B, N] complex
  const T* grad_features = nullptr;
  const T* grad_norms = nullptr;
  T* features = nullptr;
  T* norms = nullptr;
  T* grad_x = nullptr;
  T* grad_psi0 = nullptr;       // [B, N] real
  double* grad_acc = nullptr;   // [groups, n_slots]: this group's running sums of the rotation derivative terms
};

enum class Mode : int {
  kForward = 0,   // x -> features, norms
  kBackward = 1,  // x, grad_features, grad_norms -> grad_x, grad_acc
  kApply = 2,     // psi_in -> U psi (psi_out)
  kApplyAdj = 3,  // psi_in -> U^dagger psi (psi_out)
  kVjp = 4,       // final psi_in, grad_features -> grad_psi0 (2 Re lambda), grad_acc
};

/// Store every lane's phi (LAM false) or lam (LAM true) registers to the group buffer (STORE true) or load them
/// from it (STORE false), at the addresses of their logical indices under frame f; then the group barrier.
template <typename T, bool CPLX, bool LAM, bool STORE, typename Ex>
QAA_HOST_DEVICE void buffer_regs(Ex& ex, const Plan& P, const Frame& f) {
  each_amp<T, CPLX>(ex, P, f, [&](Lane<T, CPLX>& L, int j, uint32_t k) {
    Regs<T, CPLX>& r = LAM ? L.lam : L.phi;
    const int a = pad_index(k);
    if constexpr (STORE) {
      ex.buf_re[a] = r.re[j];
      if constexpr (CPLX) ex.buf_im[a] = r.im[j];
    } else {
      r.re[j] = ex.buf_re[a];
      if constexpr (CPLX) r.im[j] = ex.buf_im[a];
    }
  });
  ex.sync();
}

/// Move every lane's phi (LAM false) or lam (LAM true) registers from frame `from` to frame `to` through the
/// group buffer. (Template flags, not runtime choices, so the registers are never addressed indirectly.)
template <typename T, bool CPLX, bool LAM, typename Ex>
QAA_HOST_DEVICE void transpose(Ex& ex, const Plan& P, int from, int to) {
  buffer_regs<T, CPLX, LAM, true>(ex, P, P.frames[from]);
  buffer_regs<T, CPLX, LAM, false>(ex, P, P.frames[to]);
}

/// CZ on logical bits a, b in the frame f.
template <typename T, bool CPLX>
QAA_HOST_DEVICE void apply_cz(Regs<T, CPLX>& r, const Plan& P, const Frame& f, int t, int a, int b) {
  const uint32_t both = (1u << a) | (1u << b);
  for_each_amp(f, P.thread_bits, t, [&](int j, uint32_t k) {
    if ((k & both) == both) {
      r.re[j] = -r.re[j];
      if constexpr (CPLX) r.im[j] = -r.im[j];
    }
  });
}

/// The circuit on phi (and lam when `both`), forward (U) or reversed (U^dagger, from the last frame).
/// With `grads`, the reverse pass adds each rotation's derivative term to grad_acc[slot] (lane 0).
template <typename T, bool CPLX, bool REVERSE, bool BOTH, bool GRADS, typename Ex>
QAA_HOST_DEVICE void run_circuit(Ex& ex, const Plan& P, const HalfAngles<T>& ha, double* grad_acc) {
  for (int k = 0; k < P.n_steps; ++k) {
    const Step st = P.steps[REVERSE ? P.n_steps - 1 - k : k];
    if (st.kind == kRot) {
      const T c = ha.c[st.slot];
      const T s = REVERSE ? -ha.s[st.slot] : ha.s[st.slot];
      if constexpr (GRADS) {
        const T g = ex.reduce(
            [&](Lane<T, CPLX>& L, int) {
              T v = 0;
              with_reg_bit(st.reg_bit, [&](auto bit) { v = grad_term<decltype(bit)::value>(L.phi, L.lam, st.gate); });
              return v;
            },
            SumOp{});
        if (grad_acc != nullptr && ex.leader()) grad_acc[st.slot] += static_cast<double>(g);
      }
      ex.each([&](Lane<T, CPLX>& L, int) {
        with_reg_bit(st.reg_bit, [&](auto bit) {
          rotate<decltype(bit)::value>(L.phi, st.gate, c, s);
          if constexpr (BOTH) rotate<decltype(bit)::value>(L.lam, st.gate, c, s);
        });
      });
    } else if (st.kind == kCZ) {
      ex.each([&](Lane<T, CPLX>& L, int t) {
        apply_cz(L.phi, P, P.frames[st.frame], t, st.gate, st.reg_bit);
        if constexpr (BOTH) apply_cz(L.lam, P, P.frames[st.frame], t, st.gate, st.reg_bit);
      });
    } else {  // kMove
      const int from = REVERSE ? st.frame : st.slot, to = REVERSE ? st.slot : st.frame;
      transpose<T, CPLX, false>(ex, P, from, to);
      if constexpr (BOTH) transpose<T, CPLX, true>(ex, P, from, to);
    }
  }
}

/// Amplitude embedding of row `row` of x into phi (frame P.first_frame); returns the row's statistics.
template <typename T, bool CPLX, typename Ex>
QAA_HOST_DEVICE RowStats<T> embed(Ex& ex, const Plan& P, const Args<T>& A, int64_t row, bool active) {
  const Frame& f = P.frames[P.first_frame];
  const T* xr = A.x + (active ? row : 0) * A.d;
  const int64_t d = active ? A.d : 0;
  auto scan_of = [&](int t) {
    RowScan<T> sc;
    for_each_amp(f, P.thread_bits, t, [&](int, uint32_t k) {
      if (k < d) row_scan_add(sc, xr[k]);
    });
    return sc;
  };
  RowScan<T> scan;
  scan.has_nan = ex.reduce([&](Lane<T, CPLX>&, int t) { return scan_of(t).has_nan; }, MaxOp{});
  scan.n_inf = ex.reduce([&](Lane<T, CPLX>&, int t) { return scan_of(t).n_inf; }, SumOp{});
  scan.amax = ex.reduce([&](Lane<T, CPLX>&, int t) { return scan_of(t).amax; }, MaxOp{});
  RowStats<T> st = row_stats_begin(scan);
  // Every group of a warp reduces (shuffles need all lanes), whatever its row's kind.
  const bool regular = st.kind == RowKind::kRegular;
  {
    const double ss = ex.reduce(
        [&](Lane<T, CPLX>&, int t) {
          double acc = 0;
          for_each_amp(f, P.thread_bits, t, [&](int, uint32_t k) {
            if (regular && k < d) acc += row_square_term(st, xr[k]);
          });
          return acc;
        },
        SumOp{});
    if (regular) row_stats_finish(st, ss);
  }
  each_amp<T, CPLX>(ex, P, f, [&](Lane<T, CPLX>& L, int j, uint32_t k) {
    L.phi.re[j] = k < d ? embedded_value(st, xr[k]) : T(0);
    if constexpr (CPLX) L.phi.im[j] = T(0);
  });
  return st;
}

/// Load (or store) interleaved complex states psi[row, 0..N) from (to) phi in frame f.
template <typename T, bool CPLX, bool STORE, typename Ex>
QAA_HOST_DEVICE void load_store(Ex& ex, const Plan& P, const Frame& f, const T* in, T* out, int64_t row, bool active) {
  const uint32_t N = 1u << P.n;
  each_amp<T, CPLX>(ex, P, f, [&](Lane<T, CPLX>& L, int j, uint32_t k) {
    const bool in_range = active && k < N;
    const int64_t at = 2 * (row * int64_t(N) + k);
    if constexpr (STORE) {
      if (in_range) {
        out[at] = L.phi.re[j];
        out[at + 1] = CPLX ? L.phi.im[CPLX ? j : 0] : T(0);
      }
    } else {
      L.phi.re[j] = in_range ? in[at] : T(0);
      if constexpr (CPLX) L.phi.im[j] = in_range ? in[at + 1] : T(0);
    }
  });
}

/// Readout of phi (frame P.last_frame) into features[row].
template <typename T, bool CPLX, typename Ex>
QAA_HOST_DEVICE void readout(Ex& ex, const Plan& P, const Args<T>& A, int64_t row, bool active) {
  const Frame& f = P.frames[P.last_frame];
  const int n = P.n;
  const uint32_t N = 1u << n;
  auto prob = [](const Regs<T, CPLX>& r, int j) {
    if constexpr (CPLX) return probability(r.re[j], r.im[j]);
    else return probability(r.re[j]);
  };
  if (A.readout == static_cast<int>(Readout::kProbs)) {
    each_amp<T, CPLX>(ex, P, f, [&](Lane<T, CPLX>& L, int j, uint32_t k) {
      if (active && k < N) A.features[row * int64_t(N) + k] = prob(L.phi, j);
    });
    return;
  }
  for (int q = 0; q < n; ++q) {
    const T z = ex.reduce(
        [&](Lane<T, CPLX>& L, int t) {
          T acc = 0;
          for_each_amp(f, P.thread_bits, t,
                       [&](int j, uint32_t k) { acc += z_term(prob(L.phi, j), wire_set(k, n, q)); });
          return acc;
        },
        SumOp{});
    if (active && ex.leader()) A.features[row * n + q] = z;
  }
}

/// lam = O phi (frame P.last_frame), O the diagonal observable of the readout cotangent of row `row`.
template <typename T, bool CPLX, typename Ex>
QAA_HOST_DEVICE void observable(Ex& ex, const Plan& P, const Args<T>& A, int64_t row, bool active) {
  const Frame& f = P.frames[P.last_frame];
  const int n = P.n;
  const uint32_t N = 1u << n;
  const bool probs = A.readout == static_cast<int>(Readout::kProbs);
  const int64_t F = probs ? int64_t(N) : int64_t(n);
  const T* g = A.grad_features + (active ? row : 0) * F;
  each_amp<T, CPLX>(ex, P, f, [&](Lane<T, CPLX>& L, int j, uint32_t k) {
    T o = 0;
    if (active && k < N) {
      if (probs) {
        o = g[k];
      } else {
        for (int q = 0; q < n; ++q) o += z_term(g[q], wire_set(k, n, q));
      }
    }
    L.lam.re[j] = o * L.phi.re[j];
    if constexpr (CPLX) L.lam.im[j] = o * L.phi.im[j];
  });
}

/// Embedding VJP of row `row`: lam holds dL/dpsi0 / 2 (frame P.first_frame) -> grad_x[row].
template <typename T, bool CPLX, typename Ex>
QAA_HOST_DEVICE void embed_vjp(Ex& ex, const Plan& P, const Args<T>& A, const RowStats<T>& st, int64_t row,
                               bool active) {
  const Frame& f = P.frames[P.first_frame];
  const int64_t d = active ? A.d : 0;
  const T* xr = A.x + (active ? row : 0) * A.d;
  T* gx = A.grad_x + (active ? row : 0) * A.d;
  const bool regular = st.kind == RowKind::kRegular;
  double dot = 0;
  {  // reduced by every group, whatever its row's kind (shuffles need all lanes of a warp)
    dot = ex.reduce(
        [&](Lane<T, CPLX>& L, int t) {
          double acc = 0;
          for_each_amp(f, P.thread_bits, t, [&](int j, uint32_t k) {
            if (regular && k < d) acc += static_cast<double>(embedded_value(st, xr[k])) * static_cast<double>(T(2) * L.lam.re[j]);
          });
          return acc;
        },
        SumOp{});
  }
  const double nrm = static_cast<double>(st.norm);
  const double gn = (A.grad_norms != nullptr && active) ? static_cast<double>(A.grad_norms[row]) : 0.0;
  each_amp<T, CPLX>(ex, P, f, [&](Lane<T, CPLX>& L, int j, uint32_t k) {
    if (k < d) {
      gx[k] = regular ? static_cast<T>(embed_vjp_value(static_cast<double>(embedded_value(st, xr[k])),
                                                       static_cast<double>(T(2) * L.lam.re[j]), dot, nrm, gn))
                      : T(0);
    }
  });
}

/// Everything one group does for one state (row) in mode M. Inactive groups (row >= batch) run the same
/// steps on a zero state so that the lanes of a warp stay converged; they read and write nothing.
template <typename T, bool CPLX, Mode M, typename Ex>
QAA_HOST_DEVICE void run_state(Ex& ex, const Plan& P, const HalfAngles<T>& ha, const Args<T>& A, int64_t row,
                               double* grad_acc) {
  const bool active = row < A.batch;
  if constexpr (M == Mode::kForward || M == Mode::kBackward) {
    const RowStats<T> st = embed<T, CPLX>(ex, P, A, row, active);
    if constexpr (M == Mode::kForward) {
      if (active && ex.leader() && A.norms != nullptr) A.norms[row] = st.norm;
    }
    run_circuit<T, CPLX, false, false, false>(ex, P, ha, nullptr);
    if constexpr (M == Mode::kForward) {
      readout<T, CPLX>(ex, P, A, row, active);
    } else {
      observable<T, CPLX>(ex, P, A, row, active);
      run_circuit<T, CPLX, true, true, true>(ex, P, ha, active ? grad_acc : nullptr);
      embed_vjp<T, CPLX>(ex, P, A, st, row, active);
    }
  } else if constexpr (M == Mode::kApply) {
    load_store<T, CPLX, false>(ex, P, P.frames[P.first_frame], A.psi_in, nullptr, row, active);
    run_circuit<T, CPLX, false, false, false>(ex, P, ha, nullptr);
    load_store<T, CPLX, true>(ex, P, P.frames[P.last_frame], nullptr, A.psi_out, row, active);
  } else if constexpr (M == Mode::kApplyAdj) {
    load_store<T, CPLX, false>(ex, P, P.frames[P.last_frame], A.psi_in, nullptr, row, active);
    run_circuit<T, CPLX, true, false, false>(ex, P, ha, nullptr);
    load_store<T, CPLX, true>(ex, P, P.frames[P.first_frame], nullptr, A.psi_out, row, active);
  } else {  // kVjp
    load_store<T, CPLX, false>(ex, P, P.frames[P.last_frame], A.psi_in, nullptr, row, active);
    observable<T, CPLX>(ex, P, A, row, active);
    run_circuit<T, CPLX, true, true, true>(ex, P, ha, active ? grad_acc : nullptr);
    const uint32_t N = 1u << P.n;
    each_amp<T, CPLX>(ex, P, P.frames[P.first_frame], [&](Lane<T, CPLX>& L, int j, uint32_t k) {
      if (active && k < N) A.grad_psi0[row * int64_t(N) + k] = T(2) * L.lam.re[j];
    });
  }
}

}  // namespace qaa::fused
