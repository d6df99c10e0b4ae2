// The bfloat16 row tiles of conv_kvec_rows.cpp on VDPBF16PS (AVX512-BF16): 64 output
// channels in four zmm of float32 accumulators by up to 7 positions of one output row;
// per (channel pair, live tap) four loads of packed weight pairs and one broadcast of an
// input pair per position feed 4 x np dot products of two bf16 products each.
//
// Why: the VDPBF16PS GEMM (bf16_impl.h) packs an im2col matrix of bf16 pairs for every
// call, and on 3x3 layers that packing cost as much as its multiplies: 54-58% of the
// VDPBF16PS peak on Zen 4 where oneDNN's direct kernels reach 80-90%. Here x is laid out
// once as zero-bordered planes of channel pairs (one 32-bit pair per position, the
// operand VDPBF16PS broadcasts), the weights as pairs per output-channel lane, and the
// conversions to bf16 happen in those two passes.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <cstdint>

#include "cpu/bf16.h"
#include "cpu/conv_kvec_rows.h"
#include "cpu/conv_kvec_rows_tile.h"
#include "cpu/simd_transpose_x86.h"

// GCC 12 takes the widening and shift intrinsics' own undefined pass-through operand for
// a maybe-uninitialized value once they are inlined below (a false positive, as in
// conv_bf16_direct_amx.cpp).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace cnnfast::cpu::CNNFAST_ISA_NS {
namespace {

// Lane l of the result: bf16(lo[l]) in the low half, bf16(hi[l]) in the high half, the
// pair VDPBF16PS multiplies (rounded to nearest even, as the rest of the bf16 path).
inline __m512i pairs(__m512 lo, __m512 hi) {
  const __m512i l = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(lo));
  const __m512i h = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(hi));
  return _mm512_or_si512(l, _mm512_slli_epi32(h, 16));
}

// One tap over `pairs_n` channel pairs: four weight loads and a broadcast pair per
// position feed 4 x np VDPBF16PS.
struct PairOps {
  using E = uint32_t;
  template <int NP, int S, int JL, int JR>
  static void taps(__m512 (&acc)[NP][4], const uint32_t* x, int64_t plane, const uint32_t* w, int64_t w_step,
                   int64_t pairs_n) {
    for (int64_t c = 0; c < pairs_n; ++c) {
      const uint32_t* wc = w + c * w_step;
      const __m512bh w0 = (__m512bh)_mm512_loadu_si512(wc), w1 = (__m512bh)_mm512_loadu_si512(wc + 16),
                     w2 = (__m512bh)_mm512_loadu_si512(wc + 32), w3 = (__m512bh)_mm512_loadu_si512(wc + 48);
      const uint32_t* xc = x + c * plane;
#pragma GCC unroll 8
      for (int j = JL; j < NP - JR; ++j) {
        const __m512bh b = (__m512bh)_mm512_set1_epi32(int(xc[j * S]));
        acc[j][0] = _mm512_dpbf16_ps(acc[j][0], w0, b);
        acc[j][1] = _mm512_dpbf16_ps(acc[j][1], w1, b);
        acc[j][2] = _mm512_dpbf16_ps(acc[j][2], w2, b);
        acc[j][3] = _mm512_dpbf16_ps(acc[j][3], w3, b);
      }
    }
  }
};

