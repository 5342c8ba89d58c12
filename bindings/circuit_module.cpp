// nanobind module qaa._circuit: the circuit IR shared by the backend modules (qaa._engine_cpu,
// qaa._engine_cuda). It owns the Python type of qaa::Circuit, so a Circuit built through either backend module
// is accepted by both, and neither backend module imports the other.
#include "circuit_bindings.hpp"

NB_MODULE(_circuit, m) {
  m.doc() = "qaa circuit IR (gates on n_qubits wires reading a flat theta vector) and the built-in ansaetze.";
  // Circuits cached at module level (functools.lru_cache) outlive the interpreter's teardown order.
  nanobind::set_leak_warnings(false);
  qaa::bindings::register_circuit(m);
}
