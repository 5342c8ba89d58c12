// Host emulation of the fused kernel (see fused_emulation.hpp).
#include "fused_emulation.hpp"

#include <algorithm>
#include <complex>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "fused_calls.hpp"
#include "fused_state.hpp"

namespace qaa {
namespace fused {
namespace {

/// Executor of one group on the host: every lane in turn; reductions in the device's order.
template <typename T, bool CPLX>
struct HostEx {
  int G;
  Lane<T, CPLX>* lane;
  T* buf_re;
  T* buf_im;

  int lanes() const { return G; }
  bool leader() const { return true; }  // called outside each(): once per group
  void sync() {}
  template <typename F>
  void each(F&& f) {
    for (int t = 0; t < G; ++t) f(lane[t], t);
  }
  template <typename F, typename Op>
  auto reduce(F&& f, Op op) {
    using V = decltype(f(lane[0], 0));
    std::vector<V> v(G), w(G);
    for (int t = 0; t < G; ++t) v[t] = f(lane[t], t);
    for (int off = std::min(G, 32) / 2; off >= 1; off /= 2) {
      for (int i = 0; i < G; ++i) w[i] = op(v[i], v[i ^ off]);
      v.swap(w);
    }
    V total = v[0];
    for (int wp = 1; wp < G / 32; ++wp) total = op(total, v[32 * wp]);
    return total;
  }
};

template <typename T, bool CPLX, Mode M>
void run(const Plan& P, const T* theta, const Args<T>& A_in, T* grad_theta) {
  Args<T> A = A_in;
  std::vector<T> c(std::max(P.n_slots, 1)), s(std::max(P.n_slots, 1));
  for (int k = 0; k < P.n_slots; ++k) half_angle(theta, P.slot_param[k], &c[k], &s[k]);
  const HalfAngles<T> ha{c.data(), s.data()};
  const LaunchShape L = launch_shape(P.thread_bits, A.batch);
  const int G = 1 << P.thread_bits;
  const bool grads = M == Mode::kBackward || M == Mode::kVjp;
  std::vector<double> acc(grads ? static_cast<size_t>(L.groups) * std::max(P.n_slots, 1) : 0, 0.0);
  std::vector<Lane<T, CPLX>> lanes(G);
  std::vector<T> buf(static_cast<size_t>(buffer_entries(P.n_eff)) * 2);
  HostEx<T, CPLX> ex{G, lanes.data(), buf.data(), buf.data() + buffer_entries(P.n_eff)};
  for (int64_t g = 0; g < L.groups; ++g) {
    double* row_acc = grads ? acc.data() + g * P.n_slots : nullptr;
    for (int64_t row0 = 0; row0 < A.batch; row0 += L.groups) run_state<T, CPLX, M>(ex, P, ha, A, row0 + g, row_acc);
  }
  if (!grads || grad_theta == nullptr) return;
  // Per slot: sum over the groups in group order; per parameter: its slots in slot order.
  std::vector<double> slot_sum(P.n_slots, 0.0);
  for (int k = 0; k < P.n_slots; ++k) {
    double v = 0;
    for (int64_t g = 0; g < L.groups; ++g) v += acc[g * P.n_slots + k];
    slot_sum[k] = v;
  }
  for (int p = 0; p < P.n_params; ++p) {
    double v = 0;
    for (int k = 0; k < P.n_slots; ++k) v += P.slot_param[k] == p ? slot_sum[k] : 0.0;
    grad_theta[p] = static_cast<T>(v);
  }
}

std::unique_ptr<Plan> plan_or_throw(const Circuit& c) {
  std::string why;
  auto p = make_plan(c, &why);
  if (!p) throw std::invalid_argument("qaa fused emulation: circuit not supported by the fused plan: " + why);
  return std::make_unique<Plan>(*p);
}

/// The `run` of fused_calls.hpp: the emulated groups of plan P.
template <typename T>
auto emulate(const Plan& P, const T* theta) {
  return [&P, theta](auto cplx, auto mode, const Args<T>& a, T* grad_theta) {
    run<T, decltype(cplx)::value, decltype(mode)::value>(P, theta, a, grad_theta);
  };
}

template <typename T>
class EmulatedBackend final : public Backend<T> {
 public:
  using Complex = std::complex<T>;
  std::string name() const override { return "fused-emulation"; }
  size_t workspace_size(Op, const Circuit&, int64_t) const override { return 0; }

