// The grouped-convolution kernels (conv_grouped_kernels.h) for AVX-512: 16 lanes,
// blocks of 8 output channels x 2 column vectors (16 of the 32 zmm accumulate).
#include <immintrin.h>

#include "cpu/conv_grouped_kernels.h"
#include "cpu/simd_math_avx512.h"

// GCC 12's _mm512_reduce_add_ps starts from _mm512_undefined_ps(), which
// -Wmaybe-uninitialized reports inside the system header: a false alarm.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace cnnfast::cpu::avx512_impl {
namespace {

struct Vec512 {
  using V = __m512;
  using M = __mmask16;
  static constexpr int64_t L = 16;
  static constexpr int KB = 8;
  static M lanes(int64_t lo, int64_t hi) {
    lo = lo < 0 ? 0 : lo;
    hi = hi > L ? L : hi;
    if (hi <= lo) return 0;
    return M(((1u << hi) - 1u) & ~((1u << lo) - 1u));
  }
  static V load(M m, const float* p) { return avx512::load_lanes(m, p); }
  static void store(M m, float* p, V v) { avx512::store_lanes(p, m, v); }
  static V set1(float f) { return _mm512_set1_ps(f); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static float sum(V v) { return _mm512_reduce_add_ps(v); }
};

}  // namespace

CNNFAST_GROUPED_ENTRY_POINTS(avx512_isa, Vec512)

}  // namespace cnnfast::cpu::avx512_impl
