// AVX-512 float32 elementwise dropout: the mask hash of dropout.h on 16 positions
// at once, the keep test straight into a mask register, one multiply by {0, scale}.
// Same hash and threshold as the scalar path, so the masks are bit-identical.
#include <immintrin.h>

#include "cpu/dropout.h"
#include "cpu/simd_math_avx512.h"

namespace cnnfast::cpu::avx512_impl {
namespace {

inline __m512i hash16(__m512i x) {
  x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
  x = _mm512_mullo_epi32(x, _mm512_set1_epi32(0x7feb352d));
  x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
  x = _mm512_mullo_epi32(x, _mm512_set1_epi32(static_cast<int>(0x846ca68bu)));
  x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
  return x;
}

// Which of positions lo .. lo+15 (sharing the high word hi) are kept.
inline __mmask16 keep16(__m512i lo, uint32_t hi, const DropoutKey& k) {
  const __m512i h1 = hash16(_mm512_xor_si512(lo, _mm512_set1_epi32(static_cast<int>(k.k0))));
  const __m512i h = hash16(_mm512_xor_si512(h1, _mm512_set1_epi32(static_cast<int>(hi + k.k1))));
  return _mm512_cmpge_epu32_mask(h, _mm512_set1_epi32(static_cast<int>(k.threshold)));
}

}  // namespace

void dropout_apply(const float* x, float* y, int64_t n, uint64_t first, const DropoutKey& key, float scale) {
  const __m512 vs = _mm512_set1_ps(scale);
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  int64_t i = 0;
  while (i < n) {
    const uint64_t pos = first + static_cast<uint64_t>(i);
    const uint32_t lo = static_cast<uint32_t>(pos), hi = static_cast<uint32_t>(pos >> 32);
    // A block whose low words would wrap past 2^32 is done one element at a time.
    if (lo > 0xFFFFFFF0u) {
      y[i] = x[i] * (dropout_keep(key, pos) ? scale : 0.0f);
      ++i;
      continue;
    }
    const __mmask16 m = avx512::tail_mask16(n - i);
    const __mmask16 keep = keep16(_mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(lo)), lane), hi, key);
    // A multiply by 0 rather than a zeroing mask: NaN * 0 stays NaN, as in the scalar path and torch.
    avx512::store_lanes(y + i, m, _mm512_mul_ps(avx512::load_lanes(m, x + i), _mm512_maskz_mov_ps(keep, vs)));
    i += 16;
  }
}

}  // namespace cnnfast::cpu::avx512_impl
