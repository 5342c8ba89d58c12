// CPU backend: orchestrates the CPU engine's parts (program.hpp: compilation; gates.hpp: gate kernels on a
// block of 1..W lanes; measurements.hpp: readouts and observables; adjoint.hpp: the adjoint sweep) with
// OpenMP over blocks. Every entry point, the state-level API included, runs on the same lane kernels.
// Real circuits (RY, CNOT, CZ) on real states (the fused forward/backward) run with real planes only.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "adjoint.hpp"
#include "gates.hpp"
#include "measurements.hpp"
#include "program.hpp"
#include "qaa/backend.hpp"
#include "qaa/embedding.hpp"

namespace qaa {

namespace {
std::atomic<int> g_threads{0};  // 0: OpenMP default
int threads() {
  const int t = g_threads.load(std::memory_order_relaxed);
  return t > 0 ? t : omp_get_max_threads();
}
/// Threads for `blocks` independent work items: one thread when there is too little work to amortise waking
/// the pool (small batches, e.g. one token per sequence during generation).
int threads_for(int64_t blocks) { return blocks >= 4 ? threads() : 1; }
}  // namespace

void set_cpu_threads(int n) { g_threads.store(n > 0 ? n : 0, std::memory_order_relaxed); }
int get_cpu_threads() { return threads(); }

namespace cpu {

template <typename T>
class CpuBackend final : public Backend<T> {
 public:
  using Complex = std::complex<T>;
  static constexpr int W = kLanes<T>;

  std::string name() const override { return "cpu"; }
  size_t workspace_size(Op, const Circuit&, int64_t) const override { return 0; }

  void embed(int n, const T* x, int64_t B, int64_t d, Complex* psi0, T* norms, const ExecContext&) override {
    const int64_t N = int64_t{1} << n;
#pragma omp parallel for schedule(static) num_threads(threads_for(B))
    for (int64_t b = 0; b < B; ++b) embed_row<T, Complex>(x + b * d, d, N, psi0 + b * N, norms + b);
  }

  void apply(const Circuit& c, const T* theta, Complex* psi, int64_t B, bool adjoint,
             const ExecContext&) override {
    const Program<T> prog = compile_program(c, theta, true);
    const int64_t N = c.dim();
    for_each_block(B, N * W * 4, [&](int64_t, int64_t b0, int lanes, T* planes) {
      LaneBlock<T> st = block(planes, N, true);
      load_lanes<T, W>(psi + b0 * N, N, lanes, st.re, st.im);
      apply_program<T, W>(prog, st, N, adjoint);
      store_lanes<T, W>(st.re, st.im, N, lanes, psi + b0 * N, N, 1);
    });
  }

  void readout(int n, const Complex* psi, int64_t B, Readout r, T* features, const ExecContext&) override {
    const int64_t N = int64_t{1} << n, F = readout_features(r, n);
    for_each_block(B, N * W * 3 + n * W, [&](int64_t, int64_t b0, int lanes, T* re) {
      T* im = re + N * W;
      T* p = im + N * W;
      load_lanes<T, W>(psi + b0 * N, N, lanes, re, im);
      lane_readout<T, W>(re, im, n, r, lanes, p, p + N * W, features + b0 * F);
    });
  }

  void vjp(const Circuit& c, const T* theta, const Complex* psi, const T* grad_features, Readout r, int64_t B,
           T* grad_theta, T* grad_psi0, const ExecContext&) override {
    // States are complex here, so the program is compiled without RY groups (see adjoint_sweep).
    const Program<T> prog = compile_program(c, theta, false);
    const int n = c.n_qubits();
    const int64_t N = c.dim(), F = readout_features(r, n);
    const int P = c.n_params();
    std::vector<double> partial(static_cast<size_t>(blocks_of(B)) * P, 0.0);
    for_each_block(B, N * W * 8, [&](int64_t blk, int64_t b0, int lanes, T* planes) {
      LaneBlock<T> phi = block(planes, N, true), lam = block(planes + 4 * N * W, N, true);
      load_lanes<T, W>(psi + b0 * N, N, lanes, phi.re, phi.im);
      observe(n, r, grad_features + b0 * F, lanes, phi, lam);
      adjoint_sweep<T, W>(prog, phi, lam, N, partial.data() + static_cast<size_t>(blk) * P);
      for (int l = 0; l < lanes; ++l) {
        T* out = grad_psi0 + (b0 + l) * N;
        for (int64_t k = 0; k < N; ++k) out[k] = T(2) * lam.re[k * W + l];
      }
    });
    reduce(partial, blocks_of(B), P, grad_theta);
  }

