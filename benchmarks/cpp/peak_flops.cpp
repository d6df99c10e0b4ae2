// Prints this machine's float32 FMA peak (GFLOP/s) for 1..N threads, measured
// with the library's AVX2 FMA loop (csrc/cpu/peak_avx2.cpp).
//   ./peak_flops [max_threads]
#include <cstdio>
#include <cstdlib>

#include "core/cpu_features.h"
#include "cpu/gemm.h"

int main(int argc, char** argv) {
  if (!cnnfast::cpu_supports_avx2_fma()) {
    std::printf("this CPU has no AVX2+FMA\n");
    return 1;
  }
  const int max_threads = argc > 1 ? std::atoi(argv[1]) : 2;
  for (int t = 1; t <= max_threads; ++t)
    std::printf("%d thread(s): %.1f GFLOP/s\n", t, cnnfast::cpu::avx2_impl::fma_peak_gflops(t));
  return 0;
}
