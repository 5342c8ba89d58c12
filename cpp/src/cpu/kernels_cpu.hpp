// Per-state CPU kernels: gate application, readouts, observables and adjoint gradient terms.
// Amplitude type A is T (real fast path, real circuits only) or std::complex<T>.
#pragma once

#include <cmath>
#include <complex>
#include <cstdint>
#include <vector>

#include "qaa/circuit.hpp"
#include "qaa/readout.hpp"

namespace qaa::cpu {

template <typename T>
inline T re_conj_mul(T a, T b) { return a * b; }
template <typename T>
inline T re_conj_mul(std::complex<T> a, std::complex<T> b) { return a.real() * b.real() + a.imag() * b.imag(); }
template <typename T>
inline T im_conj_mul(std::complex<T> a, std::complex<T> b) { return a.real() * b.imag() - a.imag() * b.real(); }
template <typename T>
inline T abs2(T a) { return probability(a); }
template <typename T>
inline T abs2(std::complex<T> a) { return probability(a.real(), a.imag()); }

/// A gate with its matrices evaluated for one theta: m = forward 2x2 matrix, mi = its inverse.
template <typename T>
struct CompiledGate {
  GateKind kind;
  int64_t s0, s1;      // bit strides of wires[0] and wires[1] (s1 = 0 for 1-qubit gates)
  int32_t param;
  T c, s;              // cos(t/2), sin(t/2)
};

template <typename T>
std::vector<CompiledGate<T>> compile(const Circuit& circ, const T* theta) {
  std::vector<CompiledGate<T>> out;
  out.reserve(circ.gates().size());
  const int n = circ.n_qubits();
  for (const Gate& g : circ.gates()) {
    CompiledGate<T> cg{};
    cg.kind = g.kind;
    cg.s0 = int64_t{1} << (n - 1 - g.wires[0]);
    cg.s1 = g.wires[1] >= 0 ? (int64_t{1} << (n - 1 - g.wires[1])) : 0;
    cg.param = g.param;
    if (g.param >= 0) {
      const double t = static_cast<double>(theta[g.param]) * 0.5;
      cg.c = static_cast<T>(std::cos(t));
      cg.s = static_cast<T>(std::sin(t));
    }
    out.push_back(cg);
  }
  return out;
}

// ---- 1-qubit rotations; `sign` = +1 forward, -1 inverse ----
template <typename A, typename T>
inline void apply_ry(A* __restrict psi, int64_t N, int64_t s, T c, T sn) {
  for (int64_t i0 = 0; i0 < N; i0 += 2 * s) {
    A* __restrict a = psi + i0;
    A* __restrict b = psi + i0 + s;
#pragma omp simd
    for (int64_t j = 0; j < s; ++j) {
      const A x = a[j], y = b[j];
      a[j] = c * x - sn * y;
      b[j] = sn * x + c * y;
    }
  }
}

template <typename T>
inline void apply_rx(std::complex<T>* psi, int64_t N, int64_t s, T c, T sn) {
  // [[c, -i s], [-i s, c]]
  for (int64_t i0 = 0; i0 < N; i0 += 2 * s) {
    for (int64_t j = i0; j < i0 + s; ++j) {
      const std::complex<T> x = psi[j], y = psi[j + s];
      psi[j] = {c * x.real() + sn * y.imag(), c * x.imag() - sn * y.real()};
      psi[j + s] = {sn * x.imag() + c * y.real(), -sn * x.real() + c * y.imag()};
    }
  }
}

template <typename T>
inline void apply_rz(std::complex<T>* psi, int64_t N, int64_t s, T c, T sn) {
  // diag(c - i s, c + i s)
  for (int64_t i0 = 0; i0 < N; i0 += 2 * s) {
    for (int64_t j = i0; j < i0 + s; ++j) {
      const std::complex<T> x = psi[j], y = psi[j + s];
      psi[j] = {c * x.real() + sn * x.imag(), c * x.imag() - sn * x.real()};
      psi[j + s] = {c * y.real() - sn * y.imag(), c * y.imag() + sn * y.real()};
    }
  }
}

template <typename A>
inline void apply_cnot(A* psi, int64_t N, int64_t sc, int64_t st) {
  for (int64_t k = 0; k < N; ++k) {
    if ((k & sc) && !(k & st)) std::swap(psi[k], psi[k | st]);
  }
}

template <typename A>
inline void apply_cz(A* psi, int64_t N, int64_t sa, int64_t sb) {
  for (int64_t k = 0; k < N; ++k) {
    if ((k & sa) && (k & sb)) psi[k] = -psi[k];
  }
}

template <typename T>
inline void apply_gate(T* psi, int64_t N, const CompiledGate<T>& g, bool inverse) {
  switch (g.kind) {
    case GateKind::RY: apply_ry(psi, N, g.s0, g.c, inverse ? -g.s : g.s); break;
    case GateKind::CNOT: apply_cnot(psi, N, g.s0, g.s1); break;
    case GateKind::CZ: apply_cz(psi, N, g.s0, g.s1); break;
    default: break;  // complex gates never reach the real path (checked by the caller)
  }
}

template <typename T>
inline void apply_gate(std::complex<T>* psi, int64_t N, const CompiledGate<T>& g, bool inverse) {
  const T sn = inverse ? -g.s : g.s;
  switch (g.kind) {
    case GateKind::RY: apply_ry(psi, N, g.s0, g.c, sn); break;
    case GateKind::RX: apply_rx(psi, N, g.s0, g.c, sn); break;
    case GateKind::RZ: apply_rz(psi, N, g.s0, g.c, sn); break;
    case GateKind::CNOT: apply_cnot(psi, N, g.s0, g.s1); break;
    case GateKind::CZ: apply_cz(psi, N, g.s0, g.s1); break;
  }
}

template <typename A, typename T>
inline void apply_circuit(A* psi, int64_t N, const std::vector<CompiledGate<T>>& gates, bool adjoint) {
  if (!adjoint) {
    for (const auto& g : gates) apply_gate(psi, N, g, false);
  } else {
    for (auto it = gates.rbegin(); it != gates.rend(); ++it) apply_gate(psi, N, *it, true);
  }
}

/// 2 Re <lam| (-i/2) G |phi> for the generator G of a rotation on stride s (the derivative term).
template <typename T>
inline double rotation_grad(GateKind kind, const T* lam, const T* phi, int64_t N, int64_t s) {
  // Only RY on the real path: Re(l1 p0 - l0 p1).
  double acc = 0;
  (void)kind;
  for (int64_t i0 = 0; i0 < N; i0 += 2 * s) {
    T part = 0;
#pragma omp simd reduction(+ : part)
    for (int64_t j = i0; j < i0 + s; ++j) part += lam[j + s] * phi[j] - lam[j] * phi[j + s];
    acc += part;
  }
  return acc;
}

template <typename T>
inline double rotation_grad(GateKind kind, const std::complex<T>* lam, const std::complex<T>* phi, int64_t N,
                            int64_t s) {
  double acc = 0;
  for (int64_t i0 = 0; i0 < N; i0 += 2 * s) {
    T part = 0;
    for (int64_t j = i0; j < i0 + s; ++j) {
      const auto l0 = lam[j], l1 = lam[j + s], p0 = phi[j], p1 = phi[j + s];
      switch (kind) {
        case GateKind::RY: part += re_conj_mul(l1, p0) - re_conj_mul(l0, p1); break;
        case GateKind::RX: part += im_conj_mul(l0, p1) + im_conj_mul(l1, p0); break;
        case GateKind::RZ: part += im_conj_mul(l0, p0) - im_conj_mul(l1, p1); break;
        default: break;
      }
    }
    acc += part;
  }
  return acc;
}

/// features[F] of one state.
template <typename A, typename T>
inline void readout_state(const A* psi, int n, Readout r, T* features) {
  const int64_t N = int64_t{1} << n;
  if (r == Readout::kProbs) {
    for (int64_t k = 0; k < N; ++k) features[k] = abs2(psi[k]);
    return;
  }
  // <Z_q> via halving: z_q = sum over blocks of the z_term of |psi|^2 with wire q clear and set.
  for (int q = 0; q < n; ++q) {
    const int64_t s = int64_t{1} << wire_bit(n, q);
    double acc = 0;
    for (int64_t i0 = 0; i0 < N; i0 += 2 * s) {
      T part = 0;
      for (int64_t j = i0; j < i0 + s; ++j) part += z_term(abs2(psi[j]), false) + z_term(abs2(psi[j + s]), true);
      acc += part;
    }
    features[q] = static_cast<T>(acc);
  }
}

/// Diagonal observable o[N] with <psi|O|psi> = <g, readout(psi)> for the cotangent g[F].
template <typename T>
inline void observable_diag(int n, Readout r, const T* g, T* o) {
  const int64_t N = int64_t{1} << n;
  if (r == Readout::kProbs) {
    for (int64_t k = 0; k < N; ++k) o[k] = g[k];
    return;
  }
  // o_k = sum_q z_term(g_q, wire_set(k, n, q)), built by doubling over the bits: setting wire q changes the
  // term of g_q from z_term(g_q, false) to z_term(g_q, true).
  T total = 0;
  for (int q = 0; q < n; ++q) total += g[q];
  o[0] = total;
  for (int b = 0; b < n; ++b) {
    const int64_t half = int64_t{1} << b;
    const T gq = g[wire_bit(n, b)];  // bit b belongs to wire n-1-b
    const T delta = z_term(gq, false) - z_term(gq, true);
    for (int64_t k = 0; k < half; ++k) o[k | half] = o[k] - delta;
  }
}

/// Adjoint sweep for one item. On entry phi = U psi0 (final state) and lam = O phi. On exit phi ~ psi0 and
/// lam = U^dagger O U psi0. Adds each rotation's derivative term to grad[param].
template <typename A, typename T>
inline void adjoint_sweep(A* phi, A* lam, int64_t N, const std::vector<CompiledGate<T>>& gates, double* grad) {
  for (auto it = gates.rbegin(); it != gates.rend(); ++it) {
    const auto& g = *it;
    if (g.param >= 0) grad[g.param] += rotation_grad(g.kind, lam, phi, N, g.s0);
    apply_gate(phi, N, g, true);
    apply_gate(lam, N, g, true);
  }
}

}  // namespace qaa::cpu
