// Amplitude embedding of one real vector and its vector-Jacobian product: the single definition of the row
// classification, the overflow-free norm and the embedded values, used by the CPU backend (embed_row,
// embed_row_vjp below) and by the CUDA kernels (which reduce the same per-entry quantities over a block).
//
// psi0 = x_pad / ||x||, x_pad = x zero-padded at the end to 2^n entries (PennyLane AmplitudeEmbedding with
// normalize=True, pad_with=0.0). Defined behaviour for rows without a state:
//   * a row that is all zeros, or holds a NaN, embeds as the zero vector with norm 0: every readout of it is
//     0 and its gradients are 0 (the frozen path of the layer already carries the NaN, if any);
//   * a row holding +-inf (and no NaN) embeds as its limit: the infinite entries become +-1, the finite ones
//     0, then the row is normalised; its norm is reported as +inf and its input gradient as 0.
// The norm is computed without overflow or underflow by scaling with max|x_i| first; the sum of squares is
// accumulated in double for float inputs.
//
// Computing a row's statistics takes two passes over it, each a reduction that may be split (one thread or
// one block of threads):
//   1. RowScan: row_scan_add per entry, partial scans combined field by field (has_nan: max, n_inf: sum,
//      amax: max); row_stats_begin then classifies the row (classify_row) and prepares the scaling;
//   2. for a regular row only, ss = sum of row_square_term per entry; row_stats_finish(st, ss).
// embedded_value then gives each amplitude, embed_vjp_value each entry of the input gradient.
#pragma once

#include <cstdint>

#include "qaa/host_device.hpp"