  void circuit_matrix(const Circuit& c, const T* theta, Complex* u, const ExecContext&) override {
    // Column j of U is U e_j: the blocks are W basis states.
    const bool cx = !c.is_real();
    const Program<T> prog = compile_program(c, theta, true);
    const int64_t N = c.dim();
    for_each_block(N, N * W * 4, [&](int64_t, int64_t j0, int lanes, T* planes) {
      LaneBlock<T> st = block(planes, N, cx);
      std::fill(planes, planes + (cx ? 2 : 1) * N * W, T(0));
      for (int l = 0; l < lanes; ++l) st.re[(j0 + l) * W + l] = T(1);
      apply_program<T, W>(prog, st, N, false);
      store_lanes<T, W>(st.re, st.im, N, lanes, u + j0, 1, N);
    });
  }

  /// Fused forward: blocks of W lanes, one block per OpenMP iteration.
  void forward(const Circuit& c, const T* theta, const T* x, int64_t B, int64_t d, Readout r, T* features,
               T* norms, const ExecContext&) override {
    const bool cx = !c.is_real();
    const Program<T> prog = compile_program(c, theta, true);
    const int n = c.n_qubits();
    const int64_t N = c.dim(), F = readout_features(r, n);
    for_each_block(B, N * W * 4 + N + n * W, [&](int64_t, int64_t b0, int lanes, T* planes) {
      T* row = planes + N * W * 4;
      LaneBlock<T> st = block(planes, N, cx);
      embed_lanes(x + b0 * d, d, N, lanes, row, st.re, norms + b0, nullptr);
      if (cx) std::fill(st.im, st.im + N * W, T(0));
      apply_program<T, W>(prog, st, N, false);
      lane_readout<T, W>(st.re, st.im, n, r, lanes, st.tmp_re, row + N, features + b0 * F);
    });
  }

  /// VJP of `forward`: recomputes each block's states, then the adjoint sweep and the embedding's VJP.
  void backward(const Circuit& c, const T* theta, const T* x, int64_t B, int64_t d, Readout r,
                const T* grad_features, const T* grad_norms, T* grad_theta, T* grad_x,
                const ExecContext&) override {
    const bool cx = !c.is_real();
    const Program<T> prog = compile_program(c, theta, true);
    const int n = c.n_qubits();
    const int64_t N = c.dim(), F = readout_features(r, n);
    const int P = c.n_params();
    // One partial gradient per block, summed in block order afterwards: the result does not depend on which
    // thread ran which block, so blocks can be handed out dynamically (robust to a preempted thread).
    std::vector<double> partial(static_cast<size_t>(blocks_of(B)) * P, 0.0);
    for_each_block(B, N * W * 8 + 2 * N, [&](int64_t blk, int64_t b0, int lanes, T* planes) {
      T* row = planes + N * W * 8;
      T* gpsi = row + N;
      T norms[W];
      RowKind kinds[W];
      LaneBlock<T> phi = block(planes, N, cx), lam = block(planes + 4 * N * W, N, cx);
      embed_lanes(x + b0 * d, d, N, lanes, row, phi.re, norms, kinds);
      if (cx) std::fill(phi.im, phi.im + N * W, T(0));
      apply_program<T, W>(prog, phi, N, false);
      observe(n, r, grad_features + b0 * F, lanes, phi, lam);
      adjoint_sweep<T, W>(prog, phi, lam, N, partial.data() + static_cast<size_t>(blk) * P);
      // embedding VJP per lane: d/dpsi0 = 2 Re(lam)
      for (int l = 0; l < lanes; ++l) {
        const T* xb = x + (b0 + l) * d;
        T* gx = grad_x + (b0 + l) * d;
        if (kinds[l] != RowKind::kRegular) {
          std::fill(gx, gx + d, T(0));
          continue;
        }
        T nrm;
        embed_row<T, T>(xb, d, N, row, &nrm);
        for (int64_t k = 0; k < d; ++k) gpsi[k] = T(2) * lam.re[k * W + l];
        const T gn = grad_norms ? grad_norms[b0 + l] : T(0);
        embed_row_vjp<T>(kinds[l], row, nrm, gpsi, gn, d, gx);
      }
    });
    reduce(partial, blocks_of(B), P, grad_theta);
  }

