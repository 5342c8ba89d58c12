// Circuit IR of the qaa statevector engine: gates, parameter slots and the named ansaetze.
//
// Conventions (identical to PennyLane, so results can be cross-checked):
//   * wire 0 is the most significant bit of the basis index: for n qubits, wire q is bit (n-1-q);
//   * RX(t) = exp(-i t X / 2), RY(t) = [[cos t/2, -sin t/2], [sin t/2, cos t/2]],
//     RZ(t) = diag(exp(-i t/2), exp(i t/2));
//   * CNOT(control, target), CZ(a, b).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace qaa {

/// Largest number of qubits the engine accepts (2^20 amplitudes per state, 16 MiB in complex128).
inline constexpr int kMaxQubits = 20;
/// Largest number of parameters (theta entries) of one circuit.
inline constexpr int kMaxParams = 1 << 24;

enum class GateKind : int32_t { RX = 0, RY = 1, RZ = 2, CNOT = 3, CZ = 4 };

/// One gate. `param` indexes the circuit's flat parameter vector theta for rotations and is -1 for
/// CNOT and CZ. `wires[1]` is -1 for single-qubit gates.
struct Gate {
  GateKind kind;
  int32_t wires[2];
  int32_t param;
};

inline bool is_rotation(GateKind k) { return k == GateKind::RX || k == GateKind::RY || k == GateKind::RZ; }
inline bool is_two_qubit(GateKind k) { return k == GateKind::CNOT || k == GateKind::CZ; }
const char* gate_name(GateKind k);

/// A parameterized quantum circuit on `n_qubits` wires with `n_params` free angles.
/// Several gates may share one parameter; the gradient then sums their contributions.
class Circuit {
 public:
  Circuit() = default;
  /// Throws std::invalid_argument when n_qubits is outside [1, kMaxQubits].
  explicit Circuit(int n_qubits);

  /// Append a rotation reading theta[param]; grows n_params to param + 1 when needed.
  /// Throws std::invalid_argument on a bad wire, a param outside [0, kMaxParams) or a non-rotation kind.
  void add_rotation(GateKind kind, int wire, int param);
  /// Append CNOT(w0 -> w1) or CZ(w0, w1). Throws std::invalid_argument on bad or equal wires.
  void add_two_qubit(GateKind kind, int w0, int w1);

  int n_qubits() const { return n_qubits_; }
  int n_params() const { return n_params_; }
  int64_t dim() const { return int64_t{1} << n_qubits_; }
  const std::vector<Gate>& gates() const { return gates_; }
  /// True when every gate has a real matrix (RY, CNOT, CZ): a real input state then stays real.
  bool is_real() const;
  /// Force at least `p` parameters (useful when trailing parameters are unused).
  void reserve_params(int p);

 private:
  int n_qubits_ = 0;
  int n_params_ = 0;
  std::vector<Gate> gates_;
};

/// Names of the built-in ansaetze.
std::vector<std::string> ansatz_names();

/// Build a named ansatz of `n_layers` layers on `n_qubits` wires.
///   "ry_cnot_ring"  per layer: RY(theta[l*n+q]) on every wire q, then CNOT(q, q+1 mod n) for q = 0..n-1.
///                   n_params = L*n. Real-valued.
///   "ry_rz_ring_ry" per layer: RY(theta[l*3n+q]) and RZ(theta[l*3n+n+q]) on every wire, the CNOT ring,
///                   then RY(theta[l*3n+2n+q]) on every wire. n_params = 3*L*n. Complex-valued.
///   "ry_layers"     per layer: RY(theta[l*n+q]) on every wire q, no entangler (a product circuit: the
///                   control "ry_cnot_ring without the CNOT ring"). n_params = L*n. Real-valued.
/// The CNOT ring is omitted for n_qubits == 1; for n_qubits == 2 it is CNOT(0,1), CNOT(1,0).
/// Throws std::invalid_argument on an unknown name, n_layers < 1 or n_qubits outside [1, kMaxQubits].
Circuit build_ansatz(const std::string& name, int n_qubits, int n_layers);

/// Number of qubits needed to amplitude-embed a d-dimensional vector: ceil(log2 d), at least 1.
int qubits_for_dim(int64_t d);

}  // namespace qaa
