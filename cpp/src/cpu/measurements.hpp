// Measurements on a block of W lanes: basis probabilities, <Z> readout and the readout's diagonal
// observable (the math itself is qaa/readout.hpp's).
#pragma once

#include <cstdint>

#include "qaa/readout.hpp"

namespace qaa::cpu {

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

/// p[k*W + l] = |amplitude k of lane l|^2 for a block with planes re (and im, null for a real block).
template <typename T, int W>
inline void lane_probs(const T* re, const T* im, int64_t N, T* p) {
  if (im) {
    for (int64_t k = 0; k < N * W; ++k) p[k] = probability(re[k], im[k]);
  } else {
    for (int64_t k = 0; k < N * W; ++k) p[k] = probability(re[k]);
  }
}

/// Readout r of the first `lanes` lanes of a block with planes re (and im) into features[lanes, F]
/// (row stride F). `p` (N*W) and `z` (n*W) are scratch.
template <typename T, int W>
inline void lane_readout(const T* re, const T* im, int n, Readout r, int lanes, T* p, T* z, T* features) {
  const int64_t N = int64_t{1} << n, F = readout_features(r, n);
  lane_probs<T, W>(re, im, N, p);
  if (r == Readout::kProbs) {
    for (int l = 0; l < lanes; ++l)
      for (int64_t k = 0; k < N; ++k) features[l * F + k] = p[k * W + l];
  } else {
    lane_z_from_probs<T, W>(p, n, z);
    for (int l = 0; l < lanes; ++l)
      for (int q = 0; q < n; ++q) features[l * F + q] = z[q * W + l];
  }
}

}  // namespace qaa::cpu
