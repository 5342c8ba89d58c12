// Readouts (measurements) of the qaa engine.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace qaa {

/// kZ:     per-wire Pauli-Z expectation <Z_q> = sum_k |psi_k|^2 (1 - 2 bit_q(k)); n features in [-1, 1].
/// kProbs: the 2^n computational-basis probabilities |psi_k|^2; they sum to 1 for a normalised state.
enum class Readout : int32_t { kZ = 0, kProbs = 1 };

inline int64_t readout_features(Readout r, int n_qubits) {
  return r == Readout::kZ ? int64_t{n_qubits} : (int64_t{1} << n_qubits);
}

inline Readout parse_readout(const std::string& s) {
  if (s == "z") return Readout::kZ;
  if (s == "probs") return Readout::kProbs;
  throw std::invalid_argument("unknown readout '" + s + "' (expected 'z' or 'probs')");
}

}  // namespace qaa
