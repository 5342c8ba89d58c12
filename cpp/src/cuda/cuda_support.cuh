// Host-side support of the cuStateVec backend: cuStateVec status checks and the handle cache, on top of the
// runtime-only helpers of cuda_runtime_support.cuh (status checks, device guard, per-call scratch).
#pragma once

#include <cuda_runtime.h>
#include <custatevec.h>

#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>

#include "cuda_runtime_support.cuh"

namespace qaa::cuda {

[[noreturn]] inline void throw_custatevec(custatevecStatus_t s, const char* what, const char* file, int line) {
  throw std::runtime_error(std::string("qaa CUDA backend: ") + what + " failed: " + custatevecGetErrorName(s) +
                           ": " + custatevecGetErrorString(s) + " (" + file + ":" + std::to_string(line) + ")");
}

/// Throw std::runtime_error with the cuStateVec error name and string unless `expr` succeeds.
#define QAA_CUSV_CHECK(expr)                                                                    \
  do {                                                                                          \
    const custatevecStatus_t qaa_st_ = (expr);                                                  \
    if (qaa_st_ != CUSTATEVEC_STATUS_SUCCESS) ::qaa::cuda::throw_custatevec(qaa_st_, #expr, __FILE__, __LINE__); \
  } while (0)

/// One cuStateVec handle per (device, stream), created on first use and kept for the life of the process (it
/// is never destroyed: at process exit the CUDA runtime may already be gone). A handle is only ever bound to
/// its own stream, so work queued on different streams never shares a handle or its context workspace, and
/// calls on several streams of one device may run concurrently. A call still holds the entry's lock from
/// custatevecSetStream to its last cuStateVec call, so host threads sharing one stream never interleave.
class HandleCache {
 public:
  struct Lease {
    std::unique_lock<std::mutex> lock;
    custatevecHandle_t handle;
  };

  /// Lock and return the handle of (`device`, `stream`); `device` must be the current device.
  static Lease acquire(int device, cudaStream_t stream) {
    Entry* e = instance().entry(device, stream);
    Lease lease{std::unique_lock<std::mutex>(e->call_mutex), nullptr};
    if (e->handle == nullptr) QAA_CUSV_CHECK(custatevecCreate(&e->handle));
    lease.handle = e->handle;
    QAA_CUSV_CHECK(custatevecSetStream(lease.handle, stream));
    return lease;
  }

 private:
  struct Entry {
    std::mutex call_mutex;
    custatevecHandle_t handle = nullptr;
  };
  static HandleCache& instance() {
    static HandleCache* cache = new HandleCache();  // intentionally leaked, see above
    return *cache;
  }
  Entry* entry(int device, cudaStream_t stream) {
    std::lock_guard<std::mutex> g(map_mutex_);
    auto& slot = entries_[std::make_pair(device, reinterpret_cast<std::uintptr_t>(stream))];
    if (!slot) slot = std::make_unique<Entry>();
    return slot.get();
  }
  std::mutex map_mutex_;
  std::map<std::pair<int, std::uintptr_t>, std::unique_ptr<Entry>> entries_;
};

}  // namespace qaa::cuda