// The weight-gradient tile: 64 output channels (4 zmm) by NC <= 7 (channel, tap) columns.
// Per pair of positions, four loads of grad_y pairs and one broadcast of x's pair at each
// column's tap feed 4 NC VDPBF16PS.
template <int NC>
void weight_tile(const uint32_t* gyp, const int32_t* steps, int64_t nsteps, const uint16_t* const* xcol, float* out) {
  __m512 acc[NC][4];
#pragma GCC unroll 8
  for (int i = 0; i < NC; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) acc[i][v] = _mm512_setzero_ps();
  // One loop over every pair of positions of every image: small maps have rows of 2-4 pairs.
  const uint32_t* g = gyp;
  for (int64_t q = 0; q < nsteps; ++q, g += 64) {
    const int64_t at = steps[q];
    const __m512bh g0 = (__m512bh)_mm512_loadu_si512(g), g1 = (__m512bh)_mm512_loadu_si512(g + 16),
                   g2 = (__m512bh)_mm512_loadu_si512(g + 32), g3 = (__m512bh)_mm512_loadu_si512(g + 48);
#pragma GCC unroll 8
    for (int i = 0; i < NC; ++i) {
      int32_t pair;
      std::memcpy(&pair, xcol[i] + at, 4);
      const __m512bh b = (__m512bh)_mm512_set1_epi32(pair);
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], g0, b);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], g1, b);
      acc[i][2] = _mm512_dpbf16_ps(acc[i][2], g2, b);
      acc[i][3] = _mm512_dpbf16_ps(acc[i][3], g3, b);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < NC; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) _mm512_storeu_ps(out + i * 64 + 16 * v, acc[i][v]);
}

// f(from, to, m) for each run of up to 16 columns (lanes m) of a (H, W) plane's rows,
// element offsets in the plane and in its zero-bordered copy (Hp, Wp), the rows placed
// `top` down and `left` in (either may be negative: what falls outside is dropped).
template <class F>
void bordered_vectors(int64_t H, int64_t W, int64_t top, int64_t left, int64_t Hp, int64_t Wp, F f) {
  const int64_t h0 = std::max<int64_t>(0, -top), h1 = std::min(H, Hp - top);
  const int64_t w0 = std::max<int64_t>(0, -left), w1 = std::min(W, Wp - left);
  for (int64_t h = h0; h < h1; ++h)
    for (int64_t j = w0; j < w1; j += 16) f(h * W + j, (h + top) * Wp + left + j, row_tiles::lanes_mask(w1 - j));
}

template <int... NC>
void dispatch_columns(std::integer_sequence<int, NC...>, int64_t nc, const uint32_t* gyp, const int32_t* steps,
                      int64_t nsteps, const uint16_t* const* xcol, float* out) {
  ((nc == NC + 1 ? (weight_tile<NC + 1>(gyp, steps, nsteps, xcol, out), true) : false) || ...);
}

}  // namespace
}  // namespace cnnfast::cpu::CNNFAST_ISA_NS