namespace qaa {

/// Kind of a row, as classified by `classify_row`.
enum class RowKind : int { kRegular = 0, kZero = 1, kInfinite = 2, kNaN = 3 };

/// Running first-pass statistics of (part of) a row.
template <typename T>
struct RowScan {
  int has_nan = 0;  // 1 when an entry is NaN
  int n_inf = 0;    // number of +-inf entries
  T amax = 0;       // max |x_i| over the non-NaN entries (+inf when one is infinite)
};

template <typename T>
QAA_HOST_DEVICE inline void row_scan_add(RowScan<T>& s, T v) {
  if (hd::is_nan(v)) {
    s.has_nan = 1;
    return;
  }
  if (hd::is_inf(v)) ++s.n_inf;
  const T a = hd::absolute(v);
  if (a > s.amax) s.amax = a;
}

/// The row classification: NaN first, then infinite, then all-zero, else regular.
template <typename T>
QAA_HOST_DEVICE inline RowKind classify_row(const RowScan<T>& s) {
  if (s.has_nan) return RowKind::kNaN;
  if (s.n_inf > 0) return RowKind::kInfinite;
  if (s.amax == T(0)) return RowKind::kZero;
  return RowKind::kRegular;
}

/// What embedding a row needs: its kind; for regular rows max|x_i|, ||x||/max|x_i| and 1/||x|| as one factor
/// when 1/max|x_i| is finite (`divide` false); 1/sqrt(#inf) for infinite rows; ||x|| rounded to T.
template <typename T>
struct RowStats {
  RowKind kind = RowKind::kZero;
  bool divide = false;     // 1/max|x_i| overflows (subnormal double max): divide by amax, then by nrm_scaled
  double amax = 0;
  double inv_amax = 0;
  double nrm_scaled = 0;   // ||x|| / max|x_i|, in [1, sqrt(d)]
  double scale = 0;        // 1/||x|| when !divide
  T inv_inf = 0;
  T norm = 0;              // 0 for zero and NaN rows, +inf for infinite rows
};

/// Classify the scanned row and prepare everything but the regular row's sum of squares.
template <typename T>
QAA_HOST_DEVICE inline RowStats<T> row_stats_begin(const RowScan<T>& s) {
  RowStats<T> st;
  st.kind = classify_row(s);
  if (st.kind == RowKind::kInfinite) {
    st.inv_inf = T(1) / hd::square_root(static_cast<T>(s.n_inf));
    st.norm = hd::infinity<T>();
  } else if (st.kind == RowKind::kRegular) {
    st.amax = static_cast<double>(s.amax);
    st.inv_amax = 1.0 / st.amax;
    st.divide = !hd::is_finite(st.inv_amax);
  }
  return st;
}

/// Term of entry x_i in the regular row's scaled sum of squares; `Divide` must equal st.divide (a template
/// argument so that host loops test it once, not per entry).
template <bool Divide, typename T>
QAA_HOST_DEVICE inline double row_square_term(const RowStats<T>& st, T xi) {
  const double v = Divide ? static_cast<double>(xi) / st.amax : static_cast<double>(xi) * st.inv_amax;
  return v * v;
}
template <typename T>
QAA_HOST_DEVICE inline double row_square_term(const RowStats<T>& st, T xi) {
  return st.divide ? row_square_term<true>(st, xi) : row_square_term<false>(st, xi);
}

/// Complete a regular row's statistics from ss = the sum of row_square_term over its entries.
template <typename T>
QAA_HOST_DEVICE inline void row_stats_finish(RowStats<T>& st, double ss) {
  st.nrm_scaled = hd::square_root(ss);
  st.scale = st.inv_amax / st.nrm_scaled;              // 1 / ||x||, finite as amax is finite and > 0
  st.norm = static_cast<T>(st.amax * st.nrm_scaled);   // +inf when ||x|| exceeds T's range
}

/// The embedded amplitude of entry x_i of a regular row; `Divide` must equal st.divide.
template <bool Divide, typename T>
QAA_HOST_DEVICE inline T regular_value(const RowStats<T>& st, T xi) {
  return Divide ? static_cast<T>(static_cast<double>(xi) / st.amax / st.nrm_scaled)
                : static_cast<T>(static_cast<double>(xi) * st.scale);
}

/// The embedded amplitude of entry x_i of an infinite row.
template <typename T>
QAA_HOST_DEVICE inline T infinite_value(const RowStats<T>& st, T xi) {
  return hd::is_inf(xi) ? (xi > T(0) ? st.inv_inf : -st.inv_inf) : T(0);
}

/// The embedded amplitude of entry x_i (i < d) of a row with statistics st (padding entries are 0).
template <typename T>
QAA_HOST_DEVICE inline T embedded_value(const RowStats<T>& st, T xi) {
  if (st.kind == RowKind::kRegular) return st.divide ? regular_value<true>(st, xi) : regular_value<false>(st, xi);
  if (st.kind == RowKind::kInfinite) return infinite_value(st, xi);
  return T(0);
}

/// Entry i of the embedding's VJP for a regular row: given psi0_i = x_i/||x||, the cotangent g_i of psi0_i,
/// dot = <psi0, g> over the row's d entries, ||x|| and the cotangent gn of ||x||:
///   grad_x_i = (g_i - psi0_i dot) / ||x|| + gn psi0_i.
/// Divides by the norm (not multiplies by its inverse): for a subnormal norm 1/norm is inf and a zero
/// projected cotangent would give 0 * inf = NaN; the quotient is 0 there, or overflows to +-inf.
QAA_HOST_DEVICE inline double embed_vjp_value(double psi0_i, double g_i, double dot, double norm, double gn) {
  return (g_i - psi0_i * dot) / norm + gn * psi0_i;
}

/// Embed row x[0..d) into out[0..dim) (dim >= d, amplitudes of type A: T or std::complex<T>) on the host.
/// Returns the row kind and writes ||x|| (0 for zero/NaN rows, +inf for infinite rows) to *norm.
template <typename T, typename A>
inline RowKind embed_row(const T* x, int64_t d, int64_t dim, A* out, T* norm) {
  RowScan<T> scan;
  for (int64_t i = 0; i < d && !scan.has_nan; ++i) row_scan_add(scan, x[i]);
  RowStats<T> st = row_stats_begin(scan);
  // The per-entry functions with the row's kind and `divide` hoisted out of the loops (the hot path).
  if (st.kind == RowKind::kRegular) {
    double ss = 0;
    if (st.divide) {
      for (int64_t i = 0; i < d; ++i) ss += row_square_term<true>(st, x[i]);
      row_stats_finish(st, ss);
      for (int64_t i = 0; i < d; ++i) out[i] = A(regular_value<true>(st, x[i]));
    } else {
      for (int64_t i = 0; i < d; ++i) ss += row_square_term<false>(st, x[i]);
      row_stats_finish(st, ss);
      for (int64_t i = 0; i < d; ++i) out[i] = A(regular_value<false>(st, x[i]));
    }
  } else if (st.kind == RowKind::kInfinite) {
    for (int64_t i = 0; i < d; ++i) out[i] = A(infinite_value(st, x[i]));
  } else {
    for (int64_t i = 0; i < d; ++i) out[i] = A(0);
  }
  for (int64_t i = d; i < dim; ++i) out[i] = A(0);
  *norm = st.norm;
  return st.kind;
}

/// VJP of embed_row on the host: given psi0[0..d) (the embedded row), ||x||, the cotangent g of psi0 (only
/// its first d entries matter) and the cotangent gn of ||x||, write grad_x[0..d) (embed_vjp_value). For
/// zero, NaN and infinite rows the gradient is 0.
template <typename T>
inline void embed_row_vjp(RowKind kind, const T* psi0, T norm, const T* g, T gn, int64_t d, T* grad_x) {
  if (kind != RowKind::kRegular) {
    for (int64_t i = 0; i < d; ++i) grad_x[i] = 0;
    return;
  }
  double dot = 0;
  for (int64_t i = 0; i < d; ++i) dot += static_cast<double>(psi0[i]) * static_cast<double>(g[i]);
  const double nrm = static_cast<double>(norm);
  for (int64_t i = 0; i < d; ++i) {
    grad_x[i] = static_cast<T>(embed_vjp_value(static_cast<double>(psi0[i]), static_cast<double>(g[i]), dot, nrm,
                                               static_cast<double>(gn)));
  }
}

}  // namespace qaa
