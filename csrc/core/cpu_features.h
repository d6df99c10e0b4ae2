// The SIMD dispatch layer: which instruction-set level the CPU kernels take.
//
// Levels are ordered: scalar < avx2 (AVX2+FMA) < avx512 (F+BW+DQ+VL). The level is
// read once from cpuid + xgetbv (the OS must save the wider registers), can be
// lowered with the environment variable CNNFAST_SIMD=scalar|avx2|avx512 at import
// or set_simd_level() later, and can never be raised past what the CPU offers: a
// refused level is an error, not an illegal instruction.
//
// Each level's code lives in its own translation unit (<family>_avx2.cpp,
// <family>_avx512.cpp, ...) compiled with that level's flags and inside a namespace
// of its own (avx2_impl, avx512_impl, or the CNNFAST_ISA_NS of core/simd.h for
// sources shared between levels), so no function is ever emitted twice under one
// mangled name; cmake/check_isa_symbols.py enforces that at build time. A family
// picks its code with `if (use_avx512()) ... else if (use_avx2()) ...`, so a family
// with no AVX-512 kernel yet keeps running its AVX2 one at the avx512 level.
//
// CNNFAST_CPU_CAP=scalar|avx2 hides the wider features from the whole process, as if
// the CPU were older (for tests and for users chasing a CPU-specific difference).
//
// Features beyond the levels (AVX512-BF16, AMX) are reported by cpu_feature_flags()
// and used by the kernels that have a path for them.
#pragma once
#include <string>
#include <vector>

namespace cnnfast {

enum class SimdLevel { Scalar = 0, AVX2 = 1, AVX512 = 2 };
constexpr int kSimdLevelCount = 3;

bool cpu_supports_avx2_fma();       // hardware, OS and this build allow AVX2+FMA
bool cpu_supports_avx512();         // hardware, OS and this build allow AVX-512 F+BW+DQ+VL
bool cpu_supports_avx512_bf16();    // VDPBF16PS and friends (needs the avx512 level too)
bool cpu_supports_amx_bf16();       // AMX tiles with BF16 in hardware (the OS must still grant them)
SimdLevel best_simd_level();        // the widest level this CPU and build offer
SimdLevel simd_level();             // what kernels use now
void set_simd_level(SimdLevel lvl); // throws ValueError if the CPU lacks it
std::string simd_level_name(SimdLevel lvl);
SimdLevel parse_simd_level(const std::string& name);  // throws ValueError on an unknown name
std::vector<std::string> cpu_feature_flags();         // what the CPU offers, e.g. {"avx2", "avx512", ...}
std::string cpu_model_name();                          // cpuid brand string

inline bool use_avx2() { return simd_level() >= SimdLevel::AVX2; }
inline bool use_avx512() { return simd_level() >= SimdLevel::AVX512; }

}  // namespace cnnfast
