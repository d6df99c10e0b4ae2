// The NCHW16c kernels of conv_nchw16c.h: layout conversions, the 1x1 tile, the depthwise
// rows and the squeeze-excite passes, each a vector of 16 channels per position.
#include <immintrin.h>

#include <algorithm>
#include <utility>

#include "cpu/conv_nchw16c.h"
#include "cpu/epilogue_vec.h"
#include "cpu/simd_math_avx512.h"
#include "cpu/simd_transpose_x86.h"

namespace cnnfast::cpu::avx512_impl {
namespace {

using namespace cnnfast::avx512;
using Ops = EpilogueOps;
using CNNFAST_ISA_NS::transpose16;
constexpr int64_t L = kBlockLanes;
constexpr int kMaxTileCols = 14;  // 2 x 14 accumulators, two weight vectors, one broadcast (one block: 28)

struct Act {
  EpilogueAct act;
  __m512 alpha, beta;
  explicit Act(const Epilogue& e)
      : act(e.act), alpha(_mm512_set1_ps(float(e.alpha))), beta(_mm512_set1_ps(float(e.beta))) {}
  // y = act(v + res), all 16 lanes.
  void store(__m512 v, float* y, const float* res) const {
    CNNFAST_ISA_NS::epilogue_store<Ops>(v, y, res, __mmask16(0xffff), act, alpha, beta);
  }
};

// TWO: 32 output channels (two blocks) by up to 14 positions; else one block by up to 28
// (layers of at most 16 channels, and the last block of 144 or 240: the second block's
// FMAs would all be padding).
template <int NP, bool TWO>
void pointwise(const float* xb, int64_t P, int64_t c0, int64_t c1, const float* w, const float* bias, float* yb,
               int64_t yP, const float* res, int64_t p0, const Epilogue& e, bool accumulate, bool finish,
               const float* wnext, const float* xscale) {
  constexpr bool two = TWO;
  const __m512 b0 = bias && !accumulate ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
  const __m512 b1 = bias && !accumulate && two ? _mm512_loadu_ps(bias + L) : _mm512_setzero_ps();
  __m512 a0[NP], a1[TWO ? NP : 1];
#pragma GCC unroll 28
  for (int j = 0; j < NP; ++j) {
    a0[j] = b0;
    if constexpr (TWO) a1[j] = b1;
  }
  // The tile's rows of y (for writing) and of the residual are fetched now and arrive
  // under the FMAs.
  if (finish)
    for (int half = 0; half < (two ? 2 : 1); ++half)
#pragma GCC unroll 16
      for (int j = 0; j < NP; ++j) {
        _mm_prefetch(reinterpret_cast<const char*>(yb + (half * yP + j) * L), _MM_HINT_ET0);
        if (res) _mm_prefetch(reinterpret_cast<const char*>(res + (half * yP + j) * L), _MM_HINT_T0);
      }
  // Input channel c of position p lies at block c / 16, lane c % 16: per block, 16
  // channels of the tile's NP positions in NP consecutive 64-byte lines, and the block's
  // lines a plane apart, which the hardware prefetcher does not follow: each block's
  // lines of the next NP positions are fetched while this tile works on the block.
  for (int64_t cb = c0 / L; cb * L < c1; ++cb) {
    const float* xc = xb + (cb * P + p0) * L;
    const int64_t n = std::min<int64_t>(L, c1 - cb * L);
    if (p0 + 2 * NP <= P)
#pragma GCC unroll 28
      for (int j = 0; j < NP; ++j) _mm_prefetch(reinterpret_cast<const char*>(xc + (NP + j) * L), _MM_HINT_T0);
    for (int64_t l = 0; l < n; ++l, w += 2 * L) {
      // Inside a frozen graph every layer's weights come back from L3 or memory: the
      // next slice is fetched under this tile's FMAs (MobileNet-V2's 320->1280 at 7x7,
      // 1.6 MB of weights, batch 1).
      if (wnext) {
        _mm_prefetch(reinterpret_cast<const char*>(wnext), _MM_HINT_T1);
        _mm_prefetch(reinterpret_cast<const char*>(wnext + L), _MM_HINT_T1);
        wnext += 2 * L;
      }
      __m512 w0 = _mm512_loadu_ps(w), w1 = TWO ? _mm512_loadu_ps(w + L) : w0;
      if (xscale) {
        const __m512 sv = _mm512_set1_ps(xscale[cb * L + l]);
        w0 = _mm512_mul_ps(w0, sv);
        if constexpr (TWO) w1 = _mm512_mul_ps(w1, sv);
      }
#pragma GCC unroll 28
      for (int j = 0; j < NP; ++j) {
        const __m512 xv = _mm512_set1_ps(xc[j * L + l]);
        a0[j] = _mm512_fmadd_ps(w0, xv, a0[j]);
        if constexpr (TWO) a1[j] = _mm512_fmadd_ps(w1, xv, a1[j]);
      }
    }
  }
  const Act act(e);
  for (int half = 0; half < (two ? 2 : 1); ++half) {
    float* y = yb + half * yP * L;
    const float* r = res ? res + half * yP * L : nullptr;
#pragma GCC unroll 28
    for (int j = 0; j < NP; ++j) {
      __m512 v = a0[j];
      if constexpr (TWO)
        if (half) v = a1[j];
      if (accumulate) v = _mm512_add_ps(v, _mm512_loadu_ps(y + j * L));
      if (finish) act.store(v, y + j * L, r ? r + j * L : nullptr);
      else _mm512_storeu_ps(y + j * L, v);
    }
  }
}

template <bool TWO, int... NP>
void pointwise_dispatch(std::integer_sequence<int, NP...>, int64_t np, const float* xb, int64_t P, int64_t c0,
                        int64_t c1, const float* w, const float* bias, float* yb, int64_t yP, const float* res,
                        int64_t p0, const Epilogue& e, bool accumulate, bool finish, const float* wnext,
                        const float* xscale) {
  ((np == NP + 1 ? (pointwise<NP + 1, TWO>(xb, P, c0, c1, w, bias, yb, yP, res, p0, e, accumulate, finish, wnext,
                                           xscale),
                    true)
                 : false) ||
   ...);
}

// T consecutive outputs of one row: acc[t] = bias + sum over the taps in range of w[tap]
// x[ih][iw]. CHECK: some of the T outputs have taps past the row's ends (those read as
// zero), each tap is tested; otherwise the S (T - 1) + K input vectors the T windows span
// are loaded once per kernel row and shared by the taps (3x3 stride 1: 10 loads for 24
// FMAs instead of 24).
template <int K, int S, int T, bool CHECK>
void dw_block(const float* x, int64_t W, const float* w, __m512 bias, float* y, const float* res, int64_t ih0,
              int64_t kh0, int64_t kh1, int64_t ow, int64_t pw, const Act& act) {
  __m512 acc[T];
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t) acc[t] = bias;
  for (int64_t kh = kh0; kh < kh1; ++kh) {
    const float* xr = x + (ih0 + kh) * W * L;
    if constexpr (CHECK) {
#pragma GCC unroll 5
      for (int kw = 0; kw < K; ++kw) {
        const __m512 wv = _mm512_loadu_ps(w + (kh * K + kw) * L);
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) {
          const int64_t iw = (ow + t) * S + kw - pw;
          if (iw < 0 || iw >= W) continue;
          acc[t] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(xr + iw * L), acc[t]);
        }
      }
    } else {
      constexpr int kSpan = S * (T - 1) + K;
      const float* x0 = xr + (ow * S - pw) * L;
      __m512 xv[kSpan];
#pragma GCC unroll 24
      for (int i = 0; i < kSpan; ++i) xv[i] = _mm512_loadu_ps(x0 + i * L);
#pragma GCC unroll 5
      for (int kw = 0; kw < K; ++kw) {
        const __m512 wv = _mm512_loadu_ps(w + (kh * K + kw) * L);
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) acc[t] = _mm512_fmadd_ps(wv, xv[t * S + kw], acc[t]);
      }
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t) act.store(acc[t], y + (ow + t) * L, res ? res + (ow + t) * L : nullptr);
}

