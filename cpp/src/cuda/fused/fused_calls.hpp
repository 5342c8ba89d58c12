// The Backend calls of the fused per-state program, written once for the CUDA engine (engine_fused_impl.cuh) and
// the host emulation (fused_emulation.cpp): each call packs its arrays into Args<T> and picks the mode and the
// real or complex path. What runs the program is the caller's `run` (a kernel launch, or the emulated groups),
// called with the path and the mode as types:
//   run(std::bool_constant<CPLX>{}, ModeC<M>{}, const Args<T>& args, T* grad_theta)
// Host code only.
#pragma once

#include <complex>
#include <cstdint>
#include <type_traits>

#include "fused_state.hpp"
#include "qaa/circuit.hpp"

namespace qaa::fused {

template <Mode M>
using ModeC = std::integral_constant<Mode, M>;

/// Mode M on embedded inputs: the real path for real circuits (RY, CNOT, CZ), the complex path otherwise.
template <Mode M, typename T, typename Run>
void run_embedded(Run&& run, const Circuit& c, const Args<T>& a, T* grad_theta) {
  if (c.is_real()) {
    run(std::false_type{}, ModeC<M>{}, a, grad_theta);
  } else {
    run(std::true_type{}, ModeC<M>{}, a, grad_theta);
  }
}

/// The arguments forward and backward share: the batch x[B, d] and the readout.
template <typename T>
Args<T> embedded_args(int64_t B, int64_t d, Readout r, const T* x) {
  Args<T> a;
  a.batch = B;
  a.d = d;
  a.readout = static_cast<int>(r);
  a.x = x;
  return a;
}

/// Backend::forward: x[B, d] -> features, norms.
template <typename T, typename Run>
void run_forward(Run&& run, const Circuit& c, int64_t B, int64_t d, Readout r, const T* x, T* features, T* norms) {
  Args<T> a = embedded_args(B, d, r, x);
  a.features = features;
  a.norms = norms;
  run_embedded<Mode::kForward, T>(run, c, a, nullptr);
}

/// Backend::backward: x[B, d], grad_features, grad_norms (may be null) -> grad_theta, grad_x.
template <typename T, typename Run>
void run_backward(Run&& run, const Circuit& c, int64_t B, int64_t d, Readout r, const T* x, const T* grad_features,
                  const T* grad_norms, T* grad_theta, T* grad_x) {
  Args<T> a = embedded_args(B, d, r, x);
  a.grad_features = grad_features;
  a.grad_norms = grad_norms;
  a.grad_x = grad_x;
  run_embedded<Mode::kBackward>(run, c, a, grad_theta);
}

/// Backend::apply on the complex path: psi_out = U psi_in, or U^dagger psi_in when `adjoint`.
template <typename T, typename Run>
void run_apply(Run&& run, int64_t B, const std::complex<T>* psi_in, std::complex<T>* psi_out, bool adjoint) {
  Args<T> a;
  a.batch = B;
  a.psi_in = reinterpret_cast<const T*>(psi_in);
  a.psi_out = reinterpret_cast<T*>(psi_out);
  if (adjoint) {
    run(std::true_type{}, ModeC<Mode::kApplyAdj>{}, a, nullptr);
  } else {
    run(std::true_type{}, ModeC<Mode::kApply>{}, a, nullptr);
  }
}

/// Backend::vjp on the complex path: final states psi, grad_features -> grad_theta, grad_psi0.
template <typename T, typename Run>
void run_vjp(Run&& run, int64_t B, Readout r, const std::complex<T>* psi, const T* grad_features, T* grad_theta,
             T* grad_psi0) {
  Args<T> a;
  a.batch = B;
  a.readout = static_cast<int>(r);
  a.psi_in = reinterpret_cast<const T*>(psi);
  a.grad_features = grad_features;
  a.grad_psi0 = grad_psi0;
  run(std::true_type{}, ModeC<Mode::kVjp>{}, a, grad_theta);
}

}  // namespace qaa::fused
