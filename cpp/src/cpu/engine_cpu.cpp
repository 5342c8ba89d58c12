// CPU backend: OpenMP over the batch; each thread runs every gate on one state while it sits in cache.
// Real circuits (RY, CNOT, CZ) take a real-valued path in the fused forward/backward.
#include <omp.h>

#include <atomic>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "batched_cpu.hpp"
#include "kernels_cpu.hpp"
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

  std::string name() const override { return "cpu"; }
  void* allocate(size_t bytes) override {
    void* p = std::malloc(bytes ? bytes : 1);
    if (!p) throw std::bad_alloc();
    return p;
  }
  void release(void* ptr) override { std::free(ptr); }
  void to_device(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void to_host(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void synchronize() override {}
  size_t workspace_size(Op, const Circuit&, int64_t) const override { return 0; }

  void embed(int n, const T* x, int64_t B, int64_t d, Complex* psi0, T* norms, const ExecContext&) override {
    const int64_t N = int64_t{1} << n;
#pragma omp parallel for schedule(static) num_threads(threads())
    for (int64_t b = 0; b < B; ++b) embed_row<T, Complex>(x + b * d, d, N, psi0 + b * N, norms + b);
  }

  void apply(const Circuit& c, const T* theta, Complex* psi, int64_t B, bool adjoint,
             const ExecContext&) override {
    const auto gates = compile(c, theta);
    const int64_t N = c.dim();
#pragma omp parallel for schedule(static) num_threads(threads())
    for (int64_t b = 0; b < B; ++b) apply_circuit(psi + b * N, N, gates, adjoint);
  }

  void readout(int n, const Complex* psi, int64_t B, Readout r, T* features, const ExecContext&) override {
    const int64_t N = int64_t{1} << n, F = readout_features(r, n);
#pragma omp parallel for schedule(static) num_threads(threads())
    for (int64_t b = 0; b < B; ++b) readout_state(psi + b * N, n, r, features + b * F);
  }

  void vjp(const Circuit& c, const T* theta, const Complex* psi, const T* grad_features, Readout r, int64_t B,
           T* grad_theta, T* grad_psi0, const ExecContext&) override {
    const auto gates = compile(c, theta);
    const int n = c.n_qubits();
    const int64_t N = c.dim(), F = readout_features(r, n);
    const int P = c.n_params();
    const int nt = threads();
    std::vector<double> partial(static_cast<size_t>(nt) * P, 0.0);
#pragma omp parallel num_threads(nt)
    {
      std::vector<Complex> phi(N), lam(N);
      std::vector<T> o(N);
      double* g = partial.data() + static_cast<size_t>(omp_get_thread_num()) * P;
#pragma omp for schedule(static)
      for (int64_t b = 0; b < B; ++b) {
        std::copy(psi + b * N, psi + (b + 1) * N, phi.begin());
        observable_diag(n, r, grad_features + b * F, o.data());
        for (int64_t k = 0; k < N; ++k) lam[k] = o[k] * phi[k];
        adjoint_sweep(phi.data(), lam.data(), N, gates, g);
        T* out = grad_psi0 + b * N;
        for (int64_t k = 0; k < N; ++k) out[k] = T(2) * lam[k].real();
      }
    }
    reduce(partial, nt, P, grad_theta);
  }

  void circuit_matrix(const Circuit& c, const T* theta, Complex* u, const ExecContext&) override {
    const auto gates = compile(c, theta);
    const int64_t N = c.dim();
#pragma omp parallel num_threads(threads())
    {
      std::vector<Complex> col(N);
#pragma omp for schedule(static)
      for (int64_t j = 0; j < N; ++j) {
        std::fill(col.begin(), col.end(), Complex(0));
        col[j] = Complex(1);
        apply_circuit(col.data(), N, gates, false);
        for (int64_t i = 0; i < N; ++i) u[i * N + j] = col[i];
      }
    }
  }

  void forward(const Circuit& c, const T* theta, const T* x, int64_t B, int64_t d, Readout r, T* features,
               T* norms, const ExecContext&) override {
    forward_lanes(c, theta, x, B, d, r, features, norms);
  }

  void backward(const Circuit& c, const T* theta, const T* x, int64_t B, int64_t d, Readout r,
                const T* grad_features, const T* grad_norms, T* grad_theta, T* grad_x,
                const ExecContext&) override {
    backward_lanes(c, theta, x, B, d, r, grad_features, grad_norms, grad_theta, grad_x);
  }

 private:
  static void reduce(const std::vector<double>& partial, int nt, int P, T* grad_theta) {
    for (int p = 0; p < P; ++p) {
      double acc = 0;
      for (int t = 0; t < nt; ++t) acc += partial[static_cast<size_t>(t) * P + p];
      grad_theta[p] = static_cast<T>(acc);
    }
  }

  // Fused forward: blocks of W lanes (see batched_cpu.hpp), one block per OpenMP iteration.
  static void forward_lanes(const Circuit& c, const T* theta, const T* x, int64_t B, int64_t d, Readout r,
                            T* features, T* norms) {
    constexpr int W = kLanes<T>;
    const bool cx = !c.is_real();
    const Program<T> prog = compile_program(c, theta);
    const int n = c.n_qubits();
    const int64_t N = c.dim(), F = readout_features(r, n);
    const int64_t blocks = (B + W - 1) / W;
#pragma omp parallel num_threads(threads_for(blocks))
    {
      std::vector<T> mem(static_cast<size_t>(N) * W * 4 + N + static_cast<size_t>(n) * W);
      T* planes = mem.data();
      T* row = planes + N * W * 4;
      T* z = row + N;
#pragma omp for schedule(dynamic, 1)
      for (int64_t blk = 0; blk < blocks; ++blk) {
        const int64_t b0 = blk * W;
        const int lanes = static_cast<int>(std::min<int64_t>(W, B - b0));
        LaneBlock<T> st{planes, cx ? planes + N * W : nullptr, planes + 2 * N * W, cx ? planes + 3 * N * W : nullptr};
        embed_lanes<W>(x + b0 * d, d, N, lanes, row, st.re, norms + b0, nullptr);
        if (cx) std::fill(st.im, st.im + N * W, T(0));
        for (const auto& op : prog.ops) apply_op<T, W>(prog, op, st, N, false);
        T* p = st.tmp_re;
        if (cx) {
          for (int64_t k = 0; k < N * W; ++k) p[k] = probability(st.re[k], st.im[k]);
        } else {
          for (int64_t k = 0; k < N * W; ++k) p[k] = probability(st.re[k]);
        }
        if (r == Readout::kProbs) {
          for (int l = 0; l < lanes; ++l)
            for (int64_t k = 0; k < N; ++k) features[(b0 + l) * F + k] = p[k * W + l];
        } else {
          lane_z_from_probs<T, W>(p, n, z);
          for (int l = 0; l < lanes; ++l)
            for (int q = 0; q < n; ++q) features[(b0 + l) * F + q] = z[q * W + l];
        }
      }
    }
  }

  /// Embed `lanes` rows into a real plane (lanes beyond are zero states); records norms and row kinds.
  template <int W>
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

  static void backward_lanes(const Circuit& c, const T* theta, const T* x, int64_t B, int64_t d, Readout r,
                             const T* grad_features, const T* grad_norms, T* grad_theta, T* grad_x) {
    constexpr int W = kLanes<T>;
    const bool cx = !c.is_real();
    const Program<T> prog = compile_program(c, theta);
    const int n = c.n_qubits();
    const int64_t N = c.dim(), F = readout_features(r, n);
    const int P = c.n_params();
    const int64_t blocks = (B + W - 1) / W;
    const int nt = threads_for(blocks);
    // One partial gradient per block, summed in block order afterwards: the result does not depend on which
    // thread ran which block, so blocks can be handed out dynamically (robust to a preempted thread).
    std::vector<double> partial(static_cast<size_t>(blocks) * P, 0.0);
#pragma omp parallel num_threads(nt)
    {
      std::vector<T> mem(static_cast<size_t>(N) * W * 8 + 2 * N);
      T* planes = mem.data();
      T* row = planes + N * W * 8;
      T* gpsi = row + N;
      alignas(64) T acc[W];
      T norms[W];
      RowKind kinds[W];
#pragma omp for schedule(dynamic, 1)
      for (int64_t blk = 0; blk < blocks; ++blk) {
        double* gacc = partial.data() + static_cast<size_t>(blk) * P;
        const int64_t b0 = blk * W;
        const int lanes = static_cast<int>(std::min<int64_t>(W, B - b0));
        LaneBlock<T> phi{planes, cx ? planes + N * W : nullptr, planes + 2 * N * W, cx ? planes + 3 * N * W : nullptr};
        LaneBlock<T> lam{planes + 4 * N * W, cx ? planes + 5 * N * W : nullptr, planes + 6 * N * W,
                         cx ? planes + 7 * N * W : nullptr};
        embed_lanes<W>(x + b0 * d, d, N, lanes, row, phi.re, norms, kinds);
        if (cx) std::fill(phi.im, phi.im + N * W, T(0));
        for (const auto& op : prog.ops) apply_op<T, W>(prog, op, phi, N, false);
        // lam = O phi, O diagonal per lane
        lane_observable<T, W>(n, r, grad_features + b0 * F, lanes, lam.re);
        if (cx) {
          for (int64_t k = 0; k < N * W; ++k) lam.im[k] = lam.re[k] * phi.im[k];
        }
        for (int64_t k = 0; k < N * W; ++k) lam.re[k] *= phi.re[k];
        // reverse sweep
        for (auto it = prog.ops.rbegin(); it != prog.ops.rend(); ++it) {
          const auto& op = *it;
          if (op.nk > 0) {  // group of commuting RY gates (real path)
            alignas(64) T gacc_lanes[kMaxGroup][W] = {};
            if (op.nk == 1) {
              lane_adjoint_ry_real<T, W>(phi.re, lam.re, N, op.gs[0], op.gc[0], op.gsn[0], gacc_lanes[0]);
            } else {  // gate 0 acts first in the forward, so it is "b"; gate 1 is "a"
              lane_adjoint_ry_pair<T, W>(phi.re, lam.re, N, op.gs[1], op.gs[0], op.gc[1], op.gsn[1], op.gc[0],
                                         op.gsn[0], gacc_lanes[1], gacc_lanes[0]);
            }
            for (int j = 0; j < op.nk; ++j) {
              double sum = 0;
              for (int l = 0; l < W; ++l) sum += gacc_lanes[j][l];
              gacc[op.gp[j]] += sum;
            }
          } else if (op.param >= 0) {
            for (int l = 0; l < W; ++l) acc[l] = 0;
            if (!cx) {
              lane_adjoint_ry_real<T, W>(phi.re, lam.re, N, op.stride, op.c, op.s, acc);
            } else {
              lane_grad_complex<T, W>(op.kind, phi.re, phi.im, lam.re, lam.im, N, op.stride, acc);
              apply_op<T, W>(prog, op, phi, N, true);
              apply_op<T, W>(prog, op, lam, N, true);
            }
            double sum = 0;
            for (int l = 0; l < W; ++l) sum += acc[l];
            gacc[op.param] += sum;
          } else {
            apply_op<T, W>(prog, op, phi, N, true);
            apply_op<T, W>(prog, op, lam, N, true);
          }
        }
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
      }
    }
    reduce(partial, static_cast<int>(blocks), P, grad_theta);
  }

  static T real_part(T a) { return a; }
  static T real_part(Complex a) { return a.real(); }
};

}  // namespace cpu

template <typename T>
std::unique_ptr<Backend<T>> make_cpu_backend() {
  return std::make_unique<cpu::CpuBackend<T>>();
}

template std::unique_ptr<Backend<float>> make_cpu_backend<float>();
template std::unique_ptr<Backend<double>> make_cpu_backend<double>();

}  // namespace qaa
