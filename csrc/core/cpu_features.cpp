#include "core/cpu_features.h"

#include <atomic>
#include <cstdlib>

#include "core/error.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif

namespace cnnfast {

bool cpu_supports_avx2_fma() {
#if (defined(__x86_64__) || defined(_M_X64)) && CNNFAST_HAVE_AVX2_BUILD
  static const bool supported = [] {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
    const bool fma = c & (1u << 12), osxsave = c & (1u << 27), avx = c & (1u << 28);
    if (!(fma && osxsave && avx)) return false;
    // The OS must save the YMM registers on context switch (XCR0 bits 1 and 2).
    unsigned xlo, xhi;
    __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    if ((xlo & 6u) != 6u) return false;
    if (__get_cpuid_max(0, nullptr) < 7) return false;
    __cpuid_count(7, 0, a, b, c, d);
    return (b & (1u << 5)) != 0;  // AVX2
  }();
  return supported;
#else
  return false;
#endif
}

static SimdLevel initial_level() {
  SimdLevel best = cpu_supports_avx2_fma() ? SimdLevel::AVX2 : SimdLevel::Scalar;
  if (const char* env = std::getenv("CNNFAST_SIMD")) {
    try {
      SimdLevel asked = parse_simd_level(env);
      if (static_cast<int>(asked) < static_cast<int>(best)) best = asked;
    } catch (const ValueError&) {
      // An unknown value must not make import fail; the best level stays.
    }
  }
  return best;
}

static std::atomic<int>& level_storage() {
  static std::atomic<int> level{static_cast<int>(initial_level())};
  return level;
}

SimdLevel simd_level() { return static_cast<SimdLevel>(level_storage().load(std::memory_order_relaxed)); }

void set_simd_level(SimdLevel lvl) {
  CNNFAST_CHECK(lvl == SimdLevel::Scalar || cpu_supports_avx2_fma(), ValueError,
                "level: this CPU (or this build) has no AVX2+FMA; only 'scalar' is available");
  level_storage().store(static_cast<int>(lvl));
}

std::string simd_level_name(SimdLevel lvl) { return lvl == SimdLevel::AVX2 ? "avx2" : "scalar"; }

SimdLevel parse_simd_level(const std::string& name) {
  if (name == "scalar") return SimdLevel::Scalar;
  if (name == "avx2") return SimdLevel::AVX2;
  throw ValueError(cat("level: expected 'scalar' or 'avx2', got '", name, "'"));
}

}  // namespace cnnfast
