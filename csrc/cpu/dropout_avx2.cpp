// AVX2 float32 elementwise dropout: the mask hash of dropout.h on 8 positions
// at once (32-bit multiplies only), then one multiply by {0, scale}.
#include <immintrin.h>

#include "cpu/dropout.h"
#include "cpu/simd_math_avx2.h"

namespace cnnfast::cpu::avx2_impl {
namespace {

inline __m256i hash8(__m256i x) {
  x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
  x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x7feb352d));
  x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 15));
  x = _mm256_mullo_epi32(x, _mm256_set1_epi32(static_cast<int>(0x846ca68bu)));
  x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
  return x;
}

// {scale or 0} for positions lo .. lo+7 sharing the high word hi.
inline __m256 factors(__m256i lo, uint32_t hi, const DropoutKey& k, __m256 scale) {
  const __m256i h1 = hash8(_mm256_xor_si256(lo, _mm256_set1_epi32(static_cast<int>(k.k0))));
  const __m256i h = hash8(_mm256_xor_si256(h1, _mm256_set1_epi32(static_cast<int>(hi + k.k1))));
  // Unsigned h >= threshold, as max_u32(h, t) == h.
  const __m256i keep = _mm256_cmpeq_epi32(_mm256_max_epu32(h, _mm256_set1_epi32(static_cast<int>(k.threshold))), h);
  return _mm256_and_ps(scale, _mm256_castsi256_ps(keep));
}

}  // namespace

void dropout_apply(const float* x, float* y, int64_t n, uint64_t first, const DropoutKey& key, float scale) {
  const __m256 vs = _mm256_set1_ps(scale);
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  int64_t i = 0;
  while (i < n) {
    const uint64_t pos = first + static_cast<uint64_t>(i);
    const uint32_t lo = static_cast<uint32_t>(pos), hi = static_cast<uint32_t>(pos >> 32);
    const int64_t left = n - i;
    // A block whose low words would wrap past 2^32 is done one element at a time.
    if (lo > 0xFFFFFFF8u) {
      y[i] = x[i] * (dropout_keep(key, pos) ? scale : 0.0f);
      ++i;
      continue;
    }
    const __m256 f = factors(_mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(lo)), lane), hi, key, vs);
    if (left >= 8) {
      _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), f));
      i += 8;
    } else {
      const __m256i m = avx2::tail_mask(static_cast<int>(left));
      _mm256_maskstore_ps(y + i, m, _mm256_mul_ps(_mm256_maskload_ps(x + i, m), f));
      i = n;
    }
  }
}

}  // namespace cnnfast::cpu::avx2_impl
