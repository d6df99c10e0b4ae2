#include "cpu/peak.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"

namespace cnnfast::cpu {

double fma_peak_gflops(int threads, SimdLevel level) {
  CNNFAST_CHECK(level != SimdLevel::Scalar, ValueError, "level: the FMA peak is measured at 'avx2' or 'avx512'");
  CNNFAST_CHECK(level <= best_simd_level(), ValueError, "level: this CPU (or build) cannot run '",
                simd_level_name(level), "'");
  threads = std::max(1, threads);
  const bool wide = level == SimdLevel::AVX512;
  const int64_t flops_per_iter = wide ? avx512_impl::kFmaFlopsPerIter : avx2_impl::kFmaFlopsPerIter;
  // A few ms per repeat; the best of many short runs finds a quiet moment on a shared machine.
  const int64_t iters = 2'000'000;
  double best = 0.0;
  for (int rep = 0; rep < 15; ++rep) {
    std::vector<float> sink(threads);
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] { sink[t] = wide ? avx512_impl::fma_loop(iters) : avx2_impl::fma_loop(iters); });
    for (auto& th : pool) th.join();
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, double(threads) * double(iters) * double(flops_per_iter) / sec * 1e-9);
  }
  return best;
}

bool avx512_full_rate() {
  static const bool full = [] {
    if (const char* env = std::getenv("CNNFAST_AVX512_FULL_RATE")) {
      const std::string v(env);
      CNNFAST_CHECK(v == "0" || v == "1", ValueError, "CNNFAST_AVX512_FULL_RATE: expected 0 or 1, got '", v, "'");
      return v == "1" && best_simd_level() >= SimdLevel::AVX512;
    }
    if (best_simd_level() < SimdLevel::AVX512) return false;
    // Short loops, best of five, alternating: a core that is shared or still ramping
    // its clock slows both alike. The first pair warms the 512-bit unit up (Intel
    // runs wide instructions slowly for the first microseconds).
    const int64_t iters = 20'000;
    double best256 = 0.0, best512 = 0.0;
    float sink = 0.f;
    for (int rep = 0; rep < 6; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      sink += avx2_impl::fma_loop(iters);
      const auto t1 = std::chrono::steady_clock::now();
      sink += avx512_impl::fma_loop(iters);
      const auto t2 = std::chrono::steady_clock::now();
      if (rep == 0) continue;
      best256 = std::max(best256, double(avx2_impl::kFmaFlopsPerIter) / std::chrono::duration<double>(t1 - t0).count());
      best512 = std::max(best512, double(avx512_impl::kFmaFlopsPerIter) / std::chrono::duration<double>(t2 - t1).count());
    }
    volatile float keep = sink;
    (void)keep;
    return best512 > 1.5 * best256;
  }();
  return full;
}

#if !CNNFAST_HAVE_AVX2_BUILD
// Non-x86 builds have no ISA files; best_simd_level() is scalar there, so these never run.
namespace avx2_impl {
float fma_loop(int64_t) { return 0.0f; }
}  // namespace avx2_impl
namespace avx512_impl {
float fma_loop(int64_t) { return 0.0f; }
}  // namespace avx512_impl
#endif

}  // namespace cnnfast::cpu
