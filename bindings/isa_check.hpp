// Refuse to load the CPU engine on a CPU without the instruction set it was compiled for.
//
// A portable build (QAA_NATIVE=OFF, the default) compiles the engine for the x86-64-v3 level (AVX2, FMA,
// BMI1/2, F16C, LZCNT, MOVBE) and defines QAA_REQUIRE_X86_64_V3. Without this check an older CPU would die
// with SIGILL at the first engine call; with it, importing the module raises ImportError naming the missing
// features. This header is compiled into the binding code, which is built for the baseline instruction set,
// so the check itself runs on any x86-64 CPU. A -march=native build (QAA_NATIVE=ON) is meant for the
// machine that built it and is not checked.
#pragma once

#include <nanobind/nanobind.h>

#include <string>

namespace qaa::bindings {

inline void require_cpu_isa() {
#if defined(QAA_REQUIRE_X86_64_V3) && defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  std::string missing;
  auto need = [&missing](bool ok, const char* name) {
    if (!ok) missing += (missing.empty() ? "" : ", ") + std::string(name);
  };
  need(__builtin_cpu_supports("avx"), "AVX");
  need(__builtin_cpu_supports("avx2"), "AVX2");
  need(__builtin_cpu_supports("fma"), "FMA");
  need(__builtin_cpu_supports("bmi"), "BMI1");
  need(__builtin_cpu_supports("bmi2"), "BMI2");
  need(__builtin_cpu_supports("f16c"), "F16C");
  need(__builtin_cpu_supports("movbe"), "MOVBE");
  if (!missing.empty()) {
    const std::string msg = "qaa's CPU engine was built for x86-64-v3 (Haswell / Zen 1 or newer) but this CPU lacks " +
                            missing + ". Build qaa from source on this machine with -C cmake.define.QAA_NATIVE=ON (as " +
                            "scripts/setup.sh does).";
    throw nanobind::import_error(msg.c_str());
  }
#endif
}

}  // namespace qaa::bindings
