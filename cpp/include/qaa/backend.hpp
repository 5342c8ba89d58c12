// The interface every qaa engine backend (CPU, CUDA) implements.
//
// All array pointers refer to memory on the backend's device, row-major and contiguous, owned by the caller
// (the Python bindings pass torch's memory; the C++ tests their own, cpp/tests/device_memory.hpp). Batched calls share
// one parameter vector theta across the batch. Shapes use B (batch), d (input width), n (qubits),
// N = 2^n (amplitudes), F (readout features: n for Readout::kZ, N for Readout::kProbs), P (parameters).
#pragma once

#include <complex>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "qaa/circuit.hpp"
#include "qaa/readout.hpp"

namespace qaa {

/// Per-call execution context. `stream` is the backend's stream handle (cudaStream_t for CUDA, unused on
/// CPU); `workspace` is caller-allocated scratch of `workspace_bytes` bytes, at least what
/// Backend::workspace_size returned for the call (0 on CPU).
struct ExecContext {
  void* stream = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

/// Operation names for workspace queries.
enum class Op : int { kEmbed, kApply, kReadout, kVjp, kForward, kBackward, kMatrix };

template <typename T>
class Backend {
 public:
  using Complex = std::complex<T>;
  virtual ~Backend() = default;

  virtual std::string name() const = 0;

  /// Bytes of scratch the call needs (0 where the backend keeps none).
  virtual size_t workspace_size(Op op, const Circuit& c, int64_t batch) const = 0;

  // ---- state-level API ----
  /// x[B,d] -> psi0[B,N] (amplitude embedding, see embedding.hpp) and norms[B] = ||x_b||.
  virtual void embed(int n_qubits, const T* x, int64_t batch, int64_t d, Complex* psi0, T* norms,
                     const ExecContext& ctx) = 0;
  /// In place psi[B,N] <- U(theta) psi, or U(theta)^dagger psi when `adjoint`.
  virtual void apply(const Circuit& c, const T* theta, Complex* psi, int64_t batch, bool adjoint,
                     const ExecContext& ctx) = 0;
  /// psi[B,N] -> features[B,F].
  virtual void readout(int n_qubits, const Complex* psi, int64_t batch, Readout r, T* features,
                       const ExecContext& ctx) = 0;
  /// Adjoint-method VJP for the loss sum_b <grad_features_b, readout(psi_b)> with psi_b = U psi0_b:
  /// psi[B,N] is the final state, grad_features[B,F]. Writes grad_theta[P] (summed over the batch) and
  /// grad_psi0[B,N] = dL/d psi0 for a real-valued psi0 (= 2 Re(U^dagger O_b psi_b)).
  virtual void vjp(const Circuit& c, const T* theta, const Complex* psi, const T* grad_features, Readout r,
                   int64_t batch, T* grad_theta, T* grad_psi0, const ExecContext& ctx) = 0;
  /// The circuit's unitary U[N,N], row-major: U[i*N+j] = <i|U(theta)|j>.
  virtual void circuit_matrix(const Circuit& c, const T* theta, Complex* u, const ExecContext& ctx) = 0;

  // ---- fused token-level API (what the QAA layer calls) ----
  /// x[B,d] -> features[B,F] = readout(U embed(x)), norms[B] = ||x_b||. No state is kept.
  virtual void forward(const Circuit& c, const T* theta, const T* x, int64_t batch, int64_t d, Readout r,
                       T* features, T* norms, const ExecContext& ctx) = 0;
  /// VJP of `forward`: recomputes each state, then the adjoint sweep. grad_norms may be null (treated as
  /// 0). Writes grad_theta[P] (summed over the batch) and grad_x[B,d].
  virtual void backward(const Circuit& c, const T* theta, const T* x, int64_t batch, int64_t d, Readout r,
                        const T* grad_features, const T* grad_norms, T* grad_theta, T* grad_x,
                        const ExecContext& ctx) = 0;
};

/// The CPU backend (always available).
template <typename T>
std::unique_ptr<Backend<T>> make_cpu_backend();

/// Number of OpenMP threads the CPU backend uses (<= 0 restores the OpenMP default).
void set_cpu_threads(int n);
int get_cpu_threads();

}  // namespace qaa
