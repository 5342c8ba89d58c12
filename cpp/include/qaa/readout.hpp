// Readouts (measurements) of the qaa engine: the readout kinds and the single definition of their math,
// usable from host and device code (the CPU kernels, the CUDA kernels; the Python dense path calls the
// engine's readout).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "qaa/host_device.hpp"

namespace qaa {

/// kZ:     per-wire Pauli-Z expectation <Z_q> = sum_k z_term(|psi_k|^2, wire_set(k, n, q)); n features in
///         [-1, 1].
/// kProbs: the 2^n computational-basis probabilities |psi_k|^2; they sum to 1 for a normalised state.
enum class Readout : int32_t { kZ = 0, kProbs = 1 };

/// Index bit of wire q on n wires: wire 0 is the most significant bit (PennyLane's convention).
QAA_HOST_DEVICE constexpr int wire_bit(int n, int q) { return n - 1 - q; }

/// Whether wire q is |1> in computational basis state k (of n wires).
QAA_HOST_DEVICE constexpr bool wire_set(int64_t k, int n, int q) { return ((k >> wire_bit(n, q)) & 1) != 0; }

/// Probability of an amplitude re + i im: |a|^2 (the kProbs readout; a real amplitude has im = 0).
template <typename T>
QAA_HOST_DEVICE inline T probability(T re, T im) {
  return re * re + im * im;
}
template <typename T>
QAA_HOST_DEVICE inline T probability(T re) {
  return re * re;
}

/// Contribution of weight w of a basis state to <Z_q>: the Z eigenvalue of wire q times w, i.e. +w when the
/// wire is |0> in that state and -w when it is |1>. With w = |psi_k|^2 summed over k this is the kZ readout;
/// with w = g_q summed over q it is the diagonal of the readout's observable sum_q g_q Z_q.
template <typename V>
QAA_HOST_DEVICE inline V z_term(V w, bool wire_is_set) {
  return wire_is_set ? -w : w;
}

inline int64_t readout_features(Readout r, int n_qubits) {
  return r == Readout::kZ ? int64_t{n_qubits} : (int64_t{1} << n_qubits);
}

inline Readout parse_readout(const std::string& s) {
  if (s == "z") return Readout::kZ;
  if (s == "probs") return Readout::kProbs;
  throw std::invalid_argument("unknown readout '" + s + "' (expected 'z' or 'probs')");
}

}  // namespace qaa