namespace cnnfast::cpu::amx_impl {
using namespace cnnfast::cpu::CNNFAST_ISA_NS;

template <class T>
void rows_bf16_border(const T* x, int64_t C, int64_t H, int64_t W, int64_t top, int64_t left, int64_t Hp, int64_t Wp,
                      int64_t pair, uint32_t* dst) {
  const int64_t c0 = 2 * pair;
  const T* lo = x + c0 * H * W;
  const T* hi = c0 + 1 < C ? lo + H * W : nullptr;
  std::fill(dst, dst + Hp * Wp, 0u);
  bordered_vectors(H, W, top, left, Hp, Wp, [&](int64_t from, int64_t to, __mmask16 m) {
    const __m512 a = row_tiles::load16(m, lo + from), b = hi ? row_tiles::load16(m, hi + from) : _mm512_setzero_ps();
    _mm512_mask_storeu_epi32(dst + to, m, pairs(a, b));
  });
}

template <class T>
void rows_bf16_pack(const T* w, int64_t K, int64_t C, int64_t kk, int64_t k0, int64_t pair0, int64_t npairs,
                    bool rotated, float* scratch, uint32_t* dst) {
  // The (channel, tap) columns of the 64 lanes into scratch (column j's lanes at scratch +
  // j 64), then each (pair, tap)'s two columns joined into pairs. rotated: w is (C, K, kk),
  // the layer whose stride-1 grad_x this forward is, read with taps reversed.
  const int64_t c_end = std::min(C, 2 * (pair0 + npairs));
  if (!rotated) {
    const int64_t CK = C * kk, j0 = 2 * pair0 * kk, nj = c_end * kk - j0;
    for (int64_t jc = 0; jc < nj; jc += 16)
      row_tiles::transpose_lanes(w + j0 + jc, CK, k0, K, std::min<int64_t>(16, nj - jc), scratch + jc * 64,
                      [](int64_t j) { return j; });
  } else {
    for (int64_t c = 2 * pair0; c < c_end; ++c)
      for (int64_t t0 = 0; t0 < kk; t0 += 16)
        row_tiles::transpose_lanes(w + c * K * kk + t0, kk, k0, K, std::min<int64_t>(16, kk - t0),
                        scratch + (c - 2 * pair0) * kk * 64, [&](int64_t j) { return kk - 1 - t0 - j; });
  }
  for (int64_t p = 0; p < npairs; ++p) {
    const bool has_hi = 2 * (pair0 + p) + 1 < C;
    for (int64_t t = 0; t < kk; ++t) {
      const float* lo = scratch + (2 * p * kk + t) * 64;
      const float* hi = lo + kk * 64;
      uint32_t* d = dst + (p * kk + t) * 64;
      for (int64_t q = 0; q < 4; ++q)
        _mm512_storeu_si512(d + 16 * q, pairs(_mm512_loadu_ps(lo + 16 * q),
                                              has_hi ? _mm512_loadu_ps(hi + 16 * q) : _mm512_setzero_ps()));
    }
  }
}

template <class T>
void rows_bf16_border16(const T* x, int64_t H, int64_t W, int64_t top, int64_t left, int64_t Hp, int64_t Wp,
                        uint16_t* dst) {
  std::fill(dst, dst + Hp * Wp, uint16_t(0));
  bordered_vectors(H, W, top, left, Hp, Wp, [&](int64_t from, int64_t to, __mmask16 m) {
    _mm256_mask_storeu_epi16(dst + to, m, (__m256i)_mm512_cvtneps_pbh(row_tiles::load16(m, x + from)));
  });
}

template <class T>
void rows_bf16_grad_pairs(const T* gy, int64_t K, int64_t Ho, int64_t Wo, int64_t k0, float* scratch, uint32_t* dst) {
  // Each output row's 64 channels transposed into scratch (position p's lanes at scratch +
  // p 64), then positions joined in pairs (a zero after an odd row's last one).
  const int64_t wpairs = (Wo + 1) / 2, P = Ho * Wo;
  for (int64_t oh = 0; oh < Ho; ++oh) {
    for (int64_t p0 = 0; p0 < Wo; p0 += 16)
      row_tiles::transpose_lanes(gy + oh * Wo + p0, P, k0, K, std::min<int64_t>(16, Wo - p0), scratch + p0 * 64,
                                 [](int64_t j) { return j; });
    uint32_t* d = dst + oh * wpairs * 64;
    for (int64_t j = 0; j < wpairs; ++j)
      for (int64_t q = 0; q < 4; ++q) {
        const __m512 lo = _mm512_loadu_ps(scratch + 2 * j * 64 + 16 * q);
        const __m512 hi = 2 * j + 1 < Wo ? _mm512_loadu_ps(scratch + (2 * j + 1) * 64 + 16 * q) : _mm512_setzero_ps();
        _mm512_storeu_si512(d + j * 64 + 16 * q, pairs(lo, hi));
      }
  }
}

void rows_bf16_weight_tile(int64_t ncols, const uint32_t* gyp, const int32_t* steps, int64_t nsteps,
                           const uint16_t* const* xcol, float* out) {
  dispatch_columns(std::make_integer_sequence<int, kWeightTileColumns>(), ncols, gyp, steps, nsteps, xcol, out);
}

void rows_bf16_tile(int64_t np, int64_t stride, const uint32_t* x, int64_t plane, const RowTileTap* taps, int64_t ntaps,
                    const uint32_t* w, int64_t kk, int64_t npairs, float* acc, bool first) {
  row_tiles::run<PairOps>(np, stride, x, plane, taps, ntaps, w, kk, npairs, acc, first);
}

CNNFAST_ROWS_BF16_INSTANTIATE(float)
CNNFAST_ROWS_BF16_INSTANTIATE(uint16_t)

}  // namespace cnnfast::cpu::amx_impl
