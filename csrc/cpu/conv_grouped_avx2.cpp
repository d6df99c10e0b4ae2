// The grouped-convolution kernels (conv_grouped_kernels.h) for AVX2+FMA: 8 lanes,
// blocks of 4 output channels x 2 column vectors, so accumulators, input vectors and
// the broadcast fit the 16 ymm registers. vmaskmovps takes the lane masks: masked-off
// lanes neither fault nor read.
#include <immintrin.h>

#include <cstdint>

#include "cpu/conv_grouped_kernels.h"
#include "cpu/simd_math_avx2.h"

namespace cnnfast::cpu::avx2_impl {
namespace {

struct Vec256 {
  using V = __m256;
  // The lane mask as memory (a vector type as a template argument would lose its
  // alignment attribute in the mask tables): -1 in the lanes that are on.
  struct M {
    alignas(32) int32_t on[8];
  };
  static constexpr int64_t L = 8;
  static constexpr int KB = 4;
  static M lanes(int64_t lo, int64_t hi) {
    M m;
    for (int i = 0; i < 8; ++i) m.on[i] = i >= lo && i < hi ? -1 : 0;
    return m;
  }
  static __m256i bits(const M& m) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(m.on)); }
  static V load(const M& m, const float* p) { return _mm256_maskload_ps(p, bits(m)); }
  static void store(const M& m, float* p, V v) { _mm256_maskstore_ps(p, bits(m), v); }
  static V set1(float f) { return _mm256_set1_ps(f); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static float sum(V v) { return avx2::hsum8(v); }
};

}  // namespace

CNNFAST_GROUPED_ENTRY_POINTS(avx2_isa, Vec256)

}  // namespace cnnfast::cpu::avx2_impl
