// Memory on a backend's device, for the tests: the backends themselves never allocate or copy for their
// callers (the Python bindings pass torch's memory), so this lives with the tests, one implementation per
// device (HostMemory here; CudaMemory in cuda_memory.hpp). Every call is synchronous except that
// work queued by the engine may still run until synchronize().
#pragma once

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>

namespace qaa::test {

class DeviceMemory {
 public:
  virtual ~DeviceMemory() = default;
  /// At least `bytes` bytes (a valid pointer also for 0); throws std::bad_alloc or std::runtime_error.
  virtual void* allocate(size_t bytes) = 0;
  virtual void release(void* ptr) = 0;
  virtual void to_device(void* dst, const void* src, size_t bytes) = 0;
  virtual void to_host(void* dst, const void* src, size_t bytes) = 0;
  /// Waits for all work queued on the device.
  virtual void synchronize() = 0;
};

/// Host memory (the CPU backend's device).
class HostMemory final : public DeviceMemory {
 public:
  void* allocate(size_t bytes) override {
    void* p = std::malloc(bytes ? bytes : 1);
    if (!p) throw std::bad_alloc();
    return p;
  }
  void release(void* ptr) override { std::free(ptr); }
  void to_device(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  void to_host(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  void synchronize() override {}
};

}  // namespace qaa::test
