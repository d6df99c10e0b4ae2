// AVX-512 pieces shared by the bf16 kernels of the AMX build (gemm_bf16_amx.cpp,
// conv_bf16_direct_amx.cpp): rounding rows into VNNI pairs, a 16 x 16 transpose of 32-bit
// words, and the AMX tile configuration. Only files compiled with -mavx512bf16
// -mamx-tile include it; everything sits in that build's CNNFAST_ISA_NS.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace cnnfast::cpu::CNNFAST_ISA_NS {

// 16 floats of r0 and of r1, rounded to bf16, as 16 (r0[i], r1[i]) word pairs.
inline __m512i bf16_pairs_of(const float* r0, const float* r1) {
  const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21,
                                       5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  const __m512i v = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(r1), _mm512_loadu_ps(r0));
  return _mm512_permutexvar_epi16(idx, v);
}
// The same for 16 bf16 words of each row.
inline __m512i bf16_pairs_of(const uint16_t* r0, const uint16_t* r1) {
  const __m512i lo = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r0)));
  const __m512i hi = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r1)));
  return _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
}

// d row c (32 words) = 32-bit element c of r[0..15]: unpacks within 128-bit lanes give
// 4-element column pieces, two rounds of lane shuffles put the pieces in order.
inline void transpose16x16_words(const __m512i* r, uint16_t* d) {
  __m512i t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  // u[4i + q], lane L = rows 4i..4i+3 of column 4L + q.
  for (int q = 0; q < 4; ++q) {
    const __m512i a_lo = _mm512_shuffle_i32x4(u[q], u[4 + q], 0x44), a_hi = _mm512_shuffle_i32x4(u[q], u[4 + q], 0xEE);
    const __m512i b_lo = _mm512_shuffle_i32x4(u[8 + q], u[12 + q], 0x44);
    const __m512i b_hi = _mm512_shuffle_i32x4(u[8 + q], u[12 + q], 0xEE);
    _mm512_storeu_si512(d + (0 + q) * 32, _mm512_shuffle_i32x4(a_lo, b_lo, 0x88));
    _mm512_storeu_si512(d + (4 + q) * 32, _mm512_shuffle_i32x4(a_lo, b_lo, 0xDD));
    _mm512_storeu_si512(d + (8 + q) * 32, _mm512_shuffle_i32x4(a_hi, b_hi, 0x88));
    _mm512_storeu_si512(d + (12 + q) * 32, _mm512_shuffle_i32x4(a_hi, b_hi, 0xDD));
  }
}

// Palette 1, every tile 16 rows x 64 bytes: C in tmm0-3, A in tmm4-5, B in tmm6-7.
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

inline void configure_tiles() {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = 16;
  }
  _tile_loadconfig(&cfg);
}

}  // namespace cnnfast::cpu::CNNFAST_ISA_NS
