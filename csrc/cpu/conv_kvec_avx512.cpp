// The channel-vector tiles: 32 output channels in two zmm by up to 14 positions, for the
// dense convolutions of frozen inference graphs on small maps (prepack.h, conv_forward_panels'
// kvec path) and, reading their x rows at tap offsets of a bordered image, for the eager
// forward and grad_x of conv_kvec_taps.cpp; and its weight-gradient tiles (64 channels by
// the taps of one or two kernel rows). y (K, P) = W (K, CK) x (CK, P) with the vectors
// along the output channels: per row c of x, two loads of the packed weights ((K/32, CK,
// 32), ConvPacked::kvec) and one broadcast per position feed 2 x 14 FMAs. At the end the
// 2 x 14 accumulators are transposed in registers (16 x 16 at a time) into rows of y,
// where bias, residual and activation are applied before the one store.
//
// Why: the panel tiles put 16 positions in a vector, so a 7x7 map (49) fills 4 vectors
// to 77% and a 14x14 one (196) 13 vectors to 94%, and their six rows of W per tile
// make C-deep layers load-bound; here the vector lanes are output channels (ResNet's,
// MobileNet's and EfficientNet's counts are multiples of 16) and any position count
// tiles by 14s. One thread, weights in cache, ms: 1x1 2048->512 at 7x7 0.534 (panels)
// against 0.397, 960->160 0.071 / 0.058, 160->960 0.075 / 0.067, 256->1024 at 14x14
// 0.463 / 0.430.
#include <immintrin.h>

#include <algorithm>

#include "cpu/epilogue_vec.h"
#include "cpu/prepack.h"
#include "cpu/simd_math_avx512.h"
#include "cpu/simd_transpose_x86.h"

