// The AVX-512 row tiles of conv_kvec_rows.cpp (see there for why): per (channel, live
// tap), four loads of packed weights and one broadcast per position feed 4 x np FMAs
// into 28 or fewer accumulators.
#include <immintrin.h>

#include <algorithm>

#include "cpu/conv_kvec_rows.h"
#include "cpu/conv_kvec_rows_tile.h"
#include "cpu/epilogue_vec.h"
#include "cpu/simd_math_avx512.h"
#include "cpu/simd_transpose_x86.h"

namespace cnnfast::cpu::avx512_impl {
namespace {

using namespace cnnfast::avx512;
using CNNFAST_ISA_NS::transpose16;
namespace rt = CNNFAST_ISA_NS::row_tiles;

// One tap over nc channels: four weight loads and a broadcast per position feed 4 x np FMAs.
struct F32Ops {
  using E = float;
  template <int NP, int S, int JL, int JR>
  static void taps(__m512 (&acc)[NP][4], const float* x, int64_t plane, const float* w, int64_t w_step, int64_t nc) {
    for (int64_t c = 0; c < nc; ++c) {
      const float* wc = w + c * w_step;
      const __m512 w0 = _mm512_loadu_ps(wc), w1 = _mm512_loadu_ps(wc + 16), w2 = _mm512_loadu_ps(wc + 32),
                   w3 = _mm512_loadu_ps(wc + 48);
      const float* xc = x + c * plane;
#pragma GCC unroll 8
      for (int j = JL; j < NP - JR; ++j) {
        const __m512 b = _mm512_set1_ps(xc[j * S]);
        acc[j][0] = _mm512_fmadd_ps(w0, b, acc[j][0]);
        acc[j][1] = _mm512_fmadd_ps(w1, b, acc[j][1]);
        acc[j][2] = _mm512_fmadd_ps(w2, b, acc[j][2]);
        acc[j][3] = _mm512_fmadd_ps(w3, b, acc[j][3]);
      }
    }
  }
};

}  // namespace

void row_tiles_pack(const float* w, int64_t K, int64_t CK, int64_t k0, int64_t j0, int64_t nj, float* dst) {
  for (int64_t jc = 0; jc < nj; jc += 16)
    rt::transpose_lanes(w + j0 + jc, CK, k0, K, std::min<int64_t>(16, nj - jc), dst + jc * 64,
                        [](int64_t j) { return j; });
}

void row_tiles_pack_rotated(const float* w, int64_t lanes, int64_t kk, int64_t k0, int64_t c0, int64_t nc, float* dst) {
  for (int64_t c = c0; c < c0 + nc; ++c)
    for (int64_t t0 = 0; t0 < kk; t0 += 16)
      rt::transpose_lanes(w + c * lanes * kk + t0, kk, k0, lanes, std::min<int64_t>(16, kk - t0),
                          dst + (c - c0) * kk * 64, [&](int64_t j) { return kk - 1 - t0 - j; });
}

void row_tile(int64_t np, int64_t stride, const float* x, int64_t plane, const RowTileTap* taps, int64_t ntaps,
              const float* w, int64_t kk, int64_t nc, float* acc, bool first) {
  rt::run<F32Ops>(np, stride, x, plane, taps, ntaps, w, kk, nc, acc, first);
}

void row_tile_store(const float* acc, int64_t np, int64_t rows, const float* bias, float* y, const float* res,
                    int64_t ldy, const Epilogue& e) {
  const __mmask16 m = tail_mask16(np);
  const __m512 alpha = _mm512_set1_ps(float(e.alpha)), beta = _mm512_set1_ps(float(e.beta));
  for (int64_t q = 0; q < 4 && 16 * q < rows; ++q) {
    __m512 r[16];
#pragma GCC unroll 16
    for (int j = 0; j < 16; ++j) r[j] = j < np ? _mm512_loadu_ps(acc + j * 64 + 16 * q) : _mm512_setzero_ps();
    transpose16(r);
    const int64_t n = std::min<int64_t>(16, rows - 16 * q);
    for (int64_t l = 0; l < n; ++l) {
      const int64_t k = 16 * q + l;
      __m512 v = r[l];
      if (bias) v = _mm512_add_ps(v, _mm512_set1_ps(bias[k]));
      CNNFAST_ISA_NS::epilogue_store<EpilogueOps>(v, y + k * ldy, res ? res + k * ldy : nullptr, m, e.act, alpha,
                                                  beta);
    }
  }
}

}  // namespace cnnfast::cpu::avx512_impl
