#include "core/cpu_features.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "core/error.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#define CNNFAST_X86 1
#else
#define CNNFAST_X86 0
#endif

#ifndef CNNFAST_HAVE_AVX512_BUILD
#define CNNFAST_HAVE_AVX512_BUILD 0
#endif

namespace cnnfast {
namespace {

struct Cpuid {
  bool avx2_fma = false, avx512 = false, avx512_bf16 = false, amx_bf16 = false;
};

#if CNNFAST_X86
unsigned long long xcr0() {
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<unsigned long long>(hi) << 32) | lo;
}
#endif

const Cpuid& cpuid() {
  static const Cpuid c = [] {
    Cpuid r;
#if CNNFAST_X86
    unsigned a, b, cx, d;
    if (!__get_cpuid(1, &a, &b, &cx, &d)) return r;
    const bool fma = cx & (1u << 12), osxsave = cx & (1u << 27), avx = cx & (1u << 28);
    if (!(fma && osxsave && avx) || __get_cpuid_max(0, nullptr) < 7) return r;
    const unsigned long long xcr = xcr0();
    // The OS must save the YMM state (XCR0 bits 1-2), and for AVX-512 also the
    // opmask and both ZMM halves (bits 5-7), or the registers are lost on a switch.
    const bool os_ymm = (xcr & 0x6u) == 0x6u, os_zmm = (xcr & 0xE6u) == 0xE6u;
    __cpuid_count(7, 0, a, b, cx, d);
    const bool avx2 = b & (1u << 5);
    const bool f = b & (1u << 16), dq = b & (1u << 17), bw = b & (1u << 30), vl = b & (1u << 31);
    const bool amx_bf16 = d & (1u << 22), amx_tile = d & (1u << 24);
    unsigned a1 = 0, b1, c1, d1;
    __cpuid_count(7, 1, a1, b1, c1, d1);
    const bool avx512_bf16 = a1 & (1u << 5);
    r.avx2_fma = CNNFAST_HAVE_AVX2_BUILD && os_ymm && avx2;
    r.avx512 = CNNFAST_HAVE_AVX512_BUILD && r.avx2_fma && os_zmm && f && dq && bw && vl;
    r.avx512_bf16 = r.avx512 && avx512_bf16;
    r.amx_bf16 = r.avx512 && amx_tile && amx_bf16;
#endif
    // CNNFAST_CPU_CAP=scalar|avx2 makes the process see an older CPU: what an
    // AVX2-only laptop gets from the same wheel, testable on a wider machine.
    if (const char* cap = std::getenv("CNNFAST_CPU_CAP")) {
      const std::string c(cap);
      if (c == "scalar" || c == "avx2") r.avx512 = r.avx512_bf16 = r.amx_bf16 = false;
      if (c == "scalar") r.avx2_fma = false;
    }
    return r;
  }();
  return c;
}

bool level_supported(SimdLevel lvl) {
  switch (lvl) {
    case SimdLevel::Scalar: return true;
    case SimdLevel::AVX2: return cpuid().avx2_fma;
    case SimdLevel::AVX512: return cpuid().avx512;
  }
  return false;
}

SimdLevel initial_level() {
  SimdLevel level = best_simd_level();
  if (const char* env = std::getenv("CNNFAST_SIMD")) {
    try {
      const SimdLevel asked = parse_simd_level(env);
      // Lower only: asking for more than the CPU has must not select an
      // instruction set it cannot run (Python warns about it at import).
      if (asked < level) level = asked;
    } catch (const ValueError&) {
      // An unknown value must not make import fail; Python warns and the best level stays.
    }
  }
  return level;
}

std::atomic<int>& level_storage() {
  static std::atomic<int> level{static_cast<int>(initial_level())};
  return level;
}

const char* const kNames[kSimdLevelCount] = {"scalar", "avx2", "avx512"};

}  // namespace

bool cpu_supports_avx2_fma() { return cpuid().avx2_fma; }
bool cpu_supports_avx512() { return cpuid().avx512; }
bool cpu_supports_avx512_bf16() { return cpuid().avx512_bf16; }
bool cpu_supports_amx_bf16() { return cpuid().amx_bf16; }

SimdLevel best_simd_level() {
  if (cpuid().avx512) return SimdLevel::AVX512;
  if (cpuid().avx2_fma) return SimdLevel::AVX2;
  return SimdLevel::Scalar;
}

SimdLevel simd_level() { return static_cast<SimdLevel>(level_storage().load(std::memory_order_relaxed)); }

void set_simd_level(SimdLevel lvl) {
  CNNFAST_CHECK(level_supported(lvl), ValueError, "level: this CPU (or this build) cannot run '",
                simd_level_name(lvl), "'; available: up to '", simd_level_name(best_simd_level()), "'");
  level_storage().store(static_cast<int>(lvl));
}

std::string simd_level_name(SimdLevel lvl) { return kNames[static_cast<int>(lvl)]; }

SimdLevel parse_simd_level(const std::string& name) {
  for (int i = 0; i < kSimdLevelCount; ++i)
    if (name == kNames[i]) return static_cast<SimdLevel>(i);
  throw ValueError(cat("level: expected 'scalar', 'avx2' or 'avx512', got '", name, "'"));
}

std::vector<std::string> cpu_feature_flags() {
  std::vector<std::string> flags;
  if (cpuid().avx2_fma) flags.push_back("avx2");
  if (cpuid().avx512) flags.push_back("avx512");
  if (cpuid().avx512_bf16) flags.push_back("avx512_bf16");
  if (cpuid().amx_bf16) flags.push_back("amx_bf16");
  return flags;
}

std::string cpu_model_name() {
#if CNNFAST_X86
  unsigned regs[12] = {};
  if (__get_cpuid_max(0x80000000u, nullptr) < 0x80000004u) return "unknown x86-64";
  for (unsigned i = 0; i < 3; ++i) __get_cpuid(0x80000002u + i, &regs[4 * i], &regs[4 * i + 1], &regs[4 * i + 2], &regs[4 * i + 3]);
  char brand[49] = {};
  std::memcpy(brand, regs, 48);
  std::string s(brand);
  const auto first = s.find_first_not_of(' ');
  return first == std::string::npos ? "unknown x86-64" : s.substr(first);
#else
  return "non-x86";
#endif
}

}  // namespace cnnfast
