// Portability layer for the math shared by the host (CPU backend) and device (CUDA kernels) code.
//
// QAA_HOST_DEVICE marks a function callable from both: `__host__ __device__` when the file is compiled by
// nvcc, nothing for a host compiler. Functions so marked use only the helpers below (no std:: calls that
// have no device overload, no exceptions, no allocation).
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define QAA_HOST_DEVICE __host__ __device__
#else
#define QAA_HOST_DEVICE
#endif

namespace qaa::hd {

// In the device pass of nvcc the unqualified functions are CUDA's device overloads (float and double); on the
// host they are the <cmath> ones.
#if defined(__CUDA_ARCH__)
#define QAA_HD_MATH(fn) fn
#else
#define QAA_HD_MATH(fn) std::fn
#endif

template <typename T>
QAA_HOST_DEVICE inline bool is_nan(T v) { return QAA_HD_MATH(isnan)(v); }
template <typename T>
QAA_HOST_DEVICE inline bool is_inf(T v) { return QAA_HD_MATH(isinf)(v); }
template <typename T>
QAA_HOST_DEVICE inline bool is_finite(T v) { return QAA_HD_MATH(isfinite)(v); }
template <typename T>
QAA_HOST_DEVICE inline T square_root(T v) { return QAA_HD_MATH(sqrt)(v); }
template <typename T>
QAA_HOST_DEVICE inline T absolute(T v) { return QAA_HD_MATH(fabs)(v); }

#undef QAA_HD_MATH

/// +infinity of T.
template <typename T>
QAA_HOST_DEVICE inline T infinity() {
  return static_cast<T>(HUGE_VAL);
}

/// Combiners of the fixed-order reductions (the CUDA kernels' block reductions, the fused kernel's group
/// reductions and their host emulation).
struct SumOp {
  template <typename V>
  QAA_HOST_DEVICE V operator()(V a, V b) const { return a + b; }
};
struct MaxOp {
  template <typename V>
  QAA_HOST_DEVICE V operator()(V a, V b) const { return a > b ? a : b; }
};

}  // namespace qaa::hd
