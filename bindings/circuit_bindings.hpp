// nanobind registration of the circuit IR (qaa/circuit.hpp): the Circuit class, ansatz_names and
// qubits_for_dim. Only the qaa._circuit module (circuit_module.cpp) registers them; the backend modules import it.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "qaa/circuit.hpp"

namespace qaa::bindings {

namespace nb = nanobind;

inline GateKind parse_gate(const std::string& s) {
  if (s == "RX") return GateKind::RX;
  if (s == "RY") return GateKind::RY;
  if (s == "RZ") return GateKind::RZ;
  if (s == "CNOT") return GateKind::CNOT;
  if (s == "CZ") return GateKind::CZ;
  throw std::invalid_argument("unknown gate '" + s + "' (known: RX, RY, RZ, CNOT, CZ)");
}

inline void register_circuit(nb::module_& m) {
  nb::class_<Circuit>(m, "Circuit", "Circuit IR: gates on n_qubits wires reading a flat theta vector.")
      .def(nb::init<int>(), nb::arg("n_qubits"))
      .def_static("from_ansatz", &build_ansatz, nb::arg("name"), nb::arg("n_qubits"), nb::arg("n_layers"))
      .def("add_rotation",
           [](Circuit& c, const std::string& kind, int wire, int param) {
             c.add_rotation(parse_gate(kind), wire, param);
           },
           nb::arg("kind"), nb::arg("wire"), nb::arg("param"))
      .def("add_two_qubit",
           [](Circuit& c, const std::string& kind, int w0, int w1) { c.add_two_qubit(parse_gate(kind), w0, w1); },
           nb::arg("kind"), nb::arg("wire0"), nb::arg("wire1"))
      .def_prop_ro("n_qubits", &Circuit::n_qubits)
      .def_prop_ro("n_params", &Circuit::n_params)
      .def_prop_ro("dim", &Circuit::dim)
      .def_prop_ro("is_real", &Circuit::is_real)
      .def_prop_ro("gates",
                   [](const Circuit& c) {
                     std::vector<std::tuple<std::string, int, int, int>> out;
                     for (const auto& g : c.gates()) out.emplace_back(gate_name(g.kind), g.wires[0], g.wires[1], g.param);
                     return out;
                   },
                   "List of (name, wire0, wire1 or -1, param index or -1).")
      .def("__repr__", [](const Circuit& c) {
        return "Circuit(n_qubits=" + std::to_string(c.n_qubits()) + ", n_params=" + std::to_string(c.n_params()) +
               ", gates=" + std::to_string(c.gates().size()) + ")";
      });
  m.def("ansatz_names", &ansatz_names);
  m.def("qubits_for_dim", &qubits_for_dim, nb::arg("d"));
}

}  // namespace qaa::bindings
