// The signature table of the engine functions every backend module defines (embed, apply, readout, vjp,
// circuit_matrix, forward, backward): one entry per function with its parameters' names, roles and defaults.
// The same entry drives the function's definition (`def<Sig>`: its nb::arg annotations) and the diagnosis of
// calls that match no overload (`register_fallbacks` in validate.hpp), so the two cannot drift apart.
#pragma once

#include <nanobind/nanobind.h>

#include <array>
#include <cstddef>
#include <tuple>
#include <utility>
#include <vector>

namespace qaa::bindings {

namespace nb = nanobind;

/// Role of one parameter in a binding's signature.
enum class Role : char {
  kInt,        // Python int
  kBool,       // Python bool
  kStr,        // str
  kCircuit,    // qaa Circuit
  kRealIn,     // float32/float64 array, read
  kRealOut,    // float32/float64 array, written
  kRealOptIn,  // float32/float64 array or None
  kCplxIn,     // complex64/complex128 array, read
  kCplxOut,    // complex64/complex128 array, written (or updated in place)
  kWorkspace,  // uint8 array or None
};

/// Default value of a parameter.
enum class Default : char { kRequired, kZero, kFalse, kNone };

struct Param {
  const char* name;
  Role role;
  Default def = Default::kRequired;
  constexpr bool has_default() const { return def != Default::kRequired; }
  /// Whether None is accepted.
  constexpr bool accepts_none() const { return role == Role::kRealOptIn || role == Role::kWorkspace; }
};

namespace sig {

using R = Role;
inline constexpr Param kStream{"stream", R::kInt, Default::kZero};
inline constexpr Param kWorkspaceArg{"workspace", R::kWorkspace, Default::kNone};

// Each entry: `name`, `params` (in call order). The C++ lambda defined for it takes them in the same order.
struct Embed {
  static constexpr const char* name = "embed";
  static constexpr std::array<Param, 6> params{
      {{"n_qubits", R::kInt}, {"x", R::kRealIn}, {"psi0", R::kCplxOut}, {"norms", R::kRealOut}, kStream, kWorkspaceArg}};
};
struct Apply {
  static constexpr const char* name = "apply";
  static constexpr std::array<Param, 6> params{{{"circuit", R::kCircuit}, {"theta", R::kRealIn},
                                                {"psi", R::kCplxOut}, {"adjoint", R::kBool, Default::kFalse},
                                                kStream, kWorkspaceArg}};
};
struct ReadoutFn {
  static constexpr const char* name = "readout";
  static constexpr std::array<Param, 6> params{{{"n_qubits", R::kInt}, {"psi", R::kCplxIn}, {"readout", R::kStr},
                                                {"features", R::kRealOut}, kStream, kWorkspaceArg}};
};
struct Vjp {
  static constexpr const char* name = "vjp";
  static constexpr std::array<Param, 9> params{
      {{"circuit", R::kCircuit}, {"theta", R::kRealIn}, {"psi", R::kCplxIn}, {"grad_features", R::kRealIn},
       {"readout", R::kStr}, {"grad_theta", R::kRealOut}, {"grad_psi0", R::kRealOut}, kStream, kWorkspaceArg}};
};
struct CircuitMatrix {
  static constexpr const char* name = "circuit_matrix";
  static constexpr std::array<Param, 5> params{
      {{"circuit", R::kCircuit}, {"theta", R::kRealIn}, {"u", R::kCplxOut}, kStream, kWorkspaceArg}};
};
struct Forward {
  static constexpr const char* name = "forward";
  static constexpr std::array<Param, 8> params{
      {{"circuit", R::kCircuit}, {"theta", R::kRealIn}, {"x", R::kRealIn}, {"readout", R::kStr},
       {"features", R::kRealOut}, {"norms", R::kRealOut}, kStream, kWorkspaceArg}};
};
struct Backward {
  static constexpr const char* name = "backward";
  static constexpr std::array<Param, 10> params{
      {{"circuit", R::kCircuit}, {"theta", R::kRealIn}, {"x", R::kRealIn}, {"readout", R::kStr},
       {"grad_features", R::kRealIn}, {"grad_norms", R::kRealOptIn}, {"grad_theta", R::kRealOut},
       {"grad_x", R::kRealOut}, kStream, kWorkspaceArg}};
};

/// Every engine function of a backend module.
using EngineFunctions = std::tuple<Embed, Apply, ReadoutFn, Vjp, CircuitMatrix, Forward, Backward>;

}  // namespace sig

namespace detail {

/// The nb::arg annotation of parameter I of Sig (with its default and whether it accepts None).
template <typename Sig, size_t I>
auto annotation() {
  constexpr Param p = Sig::params[I];
  nb::arg a(p.name);
  if constexpr (p.accepts_none()) a.none();
  if constexpr (p.def == Default::kZero) {
    return a = 0;
  } else if constexpr (p.def == Default::kFalse) {
    return a = false;
  } else if constexpr (p.def == Default::kNone) {
    return a = nb::none();
  } else {
    return a;
  }
}

template <typename Sig, typename F, size_t... I>
void def_impl(nb::module_& m, F&& f, const char* doc, std::index_sequence<I...>) {
  m.def(Sig::name, std::forward<F>(f), annotation<Sig, I>()..., doc);
}

}  // namespace detail

/// Define Sig's function on module m as `f`, which takes Sig::params in order (nanobind checks at compile time
/// that the annotations and f's arity agree).
template <typename Sig, typename F>
void def(nb::module_& m, F&& f, const char* doc = "") {
  detail::def_impl<Sig>(m, std::forward<F>(f), doc, std::make_index_sequence<Sig::params.size()>{});
}

/// Sig's parameters as a vector (for the diagnostics).
template <typename Sig>
std::vector<Param> params_of() {
  return std::vector<Param>(Sig::params.begin(), Sig::params.end());
}

}  // namespace qaa::bindings
