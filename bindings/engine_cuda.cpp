// nanobind module qaa._engine_cuda: the CUDA statevector engines on DLPack arrays (zero-copy, no libtorch): the
// fused engine (cpp/src/cuda/fused/, one kernel per call for circuits of up to 13 qubits) with, when built
// with cuStateVec (QAA_WITH_CUSTATEVEC), the cuStateVec per-gate engine behind it for everything else.
//
// Same functions and arguments as qaa._engine_cpu (see engine_common.hpp), for CUDA device arrays: every array
// must be C-contiguous, on one CUDA device, of one floating dtype per call (float32 or float64; complex64 /
// complex128 for statevectors). Outputs are caller-allocated and written in place.
//   stream     the cudaStream_t the work is queued on, as an integer: pass
//              torch.cuda.current_stream(device).cuda_stream. Calls return once the work is queued.
//   workspace  optional 1-D uint8 device array of at least workspace_size(op, circuit, batch, dtype) bytes
//              (256-byte aligned, as torch allocations are); None: the engine allocates its scratch
//              stream-ordered (cudaMallocAsync) on `stream`.
// Errors: ValueError for bad shapes, host arrays or a too small workspace; RuntimeError carrying the CUDA or
// cuStateVec error name and text for failures of the runtime or of cuStateVec.
// The GIL is released while the engine queues work.
#include <nanobind/stl/map.h>

#include "engine_common.hpp"
#include "fused/engine_fused.hpp"
#if QAA_WITH_CUSTATEVEC
#include "engine_cuda.hpp"
#endif

NB_MODULE(_engine_cuda, m) {
  m.doc() = "qaa CUDA statevector engines (fused; cuStateVec when built in). See qaa.engine for the Python API.";
  nb::set_leak_warnings(false);
  qaa::bindings::import_circuit(m);  // qaa._circuit owns the Circuit type both backend modules accept
  qaa::bindings::register_backend<nb::device::cuda>(m, [](auto tag) {
    using T = typename decltype(tag)::type;
#if QAA_WITH_CUSTATEVEC
    return qaa::make_fused_cuda_backend<T>(qaa::make_cuda_backend<T>());
#else
    return qaa::make_fused_cuda_backend<T>(nullptr);
#endif
  });
  m.def("device_count", &qaa::fused_cuda_device_count,
        "Number of CUDA devices visible to this process (0 when there is no device or no usable driver).");
  m.def("build_info", []() {
        std::map<std::string, std::string> info;
        info["fused"] = "yes";
#if QAA_WITH_CUSTATEVEC
        info["custatevec"] = QAA_CUSTATEVEC_VERSION_STR;
#else
        info["custatevec"] = "";
#endif
        info["cuda_architectures"] = QAA_CUDA_ARCHS;
        info["nvcc"] = QAA_NVCC_VERSION;
        return info;
      },
      "What this module was built with: fused ('yes'), custatevec (its version, '' when not built in), "
      "cuda_architectures, nvcc.");
  m.def("set_engine",
        [](const std::string& s) {
          if (s == "auto") qaa::set_fused_mode(qaa::FusedMode::kAuto);
          else if (s == "fused") qaa::set_fused_mode(qaa::FusedMode::kFused);
          else if (s == "custatevec") {
#if !QAA_WITH_CUSTATEVEC
            throw std::invalid_argument("engine 'custatevec': cuStateVec is not built into this module");
#endif
            qaa::set_fused_mode(qaa::FusedMode::kFallback);
          }
          else throw std::invalid_argument("engine must be 'auto', 'fused' or 'custatevec', got '" + s + "'");
        },
        nb::arg("engine"),
        "Process-wide engine choice for later calls: 'auto' (forward/backward: the fused kernel for circuits of "
        "up to 13 qubits, cuStateVec for the rest; state-level calls: cuStateVec when built in), 'fused' (fused "
        "only; larger circuits raise ValueError) or 'custatevec' (per-gate cuStateVec engine; ValueError when not "
        "built in).");
  m.def("get_engine", []() {
    switch (qaa::get_fused_mode()) {
      case qaa::FusedMode::kFused: return std::string("fused");
      case qaa::FusedMode::kFallback: return std::string("custatevec");
      default: return std::string("auto");
    }
  });
#if QAA_WITH_CUSTATEVEC
  m.def("set_chunk_bytes", &qaa::set_cuda_chunk_bytes, nb::arg("bytes"),
        "Bytes of state memory per chunk of the batch in the cuStateVec engine's forward/backward/vjp (0 "
        "restores the default, 128 MiB).");
  m.def("get_chunk_bytes", &qaa::get_cuda_chunk_bytes, "Bytes of state memory per chunk of the batch.");
#else
  m.def("set_chunk_bytes", [](size_t) {}, nb::arg("bytes"), "No effect: the cuStateVec engine is not built in.");
  m.def("get_chunk_bytes", []() { return size_t{0}; }, "0: the cuStateVec engine is not built in.");
#endif
}
