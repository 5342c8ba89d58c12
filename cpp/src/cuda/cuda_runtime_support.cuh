// Host-side support of the CUDA engines that needs only the CUDA runtime (no cuStateVec): status checks, the
// current-device guard and the per-call scratch memory. Used by the cuStateVec backend (cuda_support.cuh) and
// by the fused backend (fused/), which builds without cuStateVec.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

#include "qaa/backend.hpp"

namespace qaa::cuda {

[[noreturn]] inline void throw_cuda(cudaError_t e, const char* what, const char* file, int line) {
  throw std::runtime_error(std::string("qaa CUDA backend: ") + what + " failed: " + cudaGetErrorName(e) + ": " +
                           cudaGetErrorString(e) + " (" + file + ":" + std::to_string(line) + ")");
}

/// Throw std::runtime_error with the CUDA error name and string unless `expr` returns cudaSuccess.
#define QAA_CUDA_CHECK(expr)                                                              \
  do {                                                                                    \
    const cudaError_t qaa_err_ = (expr);                                                  \
    if (qaa_err_ != cudaSuccess) ::qaa::cuda::throw_cuda(qaa_err_, #expr, __FILE__, __LINE__); \
  } while (0)

/// Check the launch status of the kernel just launched (configuration errors; never synchronises).
#define QAA_CUDA_CHECK_LAUNCH() QAA_CUDA_CHECK(cudaGetLastError())

/// The device that holds `ptr`. Throws std::invalid_argument for host memory and std::runtime_error when the
/// runtime cannot tell (e.g. no CUDA driver).
inline int device_of(const void* ptr, const char* name) {
  cudaPointerAttributes attr{};
  const cudaError_t e = cudaPointerGetAttributes(&attr, ptr);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    throw_cuda(e, (std::string("cudaPointerGetAttributes(") + name + ")").c_str(), __FILE__, __LINE__);
  }
  if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged) {
    throw std::invalid_argument(std::string("qaa CUDA backend: ") + name + " is not in CUDA device memory");
  }
  return attr.device;
}

/// Makes `device` current for the guard's lifetime and restores the previous device afterwards.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    QAA_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) {
      QAA_CUDA_CHECK(cudaSetDevice(device));
    } else {
      previous_ = -1;
    }
  }
  ~DeviceGuard() {
    if (previous_ >= 0) (void)cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

/// Alignment of every region carved out of a workspace (cuStateVec asks for 256 bytes).
inline constexpr size_t kWorkspaceAlign = 256;

inline size_t align_up(size_t v) { return (v + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign; }

/// Scratch memory of one call: the caller's workspace (ExecContext::workspace) when given, else a
/// stream-ordered allocation (cudaMallocAsync / cudaFreeAsync on the call's stream, no host sync).
class Scratch {
 public:
  Scratch(const ExecContext& ctx, size_t need, cudaStream_t stream) : stream_(stream) {
    if (need == 0) return;
    if (ctx.workspace != nullptr) {
      if (ctx.workspace_bytes < need) {
        throw std::invalid_argument("qaa CUDA backend: workspace of " + std::to_string(ctx.workspace_bytes) +
                                    " bytes is smaller than the " + std::to_string(need) +
                                    " bytes workspace_size() asks for");
      }
      if (reinterpret_cast<std::uintptr_t>(ctx.workspace) % kWorkspaceAlign != 0) {
        throw std::invalid_argument("qaa CUDA backend: workspace must be 256-byte aligned");
      }
      base_ = static_cast<char*>(ctx.workspace);
    } else {
      void* p = nullptr;
      QAA_CUDA_CHECK(cudaMallocAsync(&p, need, stream_));
      owned_ = p;
      base_ = static_cast<char*>(p);
    }
  }
  ~Scratch() {
    if (owned_ != nullptr) (void)cudaFreeAsync(owned_, stream_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;

  /// Pointer at byte offset `off` (a multiple of kWorkspaceAlign).
  template <typename V>
  V* at(size_t off) const { return reinterpret_cast<V*>(base_ + off); }

 private:
  cudaStream_t stream_;
  char* base_ = nullptr;
  void* owned_ = nullptr;
};

/// Stream-ordered temporary device buffer (used for cuStateVec's extra workspace, normally never needed).
class TempBuffer {
 public:
  TempBuffer(size_t bytes, cudaStream_t stream) : stream_(stream), bytes_(bytes) {
    if (bytes > 0) QAA_CUDA_CHECK(cudaMallocAsync(&ptr_, bytes, stream));
  }
  ~TempBuffer() {
    if (ptr_ != nullptr) (void)cudaFreeAsync(ptr_, stream_);
  }
  TempBuffer(const TempBuffer&) = delete;
  TempBuffer& operator=(const TempBuffer&) = delete;
  void* get() const { return ptr_; }
  size_t size() const { return bytes_; }

 private:
  cudaStream_t stream_;
  size_t bytes_ = 0;
  void* ptr_ = nullptr;
};

}  // namespace qaa::cuda
