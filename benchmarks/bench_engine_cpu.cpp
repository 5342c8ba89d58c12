// bench_engine_cpu: forward and forward+VJP throughput of the CPU engine, per-state (fused, lane-batched)
// path and dense circuit-matrix + GEMM path, swept over qubits, layers, batch and precision.
//
// Self-checking: the fused forward is compared with the state-level pipeline (embed -> apply -> readout) and,
// where BLAS is available, with the dense path; the fused VJP's theta gradient is compared with a central
// finite difference (float64). Prints PASSED or FAILED and returns non-zero on failure.
//
// Usage: bench_engine_cpu [--quick] [--threads T] [--cpu-time]
//   --cpu-time  report process CPU time / threads instead of wall time (for shared, loaded machines)
#include <omp.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <complex>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "qaa/backend.hpp"

#ifdef QAA_HAVE_CBLAS
#include <cblas.h>
#endif

using namespace qaa;

namespace {

bool g_cpu_time = false;  // --cpu-time: process CPU seconds divided by threads (robust to a loaded machine)

double now() {
  if (g_cpu_time) {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (ts.tv_sec + 1e-9 * ts.tv_nsec) / get_cpu_threads();
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

/// Median of `reps` timings of f() (after one warm-up), in seconds.
template <typename F>
double time_it(F&& f, int reps) {
  f();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const double t0 = now();
    f();
    t.push_back(now() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

/// Floating-point operations per state of the fused path for an RY/CNOT circuit of R rotations:
/// forward 6 flops per amplitude pair per rotation; VJP = forward recompute + 16 flops per pair per rotation
/// (derivative term 4, inverse rotation of phi and lambda 12). Permutations, embedding and readout are O(N)
/// memory work and are not counted.
double flops_forward(int n, int rotations) { return 6.0 * rotations * std::ldexp(1.0, n - 1); }
double flops_vjp(int n, int rotations) { return flops_forward(n, rotations) + 16.0 * rotations * std::ldexp(1.0, n - 1); }

bool g_ok = true;
void check(bool cond, const std::string& what) {
  if (!cond) {
    std::printf("CHECK FAILED: %s\n", what.c_str());
    g_ok = false;
  }
}

template <typename T>
struct Case {
  int n, L;
  int64_t B;
};

template <typename T>
void run_case(Backend<T>& be, const std::string& ansatz, int n, int L, int64_t B, int reps) {
  const Circuit c = build_ansatz(ansatz, n, L);
  const int64_t N = c.dim();
  const int64_t d = N - N / 4;  // a width needing all n qubits (e.g. 768 for n = 10)
  std::mt19937_64 rng(n * 1000 + L * 10 + B);
  std::normal_distribution<double> nd;
  std::vector<T> theta(c.n_params()), x(B * d), g(B * n), feats(B * n), norms(B), gt(c.n_params()), gx(B * d);
  for (auto& v : theta) v = static_cast<T>(nd(rng));
  for (auto& v : x) v = static_cast<T>(nd(rng));
  for (auto& v : g) v = static_cast<T>(nd(rng));
  const ExecContext ctx;

  const double t_fwd = time_it([&] { be.forward(c, theta.data(), x.data(), B, d, Readout::kZ, feats.data(), norms.data(), ctx); }, reps);
  const double t_bwd = time_it([&] {
    be.backward(c, theta.data(), x.data(), B, d, Readout::kZ, g.data(), nullptr, gt.data(), gx.data(), ctx);
  }, reps);

  // self-check 1: fused forward == state-level pipeline on the first rows
  const int64_t Bc = std::min<int64_t>(B, 16);
  std::vector<std::complex<T>> psi(Bc * N);
  std::vector<T> nrm(Bc), f2(Bc * n);
  be.embed(n, x.data(), Bc, d, psi.data(), nrm.data(), ctx);
  be.apply(c, theta.data(), psi.data(), Bc, false, ctx);
  be.readout(n, psi.data(), Bc, Readout::kZ, f2.data(), ctx);
  double err = 0;
  for (int64_t i = 0; i < Bc * n; ++i) err = std::max(err, std::fabs(double(f2[i]) - double(feats[i])));
  const double tol = std::is_same_v<T, float> ? 1e-4 : 1e-11;
  check(err < tol, ansatz + " fused forward vs state-level, n=" + std::to_string(n) + " err=" + std::to_string(err));

  // dense path: U once, psi = psi0 U^T as one GEMM (forward only: the evaluation path)
  double t_dense = -1;
#ifdef QAA_HAVE_CBLAS
  if (c.is_real() && n <= 12) {
    std::vector<std::complex<T>> u(N * N);
    std::vector<T> ur(N * N), p0(B * N), ps(B * N), fz(B * n), nr(B);
    std::vector<std::complex<T>> p0c(B * N);
    t_dense = time_it([&] {
      be.circuit_matrix(c, theta.data(), u.data(), ctx);
      for (int64_t i = 0; i < N * N; ++i) ur[i] = u[i].real();
      be.embed(n, x.data(), B, d, p0c.data(), nr.data(), ctx);
      for (int64_t i = 0; i < B * N; ++i) p0[i] = p0c[i].real();
      if constexpr (std::is_same_v<T, float>) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, N, N, 1.f, p0.data(), N, ur.data(), N, 0.f, ps.data(), N);
      } else {
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, N, N, 1.0, p0.data(), N, ur.data(), N, 0.0, ps.data(), N);
      }
      // the engine's readout of the GEMM's states, as qaa.engine's dense path does
      for (int64_t i = 0; i < B * N; ++i) p0c[i] = std::complex<T>(ps[i], T(0));
      be.readout(n, p0c.data(), B, Readout::kZ, fz.data(), ctx);
    }, std::max(1, reps / 2));
    double e2 = 0;
    for (int64_t i = 0; i < B * n; ++i) e2 = std::max(e2, std::fabs(double(fz[i]) - double(feats[i])));
    check(e2 < 10 * tol, "dense path vs fused, n=" + std::to_string(n) + " err=" + std::to_string(e2));
  }
#endif
  int rotations = 0;
  for (const auto& gte : c.gates()) rotations += is_rotation(gte.kind) ? 1 : 0;
  const double us_f = t_fwd / B * 1e6, us_b = t_bwd / B * 1e6;
  std::printf("%-14s %-7s n=%2d L=%d B=%6ld | fwd %8.2f us/state %7.1f GFLOP/s | fwd+vjp %8.2f us/state %7.1f GFLOP/s",
              ansatz.c_str(), std::is_same_v<T, float> ? "float32" : "float64", n, L, static_cast<long>(B), us_f,
              flops_forward(n, rotations) / (us_f * 1e3), us_f + us_b,
              (flops_forward(n, rotations) + flops_vjp(n, rotations)) / ((us_f + us_b) * 1e3));
  if (t_dense >= 0) std::printf(" | dense fwd %8.2f us/state (%.2fx fused)", t_dense / B * 1e6, t_dense / t_fwd);
  std::printf("\n");
}

void gradient_check() {
  auto be = make_cpu_backend<double>();
  const Circuit c = build_ansatz("ry_cnot_ring", 6, 3);
  const int64_t B = 20, d = 50;
  std::mt19937_64 rng(7);
  std::normal_distribution<double> nd;
  std::vector<double> theta(c.n_params()), x(B * d), g(B * 6), f(B * 6), nr(B), gt(c.n_params()), gx(B * d);
  for (auto& v : theta) v = nd(rng);
  for (auto& v : x) v = nd(rng);
  for (auto& v : g) v = nd(rng);
  be->backward(c, theta.data(), x.data(), B, d, Readout::kZ, g.data(), nullptr, gt.data(), gx.data(), {});
  double worst = 0;
  for (int p = 0; p < c.n_params(); ++p) {
    auto loss = [&](double delta) {
      auto th = theta;
      th[p] += delta;
      be->forward(c, th.data(), x.data(), B, d, Readout::kZ, f.data(), nr.data(), {});
      double s = 0;
      for (int64_t i = 0; i < B * 6; ++i) s += f[i] * g[i];
      return s;
    };
    const double fd = (loss(1e-6) - loss(-1e-6)) / 2e-6;
    worst = std::max(worst, std::fabs(fd - gt[p]) / std::max(1.0, std::fabs(fd)));
  }
  check(worst < 1e-7, "VJP vs finite differences rel err " + std::to_string(worst));
  std::printf("gradient check: adjoint VJP vs central differences, worst rel err %.2e\n", worst);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) quick = true;
    else if (!std::strcmp(argv[i], "--cpu-time")) g_cpu_time = true;
    else if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) set_cpu_threads(std::atoi(argv[++i]));
  }
  std::printf("qaa CPU engine benchmark: %d OpenMP threads%s\n", get_cpu_threads(),
#ifdef QAA_HAVE_CBLAS
              ", dense path via CBLAS"
#else
              ", no CBLAS (dense path skipped)"
#endif
  );
  gradient_check();
  const int reps = quick ? 3 : 7;
  auto f32 = make_cpu_backend<float>();
  auto f64 = make_cpu_backend<double>();
  const std::vector<int> ns = quick ? std::vector<int>{8, 10} : std::vector<int>{8, 9, 10, 11, 12};
  for (int n : ns) run_case<float>(*f32, "ry_cnot_ring", n, 4, 1024, reps);
  for (int n : ns) run_case<double>(*f64, "ry_cnot_ring", n, 4, 1024, reps);
  for (int L : {1, 2, 8}) run_case<float>(*f32, "ry_cnot_ring", 10, L, 1024, reps);
  for (int64_t B : quick ? std::vector<int64_t>{256, 4096} : std::vector<int64_t>{64, 256, 4096, 16384})
    run_case<float>(*f32, "ry_cnot_ring", 10, 4, B, reps);
  run_case<float>(*f32, "ry_rz_ring_ry", 10, 4, 1024, reps);
  run_case<double>(*f64, "ry_rz_ring_ry", 10, 4, 1024, reps);
  std::printf("%s\n", g_ok ? "PASSED" : "FAILED");
  return g_ok ? 0 : 1;
}
