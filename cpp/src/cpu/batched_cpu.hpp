// Lane-batched CPU kernels for the fused QAA forward and adjoint backward.
//
// W states are processed together in "lanes": amplitude k of lane l sits at buf[k*W + l] (structure of
// arrays), so every gate is a loop over rows of W contiguous values with identical coefficients, which the
// compiler maps onto full SIMD registers for every qubit stride (stride 1 included). A block of W states
// (N*W values; 32 KiB for n = 10 in float32) stays in L1/L2 through all gates. Runs of CNOT/CZ gates are fused
// into one signed permutation applied as a single gather. Complex circuits keep planar real/imag blocks.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "qaa/circuit.hpp"
#include "qaa/embedding.hpp"
#include "qaa/readout.hpp"

namespace qaa::cpu {

/// Lanes per block: one 32-byte SIMD register of T (8 floats, 4 doubles).
template <typename T>
constexpr int kLanes = 32 / sizeof(T);

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
/// signed permutation s'[k] = sign[k] * s[perm[k]] (and its inverse for the adjoint sweep).
template <typename T>
Program<T> compile_program(const Circuit& circ, const T* theta) {
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
      op.stride = int64_t{1} << (n - 1 - g.wires[0]);
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
      const int64_t a = int64_t{1} << (n - 1 - h.wires[0]);
      const int64_t b = int64_t{1} << (n - 1 - h.wires[1]);
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
  if (circ.is_real()) group_rotations(prog);
  return prog;
}

// ------------------------------------------------------------------ lane kernels
// A "plane" is N rows of W values. Complex blocks are a pair of planes (re, im).

template <typename T, int W>
inline void lane_ry(T* __restrict p, int64_t N, int64_t s, T c, T sn) {
  for (int64_t i0 = 0; i0 < N; i0 += 2 * s) {
    for (int64_t j = i0; j < i0 + s; ++j) {
      T* __restrict a = p + j * W;
      T* __restrict b = p + (j + s) * W;
#pragma omp simd
      for (int l = 0; l < W; ++l) {
        const T x = a[l], y = b[l];
        a[l] = c * x - sn * y;
        b[l] = sn * x + c * y;
      }
    }
  }
}

template <typename T, int W>
inline void lane_rz(T* __restrict re, T* __restrict im, int64_t N, int64_t s, T c, T sn) {
  for (int64_t i0 = 0; i0 < N; i0 += 2 * s) {
    for (int64_t j = i0; j < i0 + s; ++j) {
      T* __restrict ar = re + j * W;
      T* __restrict ai = im + j * W;
      T* __restrict br = re + (j + s) * W;
      T* __restrict bi = im + (j + s) * W;
#pragma omp simd
      for (int l = 0; l < W; ++l) {
        const T xr = ar[l], xi = ai[l], yr = br[l], yi = bi[l];
        ar[l] = c * xr + sn * xi;  // (c - i s) x
        ai[l] = c * xi - sn * xr;
        br[l] = c * yr - sn * yi;  // (c + i s) y
        bi[l] = c * yi + sn * yr;
      }
    }
  }
}

template <typename T, int W>
inline void lane_rx(T* __restrict re, T* __restrict im, int64_t N, int64_t s, T c, T sn) {
  for (int64_t i0 = 0; i0 < N; i0 += 2 * s) {
    for (int64_t j = i0; j < i0 + s; ++j) {
      T* __restrict ar = re + j * W;
      T* __restrict ai = im + j * W;
      T* __restrict br = re + (j + s) * W;
      T* __restrict bi = im + (j + s) * W;
#pragma omp simd
      for (int l = 0; l < W; ++l) {
        const T xr = ar[l], xi = ai[l], yr = br[l], yi = bi[l];
        ar[l] = c * xr + sn * yi;  // c x - i s y
        ai[l] = c * xi - sn * yr;
        br[l] = sn * xi + c * yr;  // -i s x + c y
        bi[l] = -sn * xr + c * yi;
      }
    }
  }
}

template <typename T, int W>
inline void lane_gather(const T* __restrict src, T* __restrict dst, int64_t N, const int32_t* perm, const T* sign) {
  for (int64_t k = 0; k < N; ++k) {
    const T* __restrict a = src + static_cast<int64_t>(perm[k]) * W;
    T* __restrict b = dst + k * W;
    const T sg = sign[k];
#pragma omp simd
    for (int l = 0; l < W; ++l) b[l] = sg * a[l];
  }
}

/// Forward pass of two commuting RY gates on strides sa != sb in one sweep (4 coupled rows per step).
template <typename T, int W>
inline void lane_ry_pair(T* __restrict p, int64_t N, int64_t sa, int64_t sb, T ca, T sna, T cb, T snb) {
  if (sa < sb) {
    std::swap(sa, sb);
    std::swap(ca, cb);
    std::swap(sna, snb);
  }
  for (int64_t i0 = 0; i0 < N; i0 += 2 * sa) {
    for (int64_t j0 = i0; j0 < i0 + sa; j0 += 2 * sb) {
      for (int64_t j = j0; j < j0 + sb; ++j) {
        T* __restrict r0 = p + j * W;
        T* __restrict r1 = p + (j + sb) * W;
        T* __restrict r2 = p + (j + sa) * W;
        T* __restrict r3 = p + (j + sa + sb) * W;
#pragma omp simd
        for (int l = 0; l < W; ++l) {
          // gate b on (r0, r1) and (r2, r3), then gate a on (r0, r2) and (r1, r3)
          const T x0 = r0[l], x1 = r1[l], x2 = r2[l], x3 = r3[l];
          const T y0 = cb * x0 - snb * x1, y1 = snb * x0 + cb * x1;
          const T y2 = cb * x2 - snb * x3, y3 = snb * x2 + cb * x3;
          r0[l] = ca * y0 - sna * y2;
          r2[l] = sna * y0 + ca * y2;
          r1[l] = ca * y1 - sna * y3;
          r3[l] = sna * y1 + ca * y3;
        }
      }
    }
  }
}

/// Adjoint step of two commuting RY gates (real path): derivative terms into acc_a / acc_b and inverse
/// rotations of phi and lam, 4 coupled rows of each per step. The forward order is b then a, so the sweep
/// handles a first.
template <typename T, int W>
inline void lane_adjoint_ry_pair(T* __restrict phi, T* __restrict lam, int64_t N, int64_t sa, int64_t sb, T ca,
                                 T sna, T cb, T snb, T* __restrict acc_a, T* __restrict acc_b) {
  if (sa < sb) {
    std::swap(sa, sb);
    std::swap(ca, cb);
    std::swap(sna, snb);
    std::swap(acc_a, acc_b);
  }
  for (int64_t i0 = 0; i0 < N; i0 += 2 * sa) {
    for (int64_t j0 = i0; j0 < i0 + sa; j0 += 2 * sb) {
      for (int64_t j = j0; j < j0 + sb; ++j) {
        T* __restrict p0 = phi + j * W;
        T* __restrict p1 = phi + (j + sb) * W;
        T* __restrict p2 = phi + (j + sa) * W;
        T* __restrict p3 = phi + (j + sa + sb) * W;
        T* __restrict l0 = lam + j * W;
        T* __restrict l1 = lam + (j + sb) * W;
        T* __restrict l2 = lam + (j + sa) * W;
        T* __restrict l3 = lam + (j + sa + sb) * W;
#pragma omp simd
        for (int l = 0; l < W; ++l) {
          T x0 = p0[l], x1 = p1[l], x2 = p2[l], x3 = p3[l];
          T y0 = l0[l], y1 = l1[l], y2 = l2[l], y3 = l3[l];
          // gate a couples (0,2) and (1,3)
          acc_a[l] += y2 * x0 - y0 * x2 + y3 * x1 - y1 * x3;
          T t0 = ca * x0 + sna * x2, t2 = ca * x2 - sna * x0;
          T t1 = ca * x1 + sna * x3, t3 = ca * x3 - sna * x1;
          T u0 = ca * y0 + sna * y2, u2 = ca * y2 - sna * y0;
          T u1 = ca * y1 + sna * y3, u3 = ca * y3 - sna * y1;
          // gate b couples (0,1) and (2,3)
          acc_b[l] += u1 * t0 - u0 * t1 + u3 * t2 - u2 * t3;
          p0[l] = cb * t0 + snb * t1;
          p1[l] = cb * t1 - snb * t0;
          p2[l] = cb * t2 + snb * t3;
          p3[l] = cb * t3 - snb * t2;
          l0[l] = cb * u0 + snb * u1;
          l1[l] = cb * u1 - snb * u0;
          l2[l] = cb * u2 + snb * u3;
          l3[l] = cb * u3 - snb * u2;
        }
      }
    }
  }
}

template <typename T, int W>
inline void apply_group(const LaneOp<T>& op, T* p, int64_t N, bool inverse) {
  // The gates of a group commute, so negating every angle inverts the whole group.
  const T s0 = inverse ? -op.gsn[0] : op.gsn[0];
  if (op.nk == 1) {
    lane_ry<T, W>(p, N, op.gs[0], op.gc[0], s0);
  } else {
    const T s1 = inverse ? -op.gsn[1] : op.gsn[1];
    lane_ry_pair<T, W>(p, N, op.gs[1], op.gs[0], op.gc[1], s1, op.gc[0], s0);
  }
}

/// A block of W states: real plane `re` (and `im` for complex circuits), plus a scratch plane pair for
/// gathers. Pointers are swapped by permutations.
template <typename T>
struct LaneBlock {
  T* re;
  T* im;       // nullptr on the real path
  T* tmp_re;
  T* tmp_im;
};

template <typename T, int W>
inline void apply_op(const Program<T>& prog, const LaneOp<T>& op, LaneBlock<T>& b, int64_t N, bool inverse) {
  if (op.nk > 0) {
    apply_group<T, W>(op, b.re, N, inverse);
    return;
  }
  const T sn = inverse ? -op.s : op.s;
  switch (op.kind) {
    case GateKind::RY:
      lane_ry<T, W>(b.re, N, op.stride, op.c, sn);
      if (b.im) lane_ry<T, W>(b.im, N, op.stride, op.c, sn);
      break;
    case GateKind::RZ: lane_rz<T, W>(b.re, b.im, N, op.stride, op.c, sn); break;
    case GateKind::RX: lane_rx<T, W>(b.re, b.im, N, op.stride, op.c, sn); break;
    default: {
      const auto& perm = inverse ? prog.inv_perms[op.perm] : prog.perms[op.perm];
      const auto& sign = inverse ? prog.inv_signs[op.perm] : prog.signs[op.perm];
      lane_gather<T, W>(b.re, b.tmp_re, N, perm.data(), sign.data());
      std::swap(b.re, b.tmp_re);
      if (b.im) {
        lane_gather<T, W>(b.im, b.tmp_im, N, perm.data(), sign.data());
        std::swap(b.im, b.tmp_im);
      }
    }
  }
}

/// Fused adjoint step for one rotation: adds the derivative term 2 Re<lam|(-i/2)G|phi> per lane to acc, then
/// applies the inverse rotation to phi and lam. Real path (RY only).
template <typename T, int W>
inline void lane_adjoint_ry_real(T* __restrict phi, T* __restrict lam, int64_t N, int64_t s, T c, T sn,
                                 T* __restrict acc) {
  // inverse rotation RY(-t) = [[c, sn], [-sn, c]] with sn = sin(t/2) of the forward gate
  for (int64_t i0 = 0; i0 < N; i0 += 2 * s) {
    for (int64_t j = i0; j < i0 + s; ++j) {
      T* __restrict p0 = phi + j * W;
      T* __restrict p1 = phi + (j + s) * W;
      T* __restrict l0 = lam + j * W;
      T* __restrict l1 = lam + (j + s) * W;
#pragma omp simd
      for (int l = 0; l < W; ++l) {
        const T x0 = p0[l], x1 = p1[l], y0 = l0[l], y1 = l1[l];
        acc[l] += y1 * x0 - y0 * x1;
        p0[l] = c * x0 + sn * x1;
        p1[l] = c * x1 - sn * x0;
        l0[l] = c * y0 + sn * y1;
        l1[l] = c * y1 - sn * y0;
      }
    }
  }
}

/// Derivative term of a rotation on the complex path (no state change).
template <typename T, int W>
inline void lane_grad_complex(GateKind kind, const T* pr, const T* pi, const T* lr, const T* li, int64_t N,
                              int64_t s, T* __restrict acc) {
  for (int64_t i0 = 0; i0 < N; i0 += 2 * s) {
    for (int64_t j = i0; j < i0 + s; ++j) {
      const T* p0r = pr + j * W; const T* p0i = pi + j * W;
      const T* p1r = pr + (j + s) * W; const T* p1i = pi + (j + s) * W;
      const T* l0r = lr + j * W; const T* l0i = li + j * W;
      const T* l1r = lr + (j + s) * W; const T* l1i = li + (j + s) * W;
      if (kind == GateKind::RY) {
#pragma omp simd
        for (int l = 0; l < W; ++l)
          acc[l] += l1r[l] * p0r[l] + l1i[l] * p0i[l] - l0r[l] * p1r[l] - l0i[l] * p1i[l];
      } else if (kind == GateKind::RX) {
        // Im(conj(l0) p1) + Im(conj(l1) p0)
#pragma omp simd
        for (int l = 0; l < W; ++l)
          acc[l] += l0r[l] * p1i[l] - l0i[l] * p1r[l] + l1r[l] * p0i[l] - l1i[l] * p0r[l];
      } else {
        // RZ: Im(conj(l0) p0) - Im(conj(l1) p1)
#pragma omp simd
        for (int l = 0; l < W; ++l)
          acc[l] += l0r[l] * p0i[l] - l0i[l] * p0r[l] - l1r[l] * p1i[l] + l1i[l] * p1r[l];
      }
    }
  }
}

/// <Z_q> per lane by pairwise folding of the probabilities (2N work). `p` (N*W) is overwritten.
template <typename T, int W>
inline void lane_z_from_probs(T* p, int n, T* z /* n*W */) {
  int64_t len = int64_t{1} << n;
  for (int q = n - 1; q >= 0; --q) {  // fold the least significant remaining wire
    T* zq = z + q * W;
    for (int l = 0; l < W; ++l) zq[l] = 0;
    for (int64_t i = 0; i < len / 2; ++i) {
      T* a = p + (2 * i) * W;
      T* b = p + (2 * i + 1) * W;
      T* o = p + i * W;
#pragma omp simd
      for (int l = 0; l < W; ++l) {
        zq[l] += z_term(a[l], false) + z_term(b[l], true);  // wire q clear in a, set in b
        o[l] = a[l] + b[l];
      }
    }
    len /= 2;
  }
}

/// Diagonal observable per lane: o[k][l] = sum_q z_term(g_l[q], wire_set(k, n, q)) for z; g_l[k] for probs.
template <typename T, int W>
inline void lane_observable(int n, Readout r, const T* g /* lanes x F, row stride F */, int lanes, T* o) {
  const int64_t N = int64_t{1} << n;
  const int64_t F = readout_features(r, n);
  if (r == Readout::kProbs) {
    for (int64_t k = 0; k < N; ++k)
      for (int l = 0; l < W; ++l) o[k * W + l] = l < lanes ? g[l * F + k] : T(0);
    return;
  }
  for (int l = 0; l < W; ++l) {
    T total = 0;
    if (l < lanes)
      for (int q = 0; q < n; ++q) total += g[l * F + q];
    o[l] = total;
  }
  for (int b = 0; b < n; ++b) {
    const int64_t half = int64_t{1} << b;
    T delta[W];
    for (int l = 0; l < W; ++l) {
      const T gq = l < lanes ? g[l * F + wire_bit(n, b)] : T(0);
      delta[l] = z_term(gq, false) - z_term(gq, true);  // change of the term when wire n-1-b is set
    }
    for (int64_t k = 0; k < half; ++k) {
      const T* src = o + k * W;
      T* dst = o + (k | half) * W;
#pragma omp simd
      for (int l = 0; l < W; ++l) dst[l] = src[l] - delta[l];
    }
  }
}

}  // namespace qaa::cpu
