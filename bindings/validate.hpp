// Argument checking for the engine bindings: strict array arguments, no aliasing between outputs and other
// arguments, and a catch-all overload that explains why a call matched no signature.
//
// nanobind converts a non-matching array argument implicitly (a copy of another dtype, contiguity or device)
// unless told not to. For an input that silently changes the precision; for an output it is worse: the engine
// writes into the temporary copy and the caller's array is never updated. `Strict<...>` is an nb::ndarray
// whose caster never converts, so every array must already be C-contiguous, of the exact dtype, on the
// module's device, writable when it is an output, and not a torch conjugate or negative view. A call that
// fails those rules reaches the overload registered by `register_fallbacks`, which raises TypeError naming
// each offending argument.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "signatures.hpp"

namespace qaa::bindings {

namespace nb = nanobind;

/// An nb::ndarray argument that is never implicitly converted (see the file comment).
template <typename... Args>
struct Strict : nb::ndarray<Args...> {
  using Base = nb::ndarray<Args...>;
  Strict() = default;
  explicit Strict(Base&& b) : Base(std::move(b)) {}
};

/// Byte range [lo, hi) an array argument occupies (empty for an empty array).
struct Span {
  const char* name;
  std::uintptr_t lo = 0, hi = 0;
};

template <typename Arr>
inline Span span(const Arr& a, const char* name) {
  Span s{name};
  if (a.size() == 0) return s;
  s.lo = reinterpret_cast<std::uintptr_t>(a.data());
  s.hi = s.lo + a.nbytes();  // arrays are C-contiguous (Strict<..., c_contig>)
  return s;
}

inline bool overlaps(const Span& a, const Span& b) { return a.lo < a.hi && b.lo < b.hi && a.lo < b.hi && b.lo < a.hi; }

/// Throws std::invalid_argument (ValueError) when an output shares memory with another output or an input.
inline void check_disjoint(std::initializer_list<Span> outputs, std::initializer_list<Span> inputs) {
  std::vector<Span> outs(outputs);
  for (size_t i = 0; i < outs.size(); ++i) {
    for (size_t j = i + 1; j < outs.size(); ++j) {
      if (overlaps(outs[i], outs[j])) {
        throw std::invalid_argument(std::string("outputs '") + outs[i].name + "' and '" + outs[j].name +
                                    "' share memory; pass separate arrays");
      }
    }
    for (const Span& in : inputs) {
      if (overlaps(outs[i], in)) {
        throw std::invalid_argument(std::string("output '") + outs[i].name + "' shares memory with input '" +
                                    in.name + "'; pass a separate output array");
      }
    }
  }
}

/// True for a torch conjugate or negative view (is_conj() / is_neg()): DLPack exports its raw memory, which
/// does not hold its values, so such an array is refused (pass .resolve_conj() / .resolve_neg()).
inline bool lazy_view(nb::handle src) noexcept {
  PyObject* o = src.ptr();
  for (const char* method : {"is_conj", "is_neg"}) {
    PyObject* fn = PyObject_GetAttrString(o, method);
    if (!fn) {
      PyErr_Clear();
      return false;  // not a torch tensor
    }
    PyObject* r = PyObject_CallNoArgs(fn);
    Py_DECREF(fn);
    if (!r) {
      PyErr_Clear();
      return true;
    }
    const bool set = r == Py_True;
    Py_DECREF(r);
    if (set) return true;
  }
  return false;
}

// ---------------------------------------------------------------- diagnosis of calls that match no overload

namespace diag {

inline std::string py_str(nb::handle h) {
  try {
    return nb::cast<std::string>(nb::str(h));
  } catch (...) {
    return "?";
  }
}

inline std::string pytype_name(nb::handle h) {
  nb::handle tp = h.type();
  std::string mod, name;
  try {
    name = nb::cast<std::string>(tp.attr("__name__"));
    mod = nb::cast<std::string>(tp.attr("__module__"));
  } catch (...) {
    return "object";
  }
  return (mod.empty() || mod == "builtins") ? name : mod + "." + name;
}

inline std::string dtype_name(nb::dlpack::dtype t) {
  using nb::dlpack::dtype_code;
  const char* base = "?";
  switch (static_cast<dtype_code>(t.code)) {
    case dtype_code::Int: base = "int"; break;
    case dtype_code::UInt: base = "uint"; break;
    case dtype_code::Float: base = "float"; break;
    case dtype_code::Bfloat: base = "bfloat"; break;
    case dtype_code::Complex: base = "complex"; break;
    case dtype_code::Bool: return "bool";
    default: return "dtype(code=" + std::to_string(t.code) + ")";
  }
  return base + std::to_string(t.bits) + (t.lanes != 1 ? "x" + std::to_string(t.lanes) : "");
}

inline const char* device_name(int dev) {
  switch (dev) {
    case nb::device::cpu::value: return "cpu";
    case nb::device::cuda::value: return "cuda";
    case nb::device::cuda_host::value: return "cuda_host";
    case nb::device::cuda_managed::value: return "cuda_managed";
    default: return "another device";
  }
}

inline bool c_contiguous(const nb::ndarray<nb::ro>& a) {
  int64_t expect = 1;
  for (size_t k = a.ndim(); k-- > 0;) {
    if (a.shape(k) != 1 && a.stride(k) != expect) return false;
    expect *= static_cast<int64_t>(a.shape(k));
  }
  return true;
}

/// Checks one argument against its role; appends problems. `bits` is the call's precision (32/64, 0 unset).
inline void check_arg(nb::handle h, const Param& p, int device, int& bits, std::vector<std::string>& problems) {
  const std::string nm = p.name;
  if (h.is_none()) {
    if (!p.accepts_none()) problems.push_back(nm + " is None");
    return;
  }
  switch (p.role) {
    case Role::kInt:
      if (!PyLong_Check(h.ptr()) || PyBool_Check(h.ptr()))
        problems.push_back(nm + " must be an int, got " + pytype_name(h));
      return;
    case Role::kBool:
      if (!PyBool_Check(h.ptr())) problems.push_back(nm + " must be a bool, got " + pytype_name(h));
      return;
    case Role::kStr:
      if (!PyUnicode_Check(h.ptr())) problems.push_back(nm + " must be a str, got " + pytype_name(h));
      return;
    case Role::kCircuit:
      if (pytype_name(h).find("Circuit") == std::string::npos)
        problems.push_back(nm + " must be a qaa Circuit, got " + pytype_name(h));
      return;
    default:
      break;
  }
  nb::ndarray<nb::ro> a;
  if (!nb::try_cast(h, a, false) || !a.is_valid()) {
    std::string why = nm + " (" + pytype_name(h) + ") is not an array the engine can read";
    if (nb::hasattr(h, "requires_grad") && nb::hasattr(h, "detach")) {
      try {
        if (nb::cast<bool>(h.attr("requires_grad"))) why += " (it requires grad: pass .detach())";
        else if (nb::hasattr(h, "device")) why += " (device " + py_str(h.attr("device")) + ")";
      } catch (...) {
      }
    }
    problems.push_back(why);
    return;
  }
  if (lazy_view(h)) {
    problems.push_back(nm + " is a torch conjugate or negative view (its memory does not hold its values): pass "
                       ".resolve_conj().resolve_neg()");
  }
  const nb::dlpack::dtype t = a.dtype();
  const auto code = static_cast<nb::dlpack::dtype_code>(t.code);
  const std::string got = dtype_name(t);
  if (p.role == Role::kWorkspace) {
    if (!(code == nb::dlpack::dtype_code::UInt && t.bits == 8)) problems.push_back(nm + " must be uint8, got " + got);
  } else {
    const bool cplx = p.role == Role::kCplxIn || p.role == Role::kCplxOut;
    const auto want = cplx ? nb::dlpack::dtype_code::Complex : nb::dlpack::dtype_code::Float;
    const int scale = cplx ? 2 : 1;
    const bool ok_kind = code == want && t.lanes == 1 && (t.bits == 32 * scale || t.bits == 64 * scale);
    if (!ok_kind) {
      problems.push_back(nm + " must be " + (cplx ? "complex64 or complex128" : "float32 or float64") + ", got " +
                         got);
    } else {
      const int b = t.bits / scale;
      if (bits == 0) {
        bits = b;
      } else if (bits != b) {
        problems.push_back(nm + " is " + got + " but an earlier array is " + (bits == 32 ? "float32/complex64" :
                           "float64/complex128") + ": one call uses one precision");
      }
    }
  }
  if (a.device_type() != device) {
    problems.push_back(nm + " is on " + device_name(a.device_type()) + ", this module needs " +
                       device_name(device));
  }
  if (p.role != Role::kWorkspace && !c_contiguous(a)) problems.push_back(nm + " is not C-contiguous");
  if (p.role == Role::kWorkspace && a.ndim() != 1) problems.push_back(nm + " must be 1-D");
  if (p.role == Role::kRealOut || p.role == Role::kCplxOut || p.role == Role::kWorkspace) {
    nb::ndarray<> w;
    if (!nb::try_cast(h, w, false) || !w.is_valid()) problems.push_back(nm + " is an output but read-only");
  }
}

}  // namespace diag

/// Register for function Sig (signatures.hpp) a last overload taking any arguments that raises TypeError
/// listing what is wrong with them (called only when no typed overload accepted the arguments).
template <typename Sig>
void register_fallback(nb::module_& m, int device) {
  {
    const std::string fname = Sig::name;
    const std::string module = nb::cast<std::string>(m.attr("__name__"));
    const std::vector<Param> params = params_of<Sig>();
    m.def(Sig::name, [fname, module, params, device](nb::args args, nb::kwargs kwargs) {
      std::vector<std::string> problems;
      std::vector<nb::handle> given(params.size());
      std::vector<bool> seen(params.size(), false);
      const size_t n_pos = nb::len(args);
      if (n_pos > params.size()) problems.push_back("too many positional arguments");
      for (size_t i = 0; i < n_pos && i < params.size(); ++i) {
        given[i] = args[i];
        seen[i] = true;
      }
      for (auto [k, v] : kwargs) {
        const std::string key = nb::cast<std::string>(k);
        size_t i = 0;
        while (i < params.size() && key != params[i].name) ++i;
        if (i == params.size()) {
          problems.push_back("unexpected keyword argument '" + key + "'");
        } else if (seen[i]) {
          problems.push_back("argument '" + key + "' given twice");
        } else {
          given[i] = v;
          seen[i] = true;
        }
      }
      int bits = 0;
      for (size_t i = 0; i < params.size(); ++i) {
        if (!seen[i]) {
          if (!params[i].has_default()) problems.push_back(std::string("missing argument '") + params[i].name + "'");
          continue;
        }
        diag::check_arg(given[i], params[i], device, bits, problems);
      }
      std::string msg = module + "." + fname + "(): ";  // strings only, no iostreams (see check_shape)
      if (problems.empty()) {
        msg += "the arguments match no signature";
      } else {
        for (size_t i = 0; i < problems.size(); ++i) msg += (i ? "; " : "") + problems[i];
      }
      msg += std::string(". Arrays must be C-contiguous, on ") + diag::device_name(device) +
             ", writable when written, and all of one precision (float32 with complex64 states, or float64 with "
             "complex128); nothing is converted implicitly.";
      throw nb::type_error(msg.c_str());
    });
  }
}

/// register_fallback for every function of a tuple of signatures (e.g. sig::EngineFunctions).
template <typename... Sigs>
void register_fallbacks(nb::module_& m, int device, std::tuple<Sigs...>*) {
  (register_fallback<Sigs>(m, device), ...);
}

}  // namespace qaa::bindings

namespace nanobind::detail {

/// Caster of qaa::bindings::Strict: the nb::ndarray caster with implicit conversion switched off.
template <typename... Args>
struct type_caster<qaa::bindings::Strict<Args...>> {
  using Inner = make_caster<ndarray<Args...>>;
  NB_TYPE_CASTER(qaa::bindings::Strict<Args...>, Inner::Name)

  bool from_python(handle src, uint32_t flags, cleanup_list* cleanup) noexcept {
    Inner inner;
    if (!inner.from_python(src, flags & ~static_cast<uint32_t>(cast_flags::convert), cleanup)) return false;
    if (qaa::bindings::lazy_view(src)) return false;
    value = qaa::bindings::Strict<Args...>(std::move(inner.value));
    return true;
  }
};

}  // namespace nanobind::detail
