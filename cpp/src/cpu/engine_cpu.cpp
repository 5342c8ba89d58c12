// CPU backend: OpenMP over the batch; each thread runs every gate on one state while it sits in cache.
// Real circuits (RY, CNOT, CZ) take a real-valued path in the fused forward/backward.
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels_cpu.hpp"
#include "qaa/backend.hpp"
#include "qaa/embedding.hpp"

namespace qaa {

namespace {
int g_threads = 0;  // 0: OpenMP default
int threads() { return g_threads > 0 ? g_threads : omp_get_max_threads(); }
}  // namespace

void set_cpu_threads(int n) { g_threads = n > 0 ? n : 0; }
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
    if (c.is_real()) {
      forward_impl<T>(c, theta, x, B, d, r, features, norms);
    } else {
      forward_impl<Complex>(c, theta, x, B, d, r, features, norms);
    }
  }

  void backward(const Circuit& c, const T* theta, const T* x, int64_t B, int64_t d, Readout r,
                const T* grad_features, const T* grad_norms, T* grad_theta, T* grad_x,
                const ExecContext&) override {
    if (c.is_real()) {
      backward_impl<T>(c, theta, x, B, d, r, grad_features, grad_norms, grad_theta, grad_x);
    } else {
      backward_impl<Complex>(c, theta, x, B, d, r, grad_features, grad_norms, grad_theta, grad_x);
    }
  }

 private:
  static void reduce(const std::vector<double>& partial, int nt, int P, T* grad_theta) {
    for (int p = 0; p < P; ++p) {
      double acc = 0;
      for (int t = 0; t < nt; ++t) acc += partial[static_cast<size_t>(t) * P + p];
      grad_theta[p] = static_cast<T>(acc);
    }
  }

  template <typename A>
  static void forward_impl(const Circuit& c, const T* theta, const T* x, int64_t B, int64_t d, Readout r,
                           T* features, T* norms) {
    const auto gates = compile(c, theta);
    const int n = c.n_qubits();
    const int64_t N = c.dim(), F = readout_features(r, n);
#pragma omp parallel num_threads(threads())
    {
      std::vector<A> phi(N);
#pragma omp for schedule(static)
      for (int64_t b = 0; b < B; ++b) {
        embed_row<T, A>(x + b * d, d, N, phi.data(), norms + b);
        apply_circuit(phi.data(), N, gates, false);
        readout_state(phi.data(), n, r, features + b * F);
      }
    }
  }

  template <typename A>
  static void backward_impl(const Circuit& c, const T* theta, const T* x, int64_t B, int64_t d, Readout r,
                            const T* grad_features, const T* grad_norms, T* grad_theta, T* grad_x) {
    const auto gates = compile(c, theta);
    const int n = c.n_qubits();
    const int64_t N = c.dim(), F = readout_features(r, n);
    const int P = c.n_params();
    const int nt = threads();
    std::vector<double> partial(static_cast<size_t>(nt) * P, 0.0);
#pragma omp parallel num_threads(nt)
    {
      std::vector<A> phi(N), lam(N);
      std::vector<T> o(N), psi0(N), gpsi(d);
      double* g = partial.data() + static_cast<size_t>(omp_get_thread_num()) * P;
#pragma omp for schedule(static)
      for (int64_t b = 0; b < B; ++b) {
        T norm;
        const RowKind kind = embed_row<T, T>(x + b * d, d, N, psi0.data(), &norm);
        if (kind != RowKind::kRegular && kind != RowKind::kInfinite) {
          // zero state: readout 0, every gradient 0
          std::fill(grad_x + b * d, grad_x + (b + 1) * d, T(0));
          continue;
        }
        for (int64_t k = 0; k < N; ++k) phi[k] = A(psi0[k]);
        apply_circuit(phi.data(), N, gates, false);
        observable_diag(n, r, grad_features + b * F, o.data());
        for (int64_t k = 0; k < N; ++k) lam[k] = o[k] * phi[k];
        adjoint_sweep(phi.data(), lam.data(), N, gates, g);
        for (int64_t k = 0; k < d; ++k) gpsi[k] = T(2) * real_part(lam[k]);
        const T gn = grad_norms ? grad_norms[b] : T(0);
        embed_row_vjp<T>(kind, psi0.data(), norm, gpsi.data(), gn, d, grad_x + b * d);
      }
    }
    reduce(partial, nt, P, grad_theta);
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