 private:
  static int64_t blocks_of(int64_t items) { return (items + W - 1) / W; }

  /// Runs body(blk, i0, lanes, scratch) for every block blk of W consecutive items (items i0 .. i0+lanes-1)
  /// of `items`, in parallel over blocks (handed out dynamically); each thread owns `scratch_values` values
  /// of T of scratch, passed to every body it runs.
  template <typename F>
  static void for_each_block(int64_t items, int64_t scratch_values, F&& body) {
    const int64_t blocks = blocks_of(items);
#pragma omp parallel num_threads(threads_for(blocks))
    {
      std::vector<T> mem(static_cast<size_t>(scratch_values));
#pragma omp for schedule(dynamic, 1)
      for (int64_t blk = 0; blk < blocks; ++blk) {
        const int64_t i0 = blk * W;
        body(blk, i0, static_cast<int>(std::min<int64_t>(W, items - i0)), mem.data());
      }
    }
  }

  /// The block whose four planes (re, im, and their gather scratch) start at `planes` (N*W values each);
  /// a real block has no imaginary planes.
  static LaneBlock<T> block(T* planes, int64_t N, bool complex) {
    return LaneBlock<T>{planes, complex ? planes + N * W : nullptr, planes + 2 * N * W,
                        complex ? planes + 3 * N * W : nullptr};
  }

  /// lam = O phi per lane, O the diagonal observable of cotangents g[lanes, F] (measurements.hpp).
  static void observe(int n, Readout r, const T* g, int lanes, const LaneBlock<T>& phi, LaneBlock<T>& lam) {
    const int64_t N = int64_t{1} << n;
    lane_observable<T, W>(n, r, g, lanes, lam.re);
    if (phi.im) {
      for (int64_t k = 0; k < N * W; ++k) lam.im[k] = lam.re[k] * phi.im[k];
    }
    for (int64_t k = 0; k < N * W; ++k) lam.re[k] *= phi.re[k];
  }

  /// grad_theta[p] = sum over items (in item order) of partial[item * P + p].
  static void reduce(const std::vector<double>& partial, int64_t items, int P, T* grad_theta) {
    for (int p = 0; p < P; ++p) {
      double acc = 0;
      for (int64_t t = 0; t < items; ++t) acc += partial[static_cast<size_t>(t) * P + p];
      grad_theta[p] = static_cast<T>(acc);
    }
  }

  /// Embed `lanes` rows into a real plane (lanes beyond are zero states); records norms and row kinds.
  static void embed_lanes(const T* x, int64_t d, int64_t N, int lanes, T* row, T* plane, T* norms, RowKind* kinds) {
    for (int l = 0; l < W; ++l) {
      if (l < lanes) {
        T nrm;
        const RowKind k = embed_row<T, T>(x + l * d, d, N, row, &nrm);
        norms[l] = nrm;
        if (kinds) kinds[l] = k;
        for (int64_t i = 0; i < N; ++i) plane[i * W + l] = row[i];
      } else {
        if (kinds) kinds[l] = RowKind::kZero;
        for (int64_t i = 0; i < N; ++i) plane[i * W + l] = T(0);
      }
    }
  }
};

}  // namespace cpu

template <typename T>
std::unique_ptr<Backend<T>> make_cpu_backend() {
  return std::make_unique<cpu::CpuBackend<T>>();
}

template std::unique_ptr<Backend<float>> make_cpu_backend<float>();
template std::unique_ptr<Backend<double>> make_cpu_backend<double>();

}  // namespace qaa
