// Gate kernels of the CPU engine on a block of W lanes.
//
// W states are processed together in "lanes": amplitude k of lane l sits at buf[k*W + l] (structure of
// arrays), so every gate is a loop over rows of W contiguous values with identical coefficients, which the
// compiler maps onto full SIMD registers for every qubit stride (stride 1 included). A block of W states
// (N*W values; 32 KiB for n = 10 in float32) stays in L1/L2 through all gates. A block holds 1..W states;
// unused lanes hold zero states. Complex states keep planar real/imag blocks.
#pragma once

#include <algorithm>
#include <complex>
#include <cstdint>
#include <utility>

#include "program.hpp"

namespace qaa::cpu {

/// Lanes per block: one 32-byte SIMD register of T (8 floats, 4 doubles).
template <typename T>
constexpr int kLanes = 32 / sizeof(T);

// A "plane" is N rows of W values. Complex blocks are a pair of planes (re, im).

/// Calls f(a, b) for every amplitude pair (j, j + s) a gate on stride s couples, with a = j*W and
/// b = (j + s)*W the offsets of their rows in a plane.
template <int W, typename F>
inline void for_each_pair(int64_t N, int64_t s, F&& f) {
  for (int64_t i0 = 0; i0 < N; i0 += 2 * s)
    for (int64_t j = i0; j < i0 + s; ++j) f(j * W, (j + s) * W);
}

/// Calls f(r0, r1, r2, r3) for every quadruple (j, j + sb, j + sa, j + sa + sb) two gates on strides
/// sa != sb couple, with the offsets of their rows in a plane.
template <int W, typename F>
inline void for_each_quad(int64_t N, int64_t sa, int64_t sb, F&& f) {
  const int64_t hi = std::max(sa, sb), lo = std::min(sa, sb);
  for (int64_t i0 = 0; i0 < N; i0 += 2 * hi)
    for (int64_t j0 = i0; j0 < i0 + hi; j0 += 2 * lo)
      for (int64_t j = j0; j < j0 + lo; ++j) f(j * W, (j + sb) * W, (j + sa) * W, (j + sa + sb) * W);
}

template <typename T, int W>
inline void lane_ry(T* __restrict p, int64_t N, int64_t s, T c, T sn) {
  for_each_pair<W>(N, s, [&](int64_t ia, int64_t ib) {
#pragma omp simd
    for (int l = 0; l < W; ++l) {
      const T x = p[ia + l], y = p[ib + l];
      p[ia + l] = c * x - sn * y;
      p[ib + l] = sn * x + c * y;
    }
  });
}

/// RX (K = RX: [[c, -i s], [-i s, c]]) or RZ (K = RZ: diag(c - i s, c + i s)) on a complex block.
template <GateKind K, typename T, int W>
inline void lane_rxz(T* __restrict re, T* __restrict im, int64_t N, int64_t s, T c, T sn) {
  for_each_pair<W>(N, s, [&](int64_t ia, int64_t ib) {
#pragma omp simd
    for (int l = 0; l < W; ++l) {
      const T xr = re[ia + l], xi = im[ia + l], yr = re[ib + l], yi = im[ib + l];
      if constexpr (K == GateKind::RX) {  // c x - i s y, -i s x + c y
        re[ia + l] = c * xr + sn * yi;
        im[ia + l] = c * xi - sn * yr;
        re[ib + l] = sn * xi + c * yr;
        im[ib + l] = -sn * xr + c * yi;
      } else {  // (c - i s) x, (c + i s) y
        re[ia + l] = c * xr + sn * xi;
        im[ia + l] = c * xi - sn * xr;
        re[ib + l] = c * yr - sn * yi;
        im[ib + l] = c * yi + sn * yr;
      }
    }
  });
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
  for_each_quad<W>(N, sa, sb, [&](int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
#pragma omp simd
    for (int l = 0; l < W; ++l) {
      // gate b on rows (0, 1) and (2, 3), then gate a on (0, 2) and (1, 3)
      const T x0 = p[i0 + l], x1 = p[i1 + l], x2 = p[i2 + l], x3 = p[i3 + l];
      const T y0 = cb * x0 - snb * x1, y1 = snb * x0 + cb * x1;
      const T y2 = cb * x2 - snb * x3, y3 = snb * x2 + cb * x3;
      p[i0 + l] = ca * y0 - sna * y2;
      p[i2 + l] = sna * y0 + ca * y2;
      p[i1 + l] = ca * y1 - sna * y3;
      p[i3 + l] = sna * y1 + ca * y3;
    }
  });
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
  if (op.nk > 0) {  // RY is real: a complex state rotates its planes separately
    apply_group<T, W>(op, b.re, N, inverse);
    if (b.im) apply_group<T, W>(op, b.im, N, inverse);
    return;
  }
  const T sn = inverse ? -op.s : op.s;
  switch (op.kind) {
    case GateKind::RY:
      lane_ry<T, W>(b.re, N, op.stride, op.c, sn);
      if (b.im) lane_ry<T, W>(b.im, N, op.stride, op.c, sn);
      break;
    case GateKind::RZ: lane_rxz<GateKind::RZ, T, W>(b.re, b.im, N, op.stride, op.c, sn); break;
    case GateKind::RX: lane_rxz<GateKind::RX, T, W>(b.re, b.im, N, op.stride, op.c, sn); break;
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

/// Load `lanes` complex rows src[l*N .. l*N+N) into a complex block's planes; lanes beyond hold zero states.
template <typename T, int W>
inline void load_lanes(const std::complex<T>* src, int64_t N, int lanes, T* re, T* im) {
  for (int64_t k = 0; k < N; ++k) {
    for (int l = 0; l < W; ++l) {
      const std::complex<T> a = l < lanes ? src[l * N + k] : std::complex<T>(0);
      re[k * W + l] = a.real();
      im[k * W + l] = a.imag();
    }
  }
}

/// Store the first `lanes` lanes of a block's planes (im null: imaginary parts 0) as complex rows
/// dst[l*stride + k*step] for k < N.
template <typename T, int W>
inline void store_lanes(const T* re, const T* im, int64_t N, int lanes, std::complex<T>* dst, int64_t stride,
                        int64_t step) {
  for (int l = 0; l < lanes; ++l)
    for (int64_t k = 0; k < N; ++k)
      dst[l * stride + k * step] = std::complex<T>(re[k * W + l], im ? im[k * W + l] : T(0));
}

/// Apply a whole program to a block (forward, or its inverse in reverse order).
template <typename T, int W>
inline void apply_program(const Program<T>& prog, LaneBlock<T>& b, int64_t N, bool inverse) {
  if (!inverse) {
    for (const auto& op : prog.ops) apply_op<T, W>(prog, op, b, N, false);
  } else {
    for (auto it = prog.ops.rbegin(); it != prog.ops.rend(); ++it) apply_op<T, W>(prog, *it, b, N, true);
  }
}

}  // namespace qaa::cpu