namespace cnnfast::cpu::avx512_impl {
namespace {

using namespace cnnfast::avx512;
using Ops = EpilogueOps;
using CNNFAST_ISA_NS::transpose16;

// Where row c of x starts, and how far apart its positions lie: a matrix with leading
// dimension ld (im2col columns, or a 1x1 layer's input as it is) ...
struct StridedRows {
  static constexpr int kStep = 1;
  const float* x;
  int64_t ld;
  const float* operator()(int64_t c) const { return x + c * ld; }
};
// ... or a zero-bordered image, row c = (channel, kh, kw) at its own offset, the tile's
// positions SW input columns apart (the stride): no im2col matrix at all.
template <int SW>
struct TapRows {
  static constexpr int kStep = SW;
  const float* x;
  const int32_t* off;
  const float* operator()(int64_t c) const { return x + off[c]; }
};

template <int NP, class Rows>
void tile(int64_t C, Rows rows_of_x, const float* w, int64_t rows, const float* bias, float* y, const float* res,
          int64_t ldy, const Epilogue& e, bool accumulate, bool finish, const float* wnext) {
  const __mmask16 lo = tail_mask16(std::min<int64_t>(rows, 16)), hi = tail_mask16(std::max<int64_t>(rows - 16, 0));
  // The epilogue's residual rows and the rows of y it stores are 32 short runs a plane
  // apart, which the hardware prefetcher does not follow: fetched now (y for writing),
  // they arrive under the FMAs. One thread, ms, ResNet-50's 1x1 256->1024 at 14x14 with
  // its residual and ReLU, batch 8: 4.01 -> 3.53 (two threads 2.10 -> 1.87; onnxruntime
  // ~3.3 in the graph); 512->2048 at 7x7 3.65 -> 3.53; batch 1 unchanged.
  if (finish)
    for (int64_t l = 0; l < rows; ++l) {
      if (res) {
        _mm_prefetch(reinterpret_cast<const char*>(res + l * ldy), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(res + l * ldy + NP - 1), _MM_HINT_T0);
      }
      _mm_prefetch(reinterpret_cast<const char*>(y + l * ldy), _MM_HINT_ET0);
      _mm_prefetch(reinterpret_cast<const char*>(y + l * ldy + NP - 1), _MM_HINT_ET0);
    }
  const __m512 b0 = bias && !accumulate ? _mm512_maskz_loadu_ps(lo, bias) : _mm512_setzero_ps();
  const __m512 b1 = bias && !accumulate && hi ? _mm512_maskz_loadu_ps(hi, bias + 16) : _mm512_setzero_ps();
  // Fully unrolled so that the 2 NP accumulators stay in registers.
  __m512 a0[NP], a1[NP];
#pragma GCC unroll 16
  for (int j = 0; j < NP; ++j) a0[j] = b0, a1[j] = b1;
  for (int64_t c = 0; c < C; ++c) {
    if (wnext) {
      _mm_prefetch(reinterpret_cast<const char*>(wnext + c * kKvecRows), _MM_HINT_T1);
      _mm_prefetch(reinterpret_cast<const char*>(wnext + c * kKvecRows + 16), _MM_HINT_T1);
    }
    const __m512 w0 = _mm512_loadu_ps(w + c * kKvecRows), w1 = _mm512_loadu_ps(w + c * kKvecRows + 16);
    const float* xc = rows_of_x(c);
#pragma GCC unroll 16
    for (int j = 0; j < NP; ++j) {
      const __m512 xb = _mm512_set1_ps(xc[j * Rows::kStep]);
      a0[j] = _mm512_fmadd_ps(w0, xb, a0[j]);
      a1[j] = _mm512_fmadd_ps(w1, xb, a1[j]);
    }
  }
  const __mmask16 m = tail_mask16(NP);
  const __m512 alpha = _mm512_set1_ps(float(e.alpha)), beta = _mm512_set1_ps(float(e.beta));
  for (int half = 0; half < 2; ++half) {
    const int64_t k0 = 16 * half;
    if (k0 >= rows) break;
    __m512 r[16];
#pragma GCC unroll 16
    for (int j = 0; j < 16; ++j) r[j] = j < NP ? (half ? a1[j] : a0[j]) : _mm512_setzero_ps();
    transpose16(r);
    const int64_t n = std::min<int64_t>(16, rows - k0);
#pragma GCC unroll 16
    for (int l = 0; l < 16; ++l) {
      if (l >= n) break;
      float* out = y + (k0 + l) * ldy;
      __m512 v = r[l];
      if (accumulate) v = _mm512_add_ps(v, load_lanes(m, out));
      if (finish)
        CNNFAST_ISA_NS::epilogue_store<Ops>(v, out, res ? res + (k0 + l) * ldy : nullptr, m, e.act, alpha, beta);
      else
        store_lanes(out, m, v);
    }
  }
}

template <class Rows, int... NP>
void dispatch(std::integer_sequence<int, NP...>, int64_t np, int64_t C, Rows x, const float* w, int64_t rows,
              const float* bias, float* y, const float* res, int64_t ldy, const Epilogue& e, bool accumulate,
              bool finish, const float* wnext) {
  ((np == NP + 1 ? (tile<NP + 1>(C, x, w, rows, bias, y, res, ldy, e, accumulate, finish, wnext), true) : false) ||
   ...);
}

}  // namespace

void kvec_tile(int64_t C, const float* x, int64_t ldx, const float* w, int64_t rows, const float* bias, float* y,
               const float* res, int64_t ldy, int64_t np, const Epilogue& e, bool accumulate, bool finish,
               const float* wnext) {
  dispatch(std::make_integer_sequence<int, kKvecMaxCols>(), np, C, StridedRows{x, ldx}, w, rows, bias, y, res, ldy, e,
           accumulate, finish, wnext);
}

void kvec_taps_tile(int64_t CK, const float* x, const int32_t* off, int64_t sw, const float* w, int64_t rows,
                    const float* bias, float* y, int64_t ldy, int64_t np) {
  const Epilogue none;
  constexpr auto cols = std::make_integer_sequence<int, kKvecMaxCols>();
  if (sw == 4)
    dispatch(cols, np, CK, TapRows<4>{x, off}, w, rows, bias, y, nullptr, ldy, none, false, true, nullptr);
  else if (sw == 3)
    dispatch(cols, np, CK, TapRows<3>{x, off}, w, rows, bias, y, nullptr, ldy, none, false, true, nullptr);
  else if (sw == 2)
    dispatch(cols, np, CK, TapRows<2>{x, off}, w, rows, bias, y, nullptr, ldy, none, false, true, nullptr);
  else
    dispatch(cols, np, CK, TapRows<1>{x, off}, w, rows, bias, y, nullptr, ldy, none, false, true, nullptr);
}

// ---- weight gradient ----

// dy (K, P) of one image -> dyt (blocks of 64 channels, P, 64), block kb at dyt + kb
// kb_stride, for blocks [kb0, kb1), zero channels past K: each position's 64 channel
// values one load apart.
void kvec_transpose_grad(const float* dy, int64_t K, int64_t P, float* dyt, int64_t kb_stride, int64_t kb0,
                         int64_t kb1) {
  for (int64_t kb = kb0; kb < kb1; ++kb)
    for (int64_t q = 0; q < 4; ++q) {
      const int64_t k0 = kb * 64 + q * 16, nk = std::min<int64_t>(16, std::max<int64_t>(0, K - k0));
      for (int64_t p0 = 0; p0 < P; p0 += 16) {
        const int64_t np = std::min<int64_t>(16, P - p0);
        const __mmask16 m = tail_mask16(np);
        __m512 r[16];
#pragma GCC unroll 16
        for (int i = 0; i < 16; ++i)
          r[i] = i < nk ? _mm512_maskz_loadu_ps(m, dy + (k0 + i) * P + p0) : _mm512_setzero_ps();
        transpose16(r);
        float* dst = dyt + kb * kb_stride + p0 * 64 + q * 16;
        for (int64_t j = 0; j < np; ++j) _mm512_storeu_ps(dst + j * 64, r[j]);
      }
    }
}

namespace {

// gw (rows <= 16 KV channels, ld ldw) columns [0, R KW) += sum over the Ho x Wo output
// positions of dyt[p] (64 channel slots) times x at tap (r, kw) of p: x is the bordered
// image's channel plane from the tile's first kernel row, Wp wide. KV zmm of channels
// (4, or 2 for layers of at most 32) by R KW taps accumulate; per position KV loads and
// R KW broadcasts feed KV R KW FMAs.
template <int R, int KW, int SW, int KV>
void weight_tile(int64_t images, int64_t Ho, int64_t Wo, int64_t Wp, int64_t sh, const float* dyt, int64_t dyt_image,
                 const float* x, int64_t x_image, float* gw, int64_t ldw, int64_t rows) {
  constexpr int NT = R * KW;
  __m512 acc[KV][NT];
#pragma GCC unroll 4
  for (int v = 0; v < KV; ++v)
#pragma GCC unroll 16
    for (int t = 0; t < NT; ++t) acc[v][t] = _mm512_setzero_ps();
  for (int64_t n = 0; n < images; ++n)
  for (int64_t oh = 0; oh < Ho; ++oh) {
    const float* xr = x + n * x_image + oh * sh * Wp;
    const float* d = dyt + n * dyt_image + oh * Wo * 64;
    for (int64_t ow = 0; ow < Wo; ++ow, d += 64) {
      __m512 dv[KV];
#pragma GCC unroll 4
      for (int v = 0; v < KV; ++v) dv[v] = _mm512_loadu_ps(d + 16 * v);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
        for (int kw = 0; kw < KW; ++kw) {
          const __m512 xb = _mm512_set1_ps(xr[r * Wp + ow * SW + kw]);
#pragma GCC unroll 4
          for (int v = 0; v < KV; ++v) acc[v][r * KW + kw] = _mm512_fmadd_ps(dv[v], xb, acc[v][r * KW + kw]);
        }
    }
  }
  const __mmask16 m = tail_mask16(NT);
  for (int v = 0; v < KV; ++v) {
    if (16 * v >= rows) break;
    __m512 r[16];
#pragma GCC unroll 16
    for (int t = 0; t < 16; ++t) r[t] = t < NT ? acc[v][t] : _mm512_setzero_ps();
    transpose16(r);
    const int64_t n = std::min<int64_t>(16, rows - 16 * v);
    for (int64_t l = 0; l < n; ++l) {
      float* out = gw + (16 * v + l) * ldw;
      store_lanes(out, m, _mm512_add_ps(r[l], load_lanes(m, out)));
    }
  }
}

}  // namespace

bool kvec_weight_tile(int64_t R, int64_t KW, int64_t KV, int64_t images, int64_t Ho, int64_t Wo, int64_t Wp, int64_t sh,
                      int64_t sw, const float* dyt, int64_t dyt_image, const float* x, int64_t x_image, float* gw,
                      int64_t ldw, int64_t rows) {
  auto run = [&](auto tile) { tile(images, Ho, Wo, Wp, sh, dyt, dyt_image, x, x_image, gw, ldw, rows); };
#define CNNFAST_WEIGHT_TILE(r, kw, kv)                               \
  if (R == r && KW == kw && KV == kv && (sw == 1 || sw == 2)) {      \
    sw == 1 ? run(weight_tile<r, kw, 1, kv>) : run(weight_tile<r, kw, 2, kv>); \
    return true;                                                     \
  }
  CNNFAST_WEIGHT_TILE(2, 3, 4)
  CNNFAST_WEIGHT_TILE(1, 3, 4)
  CNNFAST_WEIGHT_TILE(1, 4, 4)
  CNNFAST_WEIGHT_TILE(1, 5, 4)
  CNNFAST_WEIGHT_TILE(3, 3, 2)
  CNNFAST_WEIGHT_TILE(2, 3, 2)
  CNNFAST_WEIGHT_TILE(1, 3, 2)
  CNNFAST_WEIGHT_TILE(3, 4, 2)
  CNNFAST_WEIGHT_TILE(2, 4, 2)
  CNNFAST_WEIGHT_TILE(1, 4, 2)
  CNNFAST_WEIGHT_TILE(2, 5, 2)
  CNNFAST_WEIGHT_TILE(1, 5, 2)
#undef CNNFAST_WEIGHT_TILE
  return false;
}

}  // namespace cnnfast::cpu::avx512_impl
