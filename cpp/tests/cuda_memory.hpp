// CUDA device memory for the C++ tests of the CUDA engines (backend_cuda_test.cpp,
// backend_fused_cuda_test.cpp): synchronous allocation and copies, see device_memory.hpp.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "device_memory.hpp"

namespace qaa::test {

/// CUDA device memory for the tests (synchronous copies on the default stream).
class CudaMemory final : public DeviceMemory {
 public:
  void* allocate(size_t bytes) override {
    void* p = nullptr;
    check(cudaMalloc(&p, bytes ? bytes : 1), "cudaMalloc");
    return p;
  }
  void release(void* ptr) override {
    if (ptr != nullptr) check(cudaFree(ptr), "cudaFree");
  }
  void to_device(void* dst, const void* src, size_t bytes) override {
    if (bytes) check(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
  }
  void to_host(void* dst, const void* src, size_t bytes) override {
    if (bytes) check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy");
  }
  void synchronize() override { check(cudaDeviceSynchronize(), "cudaDeviceSynchronize"); }

 private:
  static void check(cudaError_t e, const char* what) {
    if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
  }
};

}  // namespace qaa::test
