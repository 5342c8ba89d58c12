// Shared nanobind registration for the qaa engine modules (_engine_cpu, _engine_cuda): the engine functions
// of signatures.hpp, defined once for every backend and dtype.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>
#include <nanobind/stl/optional.h>

#include <optional>

#include <complex>
#include <cstdint>
#include <memory>
#include <string>

#include "qaa/backend.hpp"
#include "signatures.hpp"
#include "validate.hpp"

namespace nb = nanobind;

namespace qaa::bindings {

template <typename T>
struct TypeTag { using type = T; };

/// Import qaa._circuit (the module that owns the Circuit type, circuit_module.cpp) and re-export its Circuit,
/// ansatz_names and qubits_for_dim from module m, so each backend module offers them without depending on
/// another backend module.
inline void import_circuit(nb::module_& m) {
  nb::module_ circuit = nb::module_::import_("qaa._circuit");
  for (const char* name : {"Circuit", "ansatz_names", "qubits_for_dim"}) m.attr(name) = circuit.attr(name);
}

// Array arguments are never implicitly converted (validate.hpp): a converted output would be a temporary copy.
template <typename T, typename Dev>
using In = Strict<const T, nb::c_contig, Dev>;
template <typename T, typename Dev>
using Out = Strict<T, nb::c_contig, Dev>;

template <typename A>
inline void require(bool ok, const A& msg) {
  if (!ok) throw std::invalid_argument(msg);
}

template <typename Arr>
inline void check_shape(const Arr& a, std::initializer_list<int64_t> shape, const char* name) {
  bool ok = a.ndim() == shape.size();
  size_t i = 0;
  for (int64_t s : shape) {
    if (!ok) break;
    ok = static_cast<int64_t>(a.shape(i++)) == s;
  }
  if (!ok) {
    // std::to_string, not std::ostringstream: formatting numbers through a stream segfaulted in an environment
    // whose process-wide locale did not match the extension's (torch 2.11 / Python 3.12 on the GPU machine).
    std::string msg = std::string(name) + " must have shape (";
    i = 0;
    for (int64_t s : shape) msg += (i++ ? ", " : "") + std::to_string(s);
    msg += "), got (";
    for (size_t k = 0; k < a.ndim(); ++k) msg += (k ? ", " : "") + std::to_string(a.shape(k));
    msg += ")";
    throw std::invalid_argument(msg);
  }
}

inline ExecContext context(std::uintptr_t stream) {
  ExecContext ctx;
  ctx.stream = reinterpret_cast<void*>(stream);
  return ctx;
}

/// Optional caller-allocated scratch: a 1-D uint8 array on the backend's device of at least
/// workspace_size(op, circuit, batch, dtype) bytes (the CUDA backend allocates its own when it is None).
template <typename Dev>
using Workspace = std::optional<nb::ndarray<uint8_t, nb::ndim<1>, nb::c_contig, Dev>>;

template <typename Dev>
inline ExecContext context(std::uintptr_t stream, const Workspace<Dev>& ws) {
  ExecContext ctx = context(stream);
  if (ws) {
    ctx.workspace = ws->data();
    ctx.workspace_bytes = ws->size();
  }
  return ctx;
}

inline Op parse_op(const std::string& s) {
  if (s == "embed") return Op::kEmbed;
  if (s == "apply") return Op::kApply;
  if (s == "readout") return Op::kReadout;
  if (s == "vjp") return Op::kVjp;
  if (s == "forward") return Op::kForward;
  if (s == "backward") return Op::kBackward;
  if (s == "matrix" || s == "circuit_matrix") return Op::kMatrix;
  throw std::invalid_argument("unknown op '" + s +
                              "' (known: embed, apply, readout, vjp, forward, backward, circuit_matrix)");
}

template <typename T, typename Dev, typename Factory>
std::shared_ptr<Backend<T>> register_dtype(nb::module_& m, Factory factory) {
  using C = std::complex<T>;
  // One backend object per dtype, shared by every call (backends are stateless or internally locked).
  std::shared_ptr<Backend<T>> be(factory(TypeTag<T>{}).release());

  def<sig::Embed>(m,
        [be](int n, In<T, Dev> x, Out<C, Dev> psi0, Out<T, Dev> norms, std::uintptr_t stream,
            Workspace<Dev> workspace) {
          require(n >= 1 && n <= kMaxQubits, "n_qubits out of range");
          require(x.ndim() == 2, "x must be 2-D (batch, d)");
          const int64_t B = x.shape(0), d = x.shape(1), N = int64_t{1} << n;
          require(d <= N, "input width exceeds 2^n_qubits");
          check_shape(psi0, {B, N}, "psi0");
          check_shape(norms, {B}, "norms");
          check_disjoint({span(psi0, "psi0"), span(norms, "norms")}, {span(x, "x")});
          nb::gil_scoped_release r;
          be->embed(n, x.data(), B, d, psi0.data(), norms.data(), context(stream, workspace));
        });

  def<sig::Apply>(m,
        [be](const Circuit& c, In<T, Dev> theta, Out<C, Dev> psi, bool adjoint, std::uintptr_t stream,
             Workspace<Dev> workspace) {
          check_shape(theta, {c.n_params()}, "theta");
          require(psi.ndim() == 2, "psi must be 2-D (batch, 2^n)");
          check_shape(psi, {static_cast<int64_t>(psi.shape(0)), c.dim()}, "psi");
          check_disjoint({span(psi, "psi")}, {span(theta, "theta")});
          nb::gil_scoped_release r;
          be->apply(c, theta.data(), psi.data(), psi.shape(0), adjoint, context(stream, workspace));
        });

  def<sig::ReadoutFn>(m,
        [be](int n, In<C, Dev> psi, const std::string& readout, Out<T, Dev> features, std::uintptr_t stream,
             Workspace<Dev> workspace) {
          require(n >= 1 && n <= kMaxQubits, "n_qubits out of range");
          const Readout r = parse_readout(readout);
          require(psi.ndim() == 2, "psi must be 2-D (batch, 2^n)");
          const int64_t B = psi.shape(0);
          check_shape(psi, {B, int64_t{1} << n}, "psi");
          check_shape(features, {B, readout_features(r, n)}, "features");
          check_disjoint({span(features, "features")}, {span(psi, "psi")});
          nb::gil_scoped_release rel;
          be->readout(n, psi.data(), B, r, features.data(), context(stream, workspace));
        });

  def<sig::Vjp>(m,
        [be](const Circuit& c, In<T, Dev> theta, In<C, Dev> psi, In<T, Dev> grad_features, const std::string& readout,
             Out<T, Dev> grad_theta, Out<T, Dev> grad_psi0, std::uintptr_t stream, Workspace<Dev> workspace) {
          const Readout r = parse_readout(readout);
          check_shape(theta, {c.n_params()}, "theta");
          require(psi.ndim() == 2, "psi must be 2-D (batch, 2^n)");
          const int64_t B = psi.shape(0);
          check_shape(psi, {B, c.dim()}, "psi");
          check_shape(grad_features, {B, readout_features(r, c.n_qubits())}, "grad_features");
          check_shape(grad_theta, {c.n_params()}, "grad_theta");
          check_shape(grad_psi0, {B, c.dim()}, "grad_psi0");
          check_disjoint({span(grad_theta, "grad_theta"), span(grad_psi0, "grad_psi0")},
                         {span(theta, "theta"), span(psi, "psi"), span(grad_features, "grad_features")});
          nb::gil_scoped_release rel;
          be->vjp(c, theta.data(), psi.data(), grad_features.data(), r, B, grad_theta.data(), grad_psi0.data(),
                  context(stream, workspace));
        });

  def<sig::CircuitMatrix>(m,
        [be](const Circuit& c, In<T, Dev> theta, Out<C, Dev> u, std::uintptr_t stream, Workspace<Dev> workspace) {
          check_shape(theta, {c.n_params()}, "theta");
          check_shape(u, {c.dim(), c.dim()}, "u");
          check_disjoint({span(u, "u")}, {span(theta, "theta")});
          nb::gil_scoped_release rel;
          be->circuit_matrix(c, theta.data(), u.data(), context(stream, workspace));
        });

  def<sig::Forward>(m,
        [be](const Circuit& c, In<T, Dev> theta, In<T, Dev> x, const std::string& readout, Out<T, Dev> features,
             Out<T, Dev> norms, std::uintptr_t stream, Workspace<Dev> workspace) {
          const Readout r = parse_readout(readout);
          check_shape(theta, {c.n_params()}, "theta");
          require(x.ndim() == 2, "x must be 2-D (batch, d)");
          const int64_t B = x.shape(0), d = x.shape(1);
          require(d >= 1 && d <= c.dim(), "input width must be in [1, 2^n_qubits]");
          check_shape(features, {B, readout_features(r, c.n_qubits())}, "features");
          check_shape(norms, {B}, "norms");
          check_disjoint({span(features, "features"), span(norms, "norms")}, {span(theta, "theta"), span(x, "x")});
          nb::gil_scoped_release rel;
          be->forward(c, theta.data(), x.data(), B, d, r, features.data(), norms.data(),
                      context(stream, workspace));
        });

  def<sig::Backward>(m,
        [be](const Circuit& c, In<T, Dev> theta, In<T, Dev> x, const std::string& readout, In<T, Dev> grad_features,
             std::optional<In<T, Dev>> grad_norms, Out<T, Dev> grad_theta, Out<T, Dev> grad_x, std::uintptr_t stream,
             Workspace<Dev> workspace) {
          const Readout r = parse_readout(readout);
          check_shape(theta, {c.n_params()}, "theta");
          require(x.ndim() == 2, "x must be 2-D (batch, d)");
          const int64_t B = x.shape(0), d = x.shape(1);
          require(d >= 1 && d <= c.dim(), "input width must be in [1, 2^n_qubits]");
          check_shape(grad_features, {B, readout_features(r, c.n_qubits())}, "grad_features");
          const T* gn = nullptr;
          if (grad_norms) {
            check_shape(*grad_norms, {B}, "grad_norms");
            gn = grad_norms->data();
          }
          check_shape(grad_theta, {c.n_params()}, "grad_theta");
          check_shape(grad_x, {B, d}, "grad_x");
          check_disjoint({span(grad_theta, "grad_theta"), span(grad_x, "grad_x")},
                         {span(theta, "theta"), span(x, "x"), span(grad_features, "grad_features"),
                          grad_norms ? span(*grad_norms, "grad_norms") : Span{"grad_norms"}});
          nb::gil_scoped_release rel;
          be->backward(c, theta.data(), x.data(), B, d, r, grad_features.data(), gn, grad_theta.data(),
                       grad_x.data(), context(stream, workspace));
        });
  return be;
}

template <typename Dev, typename Factory>
void register_backend(nb::module_& m, Factory factory) {
  auto be32 = register_dtype<float, Dev>(m, factory);
  auto be64 = register_dtype<double, Dev>(m, factory);
  // Last overloads: explain calls no typed overload accepted (wrong dtype, layout, device, ...).
  register_fallbacks(m, Dev::value, static_cast<sig::EngineFunctions*>(nullptr));
  m.def("workspace_size",
        [be32, be64](const std::string& op, const Circuit& c, int64_t batch, const std::string& dtype) {
          require(batch >= 0, "batch must be >= 0");
          const Op o = parse_op(op);
          if (dtype == "float32") return be32->workspace_size(o, c, batch);
          if (dtype == "float64") return be64->workspace_size(o, c, batch);
          throw std::invalid_argument("dtype must be 'float32' or 'float64', got '" + dtype + "'");
        },
        nb::arg("op"), nb::arg("circuit"), nb::arg("batch"), nb::arg("dtype") = "float32",
        "Bytes of scratch one call needs (0 on the CPU). Pass a uint8 array of at least this size as the\n"
        "`workspace` argument of that call, or None to let the backend allocate it.");
}

}  // namespace qaa::bindings
