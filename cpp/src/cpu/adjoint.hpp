// Adjoint-method differentiation on a block of W lanes: the fused derivative-term + inverse-rotation kernels
// and the reverse sweep over a compiled program.
#pragma once

#include <cstdint>
#include <utility>

#include "gates.hpp"

namespace qaa::cpu {

/// Adjoint step of two commuting RY gates (real path): derivative terms into acc_a / acc_b and inverse
/// rotations of phi and lam, 4 coupled rows of each per step. The forward order is b then a, so the sweep
/// handles a first.
template <typename T, int W>
inline void lane_adjoint_ry_pair(T* __restrict phi, T* __restrict lam, int64_t N, int64_t sa, int64_t sb, T ca,
                                 T sna, T cb, T snb, T* __restrict acc_a, T* __restrict acc_b) {
  for_each_quad<W>(N, sa, sb, [&](int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
#pragma omp simd
    for (int l = 0; l < W; ++l) {
      T x0 = phi[i0 + l], x1 = phi[i1 + l], x2 = phi[i2 + l], x3 = phi[i3 + l];
      T y0 = lam[i0 + l], y1 = lam[i1 + l], y2 = lam[i2 + l], y3 = lam[i3 + l];
      // gate a couples (0,2) and (1,3)
      acc_a[l] += y2 * x0 - y0 * x2 + y3 * x1 - y1 * x3;
      T t0 = ca * x0 + sna * x2, t2 = ca * x2 - sna * x0;
      T t1 = ca * x1 + sna * x3, t3 = ca * x3 - sna * x1;
      T u0 = ca * y0 + sna * y2, u2 = ca * y2 - sna * y0;
      T u1 = ca * y1 + sna * y3, u3 = ca * y3 - sna * y1;
      // gate b couples (0,1) and (2,3)
      acc_b[l] += u1 * t0 - u0 * t1 + u3 * t2 - u2 * t3;
      phi[i0 + l] = cb * t0 + snb * t1;
      phi[i1 + l] = cb * t1 - snb * t0;
      phi[i2 + l] = cb * t2 + snb * t3;
      phi[i3 + l] = cb * t3 - snb * t2;
      lam[i0 + l] = cb * u0 + snb * u1;
      lam[i1 + l] = cb * u1 - snb * u0;
      lam[i2 + l] = cb * u2 + snb * u3;
      lam[i3 + l] = cb * u3 - snb * u2;
    }
  });
}

/// Fused adjoint step for one rotation: adds the derivative term 2 Re<lam|(-i/2)G|phi> per lane to acc, then
/// applies the inverse rotation to phi and lam. Real path (RY only).
template <typename T, int W>
inline void lane_adjoint_ry_real(T* __restrict phi, T* __restrict lam, int64_t N, int64_t s, T c, T sn,
                                 T* __restrict acc) {
  // inverse rotation RY(-t) = [[c, sn], [-sn, c]] with sn = sin(t/2) of the forward gate
  for_each_pair<W>(N, s, [&](int64_t ia, int64_t ib) {
#pragma omp simd
    for (int l = 0; l < W; ++l) {
      const T x0 = phi[ia + l], x1 = phi[ib + l], y0 = lam[ia + l], y1 = lam[ib + l];
      acc[l] += y1 * x0 - y0 * x1;
      phi[ia + l] = c * x0 + sn * x1;
      phi[ib + l] = c * x1 - sn * x0;
      lam[ia + l] = c * y0 + sn * y1;
      lam[ib + l] = c * y1 - sn * y0;
    }
  });
}

/// Derivative term of a rotation on the complex path (no state change).
template <typename T, int W>
inline void lane_grad_complex(GateKind kind, const T* pr, const T* pi, const T* lr, const T* li, int64_t N,
                              int64_t s, T* __restrict acc) {
  for_each_pair<W>(N, s, [&](int64_t ia, int64_t ib) {
    const T* p0r = pr + ia; const T* p0i = pi + ia;
    const T* p1r = pr + ib; const T* p1i = pi + ib;
    const T* l0r = lr + ia; const T* l0i = li + ia;
    const T* l1r = lr + ib; const T* l1i = li + ib;
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
  });
}

/// Reverse sweep of the adjoint method for one block. On entry phi = U psi0 (the final states) and lam = O phi
/// (O the readout's observable, per lane); on exit phi = psi0 (up to round-off) and lam = U^dagger O U psi0.
/// Adds each rotation's derivative term 2 Re<lam|(-i/2)G|phi>, summed over the lanes, to grad[param].
/// A complex block (phi.im and lam.im set) needs a program compiled without grouping; a real block runs the
/// fused real-path kernels (RY only, as a real circuit has).
template <typename T, int W>
inline void adjoint_sweep(const Program<T>& prog, LaneBlock<T>& phi, LaneBlock<T>& lam, int64_t N, double* grad) {
  const bool cx = phi.im != nullptr;
  alignas(64) T acc[W];
  for (auto it = prog.ops.rbegin(); it != prog.ops.rend(); ++it) {
    const auto& op = *it;
    if (op.nk > 0) {  // group of commuting RY gates (real path)
      alignas(64) T gacc_lanes[kMaxGroup][W] = {};
      if (op.nk == 1) {
        lane_adjoint_ry_real<T, W>(phi.re, lam.re, N, op.gs[0], op.gc[0], op.gsn[0], gacc_lanes[0]);
      } else {  // gate 0 acts first in the forward, so it is "b"; gate 1 is "a"
        lane_adjoint_ry_pair<T, W>(phi.re, lam.re, N, op.gs[1], op.gs[0], op.gc[1], op.gsn[1], op.gc[0], op.gsn[0],
                                   gacc_lanes[1], gacc_lanes[0]);
      }
      for (int j = 0; j < op.nk; ++j) {
        double sum = 0;
        for (int l = 0; l < W; ++l) sum += gacc_lanes[j][l];
        grad[op.gp[j]] += sum;
      }
    } else if (op.param >= 0) {
      for (int l = 0; l < W; ++l) acc[l] = 0;
      if (!cx) {
        lane_adjoint_ry_real<T, W>(phi.re, lam.re, N, op.stride, op.c, op.s, acc);
      } else {
        lane_grad_complex<T, W>(op.kind, phi.re, phi.im, lam.re, lam.im, N, op.stride, acc);
        apply_op<T, W>(prog, op, phi, N, true);
        apply_op<T, W>(prog, op, lam, N, true);
      }
      double sum = 0;
      for (int l = 0; l < W; ++l) sum += acc[l];
      grad[op.param] += sum;
    } else {
      apply_op<T, W>(prog, op, phi, N, true);
      apply_op<T, W>(prog, op, lam, N, true);
    }
  }
}

}  // namespace qaa::cpu
