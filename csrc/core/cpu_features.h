// Which SIMD path the CPU kernels take. Detection reads cpuid + xgetbv once; the
// level can be lowered (never raised past what the CPU has) with set_simd_level()
// or the environment variable CNNFAST_SIMD=scalar|avx2, so tests can run the
// scalar reference and the AVX2 kernels on the same inputs.
#pragma once
#include <string>

namespace cnnfast {

enum class SimdLevel { Scalar = 0, AVX2 = 1 };

bool cpu_supports_avx2_fma();       // what the hardware and OS allow
SimdLevel simd_level();             // what kernels use now
void set_simd_level(SimdLevel lvl); // throws ValueError if the CPU lacks it
std::string simd_level_name(SimdLevel lvl);
SimdLevel parse_simd_level(const std::string& name);

inline bool use_avx2() { return simd_level() == SimdLevel::AVX2; }

}  // namespace cnnfast
