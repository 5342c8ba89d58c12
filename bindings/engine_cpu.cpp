// nanobind module qaa._engine_cpu: the CPU statevector engine on DLPack arrays (zero-copy, no libtorch).
// Circuit, ansatz_names and qubits_for_dim are qaa._circuit's, re-exported. Importing the module on a CPU
// without the instruction set the engine was compiled for raises ImportError naming what is missing.
//
// Every array must be C-contiguous, on the CPU, of one floating dtype per call (float32 or float64;
// complex64 / complex128 for statevectors). Outputs are caller-allocated and written in place. The GIL is
// released while the engine runs, so several Python threads may call the engine at once.
#include "engine_common.hpp"
#include "isa_check.hpp"

NB_MODULE(_engine_cpu, m) {
  m.doc() = "qaa CPU statevector engine (OpenMP). See qaa.engine for the documented Python API.";
  nb::set_leak_warnings(false);
  qaa::bindings::require_cpu_isa();
  qaa::bindings::import_circuit(m);
  qaa::bindings::register_backend<nb::device::cpu>(
      m, [](auto tag) { return qaa::make_cpu_backend<typename decltype(tag)::type>(); });
  m.def("set_num_threads",
        [](int n) {
          // A typo such as 10**6 would make OpenMP try to start that many threads on the next call.
          qaa::bindings::require(n <= 1024, "n must be <= 1024 threads, got " + std::to_string(n));
          qaa::set_cpu_threads(n);
        },
        nb::arg("n"), "Number of OpenMP threads the CPU engine uses (at most 1024); n <= 0 restores the OpenMP default.");
  m.def("get_num_threads", &qaa::get_cpu_threads, "Number of OpenMP threads the CPU engine uses.");
}
