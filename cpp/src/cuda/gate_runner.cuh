// The gates of the cuStateVec engine: a circuit's rotation slots (Plan), their 2x2 matrices built on the device
// from theta (build_matrices_kernel, gate_kernels.cuh), and GateRunner, which applies gates and whole circuits
// to contiguous batches of states through custatevecApplyMatrixBatched.
//
// BROADCAST map (one matrix shared by the whole batch), the adjoint flag for inverse gates, and CNOT / CZ as
// X / Z with one control bit; wire q is index bit n-1-q (cuStateVec's bit 0 is the least significant).
#pragma once

#include <custatevec.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cuda_support.cuh"
#include "gate_kernels.cuh"
#include "qaa/circuit.hpp"

namespace qaa::cuda {

/// Most state vectors one cuStateVec call gets (its nSVs is 32-bit).
inline constexpr int64_t kMaxSvsPerCall = int64_t{1} << 30;

/// Host-side view of a circuit for the device: rotation slots and their descriptors.
struct Plan {
  int n = 0;
  int64_t N = 0;
  int R = 0;                      // rotation gates
  int P = 0;                      // parameters
  bool has_two_qubit = false;
  std::vector<int32_t> slot;      // per gate: rotation slot (matrix index) or -1
  std::vector<int32_t> codes;     // per rotation slot: param * 4 + kind
};

inline Plan make_plan(const Circuit& c) {
  Plan p;
  p.n = c.n_qubits();
  p.N = c.dim();
  p.P = c.n_params();
  p.slot.reserve(c.gates().size());
  for (const Gate& g : c.gates()) {
    if (is_rotation(g.kind)) {
      p.slot.push_back(p.R++);
      p.codes.push_back(g.param * 4 + static_cast<int32_t>(g.kind));
    } else {
      p.slot.push_back(-1);
      p.has_two_qubit = true;
    }
  }
  return p;
}

template <typename T>
struct TypeInfo;
template <>
struct TypeInfo<float> {
  static constexpr cudaDataType_t data = CUDA_C_32F;
  static constexpr custatevecComputeType_t compute = CUSTATEVEC_COMPUTE_32F;
};
template <>
struct TypeInfo<double> {
  static constexpr cudaDataType_t data = CUDA_C_64F;
  static constexpr custatevecComputeType_t compute = CUSTATEVEC_COMPUTE_64F;
};

/// Build the device gate matrices of `plan` from device theta (see build_matrices_kernel).
template <typename T>
void build_matrices(const Plan& plan, const T* theta, Amp<T>* mats, int32_t* rot_param, cudaStream_t stream) {
  int done = 0;
  do {
    RotationBatch rb{};
    rb.offset = done;
    rb.count = std::min(plan.R - done, kRotationsPerLaunch);
    rb.const_slot = plan.R;
    rb.write_consts = done == 0 ? 1 : 0;
    for (int i = 0; i < rb.count; ++i) rb.code[i] = plan.codes[done + i];
    build_matrices_kernel<T><<<1, kRotationsPerLaunch, 0, stream>>>(rb, theta, mats, rot_param);
    QAA_CUDA_CHECK_LAUNCH();
    done += rb.count;
  } while (done < plan.R);
}

/// Applies the gates of one circuit to contiguous batches of states through cuStateVec.
template <typename T>
class GateRunner {
 public:
  /// `max_svs`: the most states any later call passes (sizes cuStateVec's extra workspace, normally 0).
  GateRunner(custatevecHandle_t handle, const Circuit& c, const Plan& plan, const Amp<T>* mats, int64_t max_svs,
             cudaStream_t stream)
      : handle_(handle), circuit_(c), plan_(plan), mats_(mats), extra_(extra_bytes(handle, plan, mats, max_svs), stream) {}

  /// Apply gate `gi` (or its inverse when `adjoint`) to `rows` states sv[rows, N].
  void gate(Amp<T>* sv, int64_t rows, size_t gi, bool adjoint) {
    const Gate& g = circuit_.gates()[gi];
    const int n = plan_.n;
    const Amp<T>* m;
    int32_t target, control = -1;
    if (is_rotation(g.kind)) {
      target = n - 1 - g.wires[0];
      m = mats_ + 4 * int64_t(plan_.slot[gi]);
    } else {
      // CNOT(c, t) = X on t controlled by c; CZ(a, b) = Z on b controlled by a (symmetric).
      target = n - 1 - g.wires[1];
      control = n - 1 - g.wires[0];
      m = mats_ + 4 * int64_t(plan_.R + (g.kind == GateKind::CNOT ? 0 : 1));
    }
    const uint32_t n_controls = control >= 0 ? 1u : 0u;
    for (int64_t b0 = 0; b0 < rows; b0 += kMaxSvsPerCall) {
      const int64_t cnt = std::min(rows - b0, kMaxSvsPerCall);
      QAA_CUSV_CHECK(custatevecApplyMatrixBatched(
          handle_, sv + b0 * plan_.N, TypeInfo<T>::data, static_cast<uint32_t>(n), static_cast<uint32_t>(cnt),
          static_cast<custatevecIndex_t>(plan_.N), CUSTATEVEC_MATRIX_MAP_TYPE_BROADCAST, nullptr, m,
          TypeInfo<T>::data, CUSTATEVEC_MATRIX_LAYOUT_ROW, adjoint ? 1 : 0, 1, &target, 1,
          n_controls ? &control : nullptr, nullptr, n_controls, TypeInfo<T>::compute, extra_.get(), extra_.size()));
    }
  }

  /// Apply the whole circuit (U), or its inverse (U^dagger: gates reversed, each adjoint).
  void circuit(Amp<T>* sv, int64_t rows, bool adjoint) {
    const size_t G = circuit_.gates().size();
    if (!adjoint) {
      for (size_t gi = 0; gi < G; ++gi) gate(sv, rows, gi, false);
    } else {
      for (size_t gi = G; gi-- > 0;) gate(sv, rows, gi, true);
    }
  }

 private:
  static size_t extra_bytes(custatevecHandle_t h, const Plan& plan, const Amp<T>* mats, int64_t max_svs) {
    size_t need = 0;
    const uint32_t svs = static_cast<uint32_t>(std::clamp<int64_t>(max_svs, 1, kMaxSvsPerCall));
    for (uint32_t n_controls : {0u, 1u}) {
      if (n_controls == 0 && plan.R == 0) continue;
      if (n_controls == 1 && !plan.has_two_qubit) continue;
      size_t bytes = 0;
      QAA_CUSV_CHECK(custatevecApplyMatrixBatchedGetWorkspaceSize(
          h, TypeInfo<T>::data, static_cast<uint32_t>(plan.n), svs, static_cast<custatevecIndex_t>(plan.N),
          CUSTATEVEC_MATRIX_MAP_TYPE_BROADCAST, nullptr, mats, TypeInfo<T>::data, CUSTATEVEC_MATRIX_LAYOUT_ROW, 0, 1,
          1, n_controls, TypeInfo<T>::compute, &bytes));
      need = std::max(need, bytes);
    }
    return need;
  }

  custatevecHandle_t handle_;
  const Circuit& circuit_;
  const Plan& plan_;
  const Amp<T>* mats_;
  TempBuffer extra_;
};

}  // namespace qaa::cuda
