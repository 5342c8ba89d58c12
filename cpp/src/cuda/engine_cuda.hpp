// The CUDA (cuStateVec) backend of the qaa engine. Plain C++ header: including it needs no CUDA headers, so
// the nanobind module and the C++ tests compile with the host compiler alone.
#pragma once

#include <cstddef>
#include <memory>

#include "qaa/backend.hpp"

namespace qaa {

/// The CUDA backend for T = float (complex64 states) or double (complex128 states).
///
/// Every array pointer passed to the returned backend must be CUDA device (or managed) memory on one device;
/// that device is made current for the call. `ExecContext::stream` is the cudaStream_t the work is queued on
/// (null: the legacy default stream); calls return without waiting for the device. `ExecContext::workspace` (256-byte aligned, at least
/// `workspace_size(op, circuit, batch)` bytes) is used for scratch when given; when it is null the backend
/// allocates its scratch stream-ordered (cudaMallocAsync/cudaFreeAsync on the same stream).
///
/// Constructing the backend touches no device: the per-device cuStateVec handle is created on first use.
/// Errors: std::invalid_argument for host pointers or a too small workspace, std::runtime_error carrying the
/// CUDA or cuStateVec error name and string for every failed runtime or library call.
template <typename T>
std::unique_ptr<Backend<T>> make_cuda_backend();

/// Number of CUDA devices visible to this process; 0 when there is no device or no usable driver. Never throws.
int cuda_device_count();

/// Bytes of state memory the fused and VJP calls process per chunk of the batch (default 128 MiB per state
/// buffer; backward and vjp keep two such buffers). Smaller values bound the workspace at the cost of more
/// kernel launches; tests use tiny values to exercise chunking. `bytes == 0` restores the default.
/// Changing it between workspace_size() and the call it sizes is not allowed.
void set_cuda_chunk_bytes(size_t bytes);
size_t get_cuda_chunk_bytes();

}  // namespace qaa