  void embed(int n, const T* x, int64_t B, int64_t d, Complex* psi0, T* norms, const ExecContext&) override {
    const int64_t N = int64_t{1} << n;
    if (d < 1 || d > N) throw std::invalid_argument("input width out of range");
    for (int64_t b = 0; b < B; ++b) embed_row<T, Complex>(x + b * d, d, N, psi0 + b * N, norms + b);
  }
  void readout(int n, const Complex* psi, int64_t B, Readout r, T* f, const ExecContext&) override {
    const int64_t N = int64_t{1} << n;
    for (int64_t b = 0; b < B; ++b) {
      const Complex* p = psi + b * N;
      if (r == Readout::kProbs) {
        for (int64_t k = 0; k < N; ++k) f[b * N + k] = probability(p[k].real(), p[k].imag());
      } else {
        for (int q = 0; q < n; ++q) {
          T z = 0;
          for (int64_t k = 0; k < N; ++k) z += z_term(probability(p[k].real(), p[k].imag()), wire_set(k, n, q));
          f[b * n + q] = z;
        }
      }
    }
  }
  void apply(const Circuit& c, const T* theta, Complex* psi, int64_t B, bool adjoint, const ExecContext&) override {
    if (B == 0) return;
    const auto P = plan_or_throw(c);
    const std::vector<Complex> in(psi, psi + B * c.dim());
    run_apply(emulate(*P, theta), B, in.data(), psi, adjoint);
  }
  void vjp(const Circuit& c, const T* theta, const Complex* psi, const T* grad_features, Readout r, int64_t B,
           T* grad_theta, T* grad_psi0, const ExecContext&) override {
    const auto P = plan_or_throw(c);
    if (B == 0) {
      std::fill(grad_theta, grad_theta + c.n_params(), T(0));
      return;
    }
    run_vjp(emulate(*P, theta), B, r, psi, grad_features, grad_theta, grad_psi0);
  }
  void circuit_matrix(const Circuit& c, const T* theta, Complex* u, const ExecContext& ctx) override {
    const int64_t N = c.dim();
    std::fill(u, u + N * N, Complex(0));
    for (int64_t j = 0; j < N; ++j) u[j * N + j] = Complex(1);
    apply(c, theta, u, N, false, ctx);  // row j becomes U e_j
    for (int64_t i = 0; i < N; ++i)
      for (int64_t j = i + 1; j < N; ++j) std::swap(u[i * N + j], u[j * N + i]);
  }
  void forward(const Circuit& c, const T* theta, const T* x, int64_t B, int64_t d, Readout r, T* features, T* norms,
               const ExecContext&) override {
    if (d < 1 || d > c.dim()) throw std::invalid_argument("input width out of range");
    if (B == 0) return;
    const auto P = plan_or_throw(c);
    run_forward(emulate(*P, theta), c, B, d, r, x, features, norms);
  }
  void backward(const Circuit& c, const T* theta, const T* x, int64_t B, int64_t d, Readout r, const T* grad_features,
                const T* grad_norms, T* grad_theta, T* grad_x, const ExecContext&) override {
    if (d < 1 || d > c.dim()) throw std::invalid_argument("input width out of range");
    const auto P = plan_or_throw(c);
    if (B == 0) {
      std::fill(grad_theta, grad_theta + c.n_params(), T(0));
      return;
    }
    run_backward(emulate(*P, theta), c, B, d, r, x, grad_features, grad_norms, grad_theta, grad_x);
  }
};

}  // namespace
}  // namespace fused

template <typename T>
std::unique_ptr<Backend<T>> make_fused_emulation_backend() {
  return std::make_unique<fused::EmulatedBackend<T>>();
}

template std::unique_ptr<Backend<float>> make_fused_emulation_backend<float>();
template std::unique_ptr<Backend<double>> make_fused_emulation_backend<double>();

}  // namespace qaa
