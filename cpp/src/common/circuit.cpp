// Circuit IR and the built-in ansaetze (see qaa/circuit.hpp).
#include "qaa/circuit.hpp"

#include <algorithm>

namespace qaa {

const char* gate_name(GateKind k) {
  switch (k) {
    case GateKind::RX: return "RX";
    case GateKind::RY: return "RY";
    case GateKind::RZ: return "RZ";
    case GateKind::CNOT: return "CNOT";
    case GateKind::CZ: return "CZ";
  }
  return "?";
}

Circuit::Circuit(int n_qubits) : n_qubits_(n_qubits) {
  if (n_qubits < 1 || n_qubits > kMaxQubits) {
    throw std::invalid_argument("n_qubits must be in [1, " + std::to_string(kMaxQubits) + "], got " +
                                std::to_string(n_qubits));
  }
}

void Circuit::add_rotation(GateKind kind, int wire, int param) {
  if (!is_rotation(kind)) throw std::invalid_argument("add_rotation needs RX, RY or RZ");
  if (wire < 0 || wire >= n_qubits_) {
    throw std::invalid_argument("wire " + std::to_string(wire) + " out of range for " +
                                std::to_string(n_qubits_) + " qubits");
  }
  if (param < 0 || param >= kMaxParams) {
    throw std::invalid_argument("parameter index must be in [0, " + std::to_string(kMaxParams) + "), got " +
                                std::to_string(param));
  }
  gates_.push_back(Gate{kind, {wire, -1}, param});
  n_params_ = std::max(n_params_, param + 1);
}

void Circuit::add_two_qubit(GateKind kind, int w0, int w1) {
  if (!is_two_qubit(kind)) throw std::invalid_argument("add_two_qubit needs CNOT or CZ");
  if (w0 < 0 || w0 >= n_qubits_ || w1 < 0 || w1 >= n_qubits_) {
    throw std::invalid_argument("wires (" + std::to_string(w0) + ", " + std::to_string(w1) +
                                ") out of range for " + std::to_string(n_qubits_) + " qubits");
  }
  if (w0 == w1) throw std::invalid_argument("a two-qubit gate needs two different wires");
  gates_.push_back(Gate{kind, {w0, w1}, -1});
}

bool Circuit::is_real() const {
  return std::all_of(gates_.begin(), gates_.end(), [](const Gate& g) {
    return g.kind == GateKind::RY || g.kind == GateKind::CNOT || g.kind == GateKind::CZ;
  });
}

void Circuit::reserve_params(int p) {
  if (p > kMaxParams) throw std::invalid_argument("a circuit holds at most " + std::to_string(kMaxParams) + " parameters");
  n_params_ = std::max(n_params_, p);
}

std::vector<std::string> ansatz_names() { return {"ry_cnot_ring", "ry_rz_ring_ry", "ry_layers"}; }

namespace {
void add_ring(Circuit& c) {
  const int n = c.n_qubits();
  if (n == 1) return;
  if (n == 2) {
    c.add_two_qubit(GateKind::CNOT, 0, 1);
    c.add_two_qubit(GateKind::CNOT, 1, 0);
    return;
  }
  for (int q = 0; q < n; ++q) c.add_two_qubit(GateKind::CNOT, q, (q + 1) % n);
}
}  // namespace

Circuit build_ansatz(const std::string& name, int n_qubits, int n_layers) {
  if (n_layers < 1) throw std::invalid_argument("n_layers must be >= 1, got " + std::to_string(n_layers));
  Circuit c(n_qubits);
  const int n = n_qubits;
  const int64_t per_layer = (name == "ry_rz_ring_ry" ? 3 : 1) * int64_t{n};
  if (n_layers > kMaxParams / per_layer) {
    throw std::invalid_argument("n_layers=" + std::to_string(n_layers) + " gives more than " +
                                std::to_string(kMaxParams) + " parameters");
  }
  if (name == "ry_cnot_ring") {
    for (int l = 0; l < n_layers; ++l) {
      for (int q = 0; q < n; ++q) c.add_rotation(GateKind::RY, q, l * n + q);
      add_ring(c);
    }
  } else if (name == "ry_rz_ring_ry") {
    for (int l = 0; l < n_layers; ++l) {
      const int base = 3 * l * n;
      for (int q = 0; q < n; ++q) {
        c.add_rotation(GateKind::RY, q, base + q);
        c.add_rotation(GateKind::RZ, q, base + n + q);
      }
      add_ring(c);
      for (int q = 0; q < n; ++q) c.add_rotation(GateKind::RY, q, base + 2 * n + q);
    }
  } else if (name == "ry_layers") {
    // The product-circuit control: ry_cnot_ring without the ring, so the wires never interact.
    for (int l = 0; l < n_layers; ++l) {
      for (int q = 0; q < n; ++q) c.add_rotation(GateKind::RY, q, l * n + q);
    }
  } else {
    std::string known;
    for (const auto& s : ansatz_names()) known += (known.empty() ? "" : ", ") + s;
    throw std::invalid_argument("unknown ansatz '" + name + "' (known: " + known + ")");
  }
  return c;
}

int qubits_for_dim(int64_t d) {
  if (d < 1) throw std::invalid_argument("input width must be >= 1, got " + std::to_string(d));
  // Unsigned shifts: for d > 2^62 the loop reaches n = 63 without overflowing.
  int n = 0;
  while ((uint64_t{1} << n) < static_cast<uint64_t>(d)) ++n;
  return std::max(n, 1);
}

}  // namespace qaa
