// Amplitude embedding of one real vector and its vector-Jacobian product (host code, header-only).
//
// psi0 = x_pad / ||x||, x_pad = x zero-padded at the end to 2^n entries (PennyLane AmplitudeEmbedding with
// normalize=True, pad_with=0.0). Defined behaviour for rows without a state:
//   * a row that is all zeros, or holds a NaN, embeds as the zero vector with norm 0: every readout of it is
//     0 and its gradients are 0 (the frozen path of the layer already carries the NaN, if any);
//   * a row holding +-inf (and no NaN) embeds as its limit: the infinite entries become +-1, the finite ones
//     0, then the row is normalised; its norm is reported as +inf and its input gradient as 0.
// The norm is computed without overflow or underflow by scaling with max|x_i| first.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

namespace qaa {

/// Kind of a row, as classified by `embed_row`.
enum class RowKind : int { kRegular = 0, kZero = 1, kInfinite = 2, kNaN = 3 };

/// Embed row x[0..d) into out[0..dim) (dim >= d, amplitudes of type A: T or std::complex<T>).
/// Returns the row kind and writes ||x|| (0 for zero/NaN rows, +inf for infinite rows) to *norm.
template <typename T, typename A>
inline RowKind embed_row(const T* x, int64_t d, int64_t dim, A* out, T* norm) {
  T amax = 0;
  bool has_nan = false, has_inf = false;
  for (int64_t i = 0; i < d; ++i) {
    const T v = x[i];
    if (std::isnan(v)) { has_nan = true; break; }
    if (std::isinf(v)) has_inf = true;
    const T a = std::fabs(v);
    if (a > amax) amax = a;
  }
  if (has_nan || amax == T(0)) {
    for (int64_t i = 0; i < dim; ++i) out[i] = A(0);
    *norm = 0;
    return has_nan ? RowKind::kNaN : RowKind::kZero;
  }
  if (has_inf) {
    int64_t count = 0;
    for (int64_t i = 0; i < d; ++i) count += std::isinf(x[i]) ? 1 : 0;
    const T inv = T(1) / std::sqrt(static_cast<T>(count));
    for (int64_t i = 0; i < d; ++i) out[i] = std::isinf(x[i]) ? A(x[i] > 0 ? inv : -inv) : A(0);
    for (int64_t i = d; i < dim; ++i) out[i] = A(0);
    *norm = std::numeric_limits<T>::infinity();
    return RowKind::kInfinite;
  }
  // Scaled sum of squares, accumulated in double for float inputs.
  const double amax_d = static_cast<double>(amax);
  const double inv_amax = 1.0 / amax_d;
  // 1/amax overflows for a subnormal double amax (below ~5.6e-309): divide by amax instead.
  const bool divide = !std::isfinite(inv_amax);
  double ss = 0;
  for (int64_t i = 0; i < d; ++i) {
    const double v = divide ? static_cast<double>(x[i]) / amax_d : static_cast<double>(x[i]) * inv_amax;
    ss += v * v;
  }
  const double nrm_scaled = std::sqrt(ss);            // in [1, sqrt(d)]
  if (divide) {
    for (int64_t i = 0; i < d; ++i) out[i] = A(static_cast<T>(static_cast<double>(x[i]) / amax_d / nrm_scaled));
  } else {
    const double scale = inv_amax / nrm_scaled;       // 1 / ||x||, finite as amax is finite and > 0
    for (int64_t i = 0; i < d; ++i) out[i] = A(static_cast<T>(static_cast<double>(x[i]) * scale));
  }
  for (int64_t i = d; i < dim; ++i) out[i] = A(0);
  *norm = static_cast<T>(amax_d * nrm_scaled);        // +inf when ||x|| exceeds T's range
  return RowKind::kRegular;
}

/// VJP of embed_row for a regular row: given psi0[0..d) = x/||x||, ||x||, the cotangent g of psi0
/// (only its first d entries matter) and the cotangent gn of ||x||, write
///   grad_x = (g - psi0 <psi0, g>) / ||x|| + gn * psi0.
/// For zero, NaN and infinite rows the gradient is 0.
template <typename T>
inline void embed_row_vjp(RowKind kind, const T* psi0, T norm, const T* g, T gn, int64_t d, T* grad_x) {
  if (kind != RowKind::kRegular) {
    for (int64_t i = 0; i < d; ++i) grad_x[i] = 0;
    return;
  }
  double dot = 0;
  for (int64_t i = 0; i < d; ++i) dot += static_cast<double>(psi0[i]) * static_cast<double>(g[i]);
  // Divide by the norm (not multiply by its inverse): for a subnormal norm 1/norm is inf and a zero
  // projected cotangent would give 0 * inf = NaN; the quotient is 0 there, or overflows to +-inf.
  const double nrm = static_cast<double>(norm);
  for (int64_t i = 0; i < d; ++i) {
    grad_x[i] = static_cast<T>((static_cast<double>(g[i]) - static_cast<double>(psi0[i]) * dot) / nrm +
                               static_cast<double>(gn) * static_cast<double>(psi0[i]));
  }
}

}  // namespace qaa
