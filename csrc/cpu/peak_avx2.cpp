// Measures this machine's float32 FMA peak with our own AVX2 loop: each thread
// keeps 12 independent ymm accumulators (enough to cover FMA latency x ports on
// current x86 cores) and issues only FMAs. The GEMM/conv benchmarks report
// their GFLOP/s as a fraction of this number.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <thread>
#include <vector>

#include "cpu/gemm.h"

namespace cnnfast::cpu::avx2_impl {
namespace {

float fma_loop(int64_t iters) {
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(0.001f * i);
  const __m256 a = _mm256_set1_ps(0.9999f), b = _mm256_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; ++it) {
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
    // Keeps the compiler from collapsing the loop.
    __asm__ volatile("" : "+x"(acc[0]), "+x"(acc[1]), "+x"(acc[2]), "+x"(acc[3]), "+x"(acc[4]), "+x"(acc[5]));
  }
  __m256 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, acc[i]);
  alignas(32) float out[8];
  _mm256_store_ps(out, s);
  return out[0];
}

}  // namespace

double fma_peak_gflops(int threads) {
  threads = std::max(1, threads);
  const int64_t iters = 20'000'000;  // 3.84 GFLOP per thread: ~0.1 s at typical clocks
  double best = 0.0;
  for (int rep = 0; rep < 3; ++rep) {
    std::vector<float> sink(threads);
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) pool.emplace_back([&, t] { sink[t] = fma_loop(iters); });
    for (auto& th : pool) th.join();
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, double(threads) * iters * 12 * 16 / sec * 1e-9);
  }
  return best;
}

}  // namespace cnnfast::cpu::avx2_impl
