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
