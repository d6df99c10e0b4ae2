// Prints this machine's float32 FMA peak (GFLOP/s) for 1..N threads at every SIMD
// level the CPU offers, measured with the library's own loops (csrc/cpu/peak*.cpp).
//   ./peak_flops [max_threads]
#include <cstdio>
#include <cstdlib>

#include "core/cpu_features.h"
#include "cpu/peak.h"

int main(int argc, char** argv) {
  using cnnfast::SimdLevel;
  if (!cnnfast::cpu_supports_avx2_fma()) {
    std::printf("this CPU has no AVX2+FMA\n");
    return 1;
  }
  const int max_threads = argc > 1 ? std::atoi(argv[1]) : 2;
  std::printf("%s\n", cnnfast::cpu_model_name().c_str());
  for (SimdLevel level : {SimdLevel::AVX2, SimdLevel::AVX512}) {
    if (level > cnnfast::best_simd_level()) continue;
    for (int t = 1; t <= max_threads; ++t)
      std::printf("%-6s %d thread(s): %.1f GFLOP/s\n", cnnfast::simd_level_name(level).c_str(), t,
                  cnnfast::cpu::fma_peak_gflops(t, level));
  }
  return 0;
}