constexpr int kRowBlock = 8;  // outputs a block: 8 accumulators, a kernel row of taps on shared loads

template <int K, int S, bool CHECK, int... T>
void dw_block_dispatch(std::integer_sequence<int, T...>, int64_t n, const float* x, int64_t W, const float* w,
                       __m512 bias, float* y, const float* res, int64_t ih0, int64_t kh0, int64_t kh1, int64_t ow,
                       int64_t pw, const Act& act) {
  ((n == T + 1 ? (dw_block<K, S, T + 1, CHECK>(x, W, w, bias, y, res, ih0, kh0, kh1, ow, pw, act), true) : false) ||
   ...);
}

template <int K, int S>
void dw_rows(const ConvShape& s, const float* x, int64_t row0, const float* w, const float* bias, float* y,
             const float* res, int64_t oh0, int64_t oh1, const Epilogue& e) {
  const int64_t H = s.in[1], W = s.in[2], Wo = s.out[2], ph = s.pad0[1], pw = s.pad0[2];
  const Act act(e);
  const __m512 b = _mm512_loadu_ps(bias);
  // Outputs [lo, hi) have every tap inside the row.
  const int64_t lo = std::min(Wo, (pw + S - 1) / S);
  const int64_t hi = std::max(lo, std::min(Wo, W - K + pw >= 0 ? (W - K + pw) / S + 1 : 0));
  constexpr auto widths = std::make_integer_sequence<int, kRowBlock>();
  for (int64_t oh = oh0; oh < oh1; ++oh) {
    const int64_t ih0 = oh * S - ph;
    const int64_t kh0 = std::max<int64_t>(0, -ih0), kh1 = std::min<int64_t>(K, H - ih0);
    float* yr = y + oh * Wo * L;
    const float* rr = res ? res + oh * Wo * L : nullptr;
    for (int64_t ow = 0; ow < Wo;) {
      const int64_t n = std::min<int64_t>(kRowBlock, Wo - ow);
      if (ow >= lo && ow + n <= hi)
        dw_block_dispatch<K, S, false>(widths, n, x, W, w, b, yr, rr, ih0 - row0, kh0, kh1, ow, pw, act);
      else
        dw_block_dispatch<K, S, true>(widths, n, x, W, w, b, yr, rr, ih0 - row0, kh0, kh1, ow, pw, act);
      ow += n;
    }
  }
}

}  // namespace

