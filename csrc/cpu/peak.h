// The machine's float32 FMA peak, measured with our own loops at each SIMD level:
// the benchmarks report GFLOP/s as a fraction of it. Each level's loop lives in its
// ISA file (peak_avx2.cpp, peak_avx512.cpp); timing and threads live in peak.cpp.
#pragma once
#include <cstdint>

#include "core/cpu_features.h"

namespace cnnfast::cpu {

// Best-of-15 GFLOP/s of `threads` threads each running only independent FMAs at
// `level` (AVX2 or AVX512; ValueError for scalar or a level the CPU lacks).
double fma_peak_gflops(int threads, SimdLevel level);

// Whether a 512-bit FMA retires at the rate of a 256-bit one, so that AVX-512 doubles
// the FMA peak (Intel server cores with two 512-bit FMA units, AMD Zen 5). Zen 4 and
// Intel client cores split a 512-bit FMA into two halves: there the width saves
// instructions but not time, and kernels bound by something other than FMAs (the
// direct convolution's unaligned input loads) keep up with the GEMM; where the rate
// doubles they fall behind it, so the algorithm choice asks this. Measured once, on
// first use, by timing both FMA loops for about a millisecond (best of five each);
// CNNFAST_AVX512_FULL_RATE=0|1 overrides it. False when the CPU has no AVX-512.
bool avx512_full_rate();

namespace avx2_impl {
// 12 independent ymm FMA chains for `iters` rounds; returns a value so the loop is kept.
float fma_loop(int64_t iters);
constexpr int64_t kFmaFlopsPerIter = 12 * 8 * 2;
}  // namespace avx2_impl

namespace avx512_impl {
float fma_loop(int64_t iters);
constexpr int64_t kFmaFlopsPerIter = 12 * 16 * 2;
}  // namespace avx512_impl

}  // namespace cnnfast::cpu
