// nanobind module qaa._engine_cuda: the cuStateVec statevector engine on DLPack arrays (zero-copy, no libtorch).
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
#include "engine_common.hpp"
#include "engine_cuda.hpp"

NB_MODULE(_engine_cuda, m) {
  m.doc() = "qaa CUDA statevector engine (cuStateVec). See qaa.engine for the documented Python API.";
  nb::set_leak_warnings(false);
  qaa::bindings::import_circuit(m);  // qaa._circuit owns the Circuit type both backend modules accept
  qaa::bindings::register_backend<nb::device::cuda>(
      m, [](auto tag) { return qaa::make_cuda_backend<typename decltype(tag)::type>(); });
  m.def("device_count", &qaa::cuda_device_count,
        "Number of CUDA devices visible to this process (0 when there is no device or no usable driver).");
  m.def("set_chunk_bytes", &qaa::set_cuda_chunk_bytes, nb::arg("bytes"),
        "Bytes of state memory per chunk of the batch in forward/backward/vjp (0 restores the default, 128 MiB).");
  m.def("get_chunk_bytes", &qaa::get_cuda_chunk_bytes, "Bytes of state memory per chunk of the batch.");
}