void nchw16c_pack_range(const float* x, int64_t C, int64_t P, int64_t cb, int64_t p0, int64_t np, float* dst) {
  const int64_t c0 = cb * L, nc = std::min<int64_t>(L, C - c0);
  for (int64_t q = 0; q < np; q += L) {
    const int64_t n = std::min<int64_t>(L, np - q);
    const __mmask16 m = tail_mask16(n);
    __m512 r[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i)
      r[i] = i < nc ? _mm512_maskz_loadu_ps(m, x + (c0 + i) * P + p0 + q) : _mm512_setzero_ps();
    transpose16(r);
    for (int64_t j = 0; j < n; ++j) _mm512_storeu_ps(dst + (q + j) * L, r[j]);
  }
}

void nchw16c_unpack_blocks(const float* xb, int64_t C, int64_t P, float* x, int64_t cb0, int64_t cb1) {
  for (int64_t cb = cb0; cb < cb1; ++cb) {
    const int64_t c0 = cb * L, nc = std::min<int64_t>(L, C - c0);
    const float* src = xb + cb * P * L;
    for (int64_t p0 = 0; p0 < P; p0 += L) {
      const int64_t np = std::min<int64_t>(L, P - p0);
      const __mmask16 m = tail_mask16(np);
      __m512 r[16];
#pragma GCC unroll 16
      for (int j = 0; j < 16; ++j) r[j] = j < np ? _mm512_loadu_ps(src + (p0 + j) * L) : _mm512_setzero_ps();
      transpose16(r);
      for (int64_t i = 0; i < nc; ++i) store_lanes(x + (c0 + i) * P + p0, m, r[i]);
    }
  }
}

void nchw16c_pointwise_tile(const float* xb, int64_t P, int64_t c0, int64_t c1, const float* w, bool two_blocks,
                            const float* bias, float* yb, int64_t yP, const float* res, int64_t p0, int64_t np,
                            const Epilogue& e, bool accumulate, bool finish, const float* wnext,
                            const float* xscale) {
  if (two_blocks)
    pointwise_dispatch<true>(std::make_integer_sequence<int, kMaxTileCols>(), np, xb, P, c0, c1, w, bias, yb, yP, res,
                             p0, e, accumulate, finish, wnext, xscale);
  else
    pointwise_dispatch<false>(std::make_integer_sequence<int, 2 * kMaxTileCols>(), np, xb, P, c0, c1, w, bias, yb,
                              yP, res, p0, e, accumulate, finish, wnext, xscale);
}

void nchw16c_depthwise_rows(const ConvShape& s, const float* x, int64_t row0, const float* w, const float* bias,
                            float* y, const float* res, int64_t oh0, int64_t oh1, const Epilogue& e) {
  const int64_t k = s.k[1], st = s.stride[1];
  if (k == 3 && st == 1) return dw_rows<3, 1>(s, x, row0, w, bias, y, res, oh0, oh1, e);
  if (k == 3) return dw_rows<3, 2>(s, x, row0, w, bias, y, res, oh0, oh1, e);
  if (st == 1) return dw_rows<5, 1>(s, x, row0, w, bias, y, res, oh0, oh1, e);
  dw_rows<5, 2>(s, x, row0, w, bias, y, res, oh0, oh1, e);
}

void nchw16c_block_mean(const float* xb, int64_t P, float* out) {
  // Four running sums: one is a chain of dependent adds.
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  int64_t p = 0;
  for (; p + 4 <= P; p += 4) {
    s0 = _mm512_add_ps(s0, _mm512_loadu_ps(xb + p * L));
    s1 = _mm512_add_ps(s1, _mm512_loadu_ps(xb + (p + 1) * L));
    s2 = _mm512_add_ps(s2, _mm512_loadu_ps(xb + (p + 2) * L));
    s3 = _mm512_add_ps(s3, _mm512_loadu_ps(xb + (p + 3) * L));
  }
  for (; p < P; ++p) s0 = _mm512_add_ps(s0, _mm512_loadu_ps(xb + p * L));
  const __m512 sum = _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3));
  _mm512_storeu_ps(out, _mm512_mul_ps(sum, _mm512_set1_ps(1.0f / float(P))));
}

void nchw16c_block_scale(const float* xb, int64_t P, const float* scale, float* yb) {
  const __m512 v = _mm512_loadu_ps(scale);
  for (int64_t p = 0; p < P; ++p) _mm512_storeu_ps(yb + p * L, _mm512_mul_ps(_mm512_loadu_ps(xb + p * L), v));
}

}  // namespace cnnfast::cpu::avx512_impl
