// Direct AVX-512 forward of 2-D convolutions with few input channels (the stems:
// ResNet's 7x7/2 3->64, MobileNet's and EfficientNet's 3x3/2 3->32), NCHW in and out,
// with bias, residual and activation applied to the accumulators before the store.
//
// Why not im2col + GEMM: with C*kh*kw = 27 or 147 rows the im2col matrix is as large as
// the work it feeds (every input element copied kh*kw/stride^2 times), and the GEMM then
// writes y, adds the bias and runs the epilogue as passes of their own over a y several
// times larger than x (ResNet-50's stem: 5x).
//
// A task is one image and a block of output rows. Its input rows are first copied into a
// scratch buffer with the padding as zeros and, at stride 2, split into even and odd
// columns, so that every tap of every output vector is one plain unaligned load: no
// masks (a masked load that misses L1 costs several times a plain one on Zen 5), no lane
// permute per tap, and one copy serves every channel block and the rows that
// neighbouring windows share. A tile is 8 output channels by 3 vectors of 16 positions
// (24 accumulators); per tap 3 loads, 8 broadcasts from the [tap][8] packed weights and
// 24 FMAs. 16 channels by 1 vector (one broadcast per FMA) ran ResNet-50's stem at 127
// GFLOP/s, 8 by 3 within a row (a 112-column row leaves a 1-vector tile) at 178, 8 by 3
// running on across rows at 225 (Zen 5, one thread; peak ~255).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cpu/conv.h"
#include "cpu/epilogue_vec.h"
#include "cpu/simd_math_avx512.h"

namespace cnnfast::cpu::avx512_impl {
namespace {

using cnnfast::avx512::load_lanes;
using cnnfast::avx512::tail_mask16;
using Ops = cnnfast::avx512::EpilogueOps;
constexpr int64_t kLanes = 16;
constexpr int kR = 8;  // output channels a block (the packed weights' inner dimension)
constexpr int64_t kMaxTaps = 4 * 11 * 11;

// Lanes [0, n) for any n (<= 0: none).
inline __mmask16 lanes_upto(int64_t n) { return n <= 0 ? __mmask16(0) : tail_mask16(n); }

// The scratch layout of one task: for each input channel, `rows` input rows from ih0,
// each as `sw` phases (column j of phase p is input column j * sw + p - pad_left) of
// `ld` floats, of which the taps read the first `reach`.
struct Layout {
  int64_t sw, reach, ld, rows, ih0;
  int64_t row() const { return sw * ld; }
  int64_t channel() const { return rows * sw * ld; }
};

inline int64_t row_vectors(const ConvShape& s) { return (s.out[2] + kLanes - 1) / kLanes; }
inline Layout layout(const ConvShape& s, int64_t rows_out, int64_t oh0) {
  const int64_t sw = s.stride[2];
  const int64_t reach = row_vectors(s) * kLanes + (s.k[2] - 1) / sw;
  // A vector of slack past the reach: the copy writes whole vectors.
  const int64_t ld = (reach + 2 * kLanes - 1) / kLanes * kLanes;
  return {sw, reach, ld, (rows_out - 1) * s.stride[1] + s.k[1], oh0 * s.stride[1] - s.pad0[1]};
}

// One input row into its phases, zeros where the columns fall in the padding.
void copy_row(const float* x, int64_t W, int64_t pl, const Layout& l, float* dst) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const int64_t sw = l.sw;
  for (int64_t p = 0; p < sw; ++p) {
    float* d = dst + p * l.ld;
    // The first phase column whose input column is >= 0.
    const int64_t lo = std::min(l.reach, std::max<int64_t>(0, (pl - p + sw - 1) / sw));
    std::memset(d, 0, sizeof(float) * size_t(lo));
    for (int64_t j = lo; j < l.reach; j += kLanes) {
      const int64_t src = j * sw + p - pl, n = W - src;
      __m512 v;
      if (sw == 1) {
        v = load_lanes(lanes_upto(n), x + src);
      } else if (sw > 2) {
        // Strides 3 and 4 (AlexNet's 11x11/4): a gather; the copy is a few percent of the
        // FMAs it feeds (each element read by ceil(kw / sw) taps of every channel block).
        const __m512i cols = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                                _mm512_set1_epi32(int(sw)));
        const __mmask16 in_row = _mm512_cmplt_epi32_mask(cols, _mm512_set1_epi32(int(std::min<int64_t>(n, 1 << 30))));
        v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), in_row, cols, x + src, 4);
      } else {
        const __m512 a = load_lanes(lanes_upto(n), x + src);
        const __m512 b = n > kLanes ? load_lanes(lanes_upto(n - kLanes), x + src + kLanes) : _mm512_setzero_ps();
        v = _mm512_permutex2var_ps(a, even, b);
      }
      _mm512_storeu_ps(d + j, v);
    }
  }
}

// V vectors of output positions by the kR channels of one block. The vectors may lie in
// different output rows (the task's rows are one run of vectors), so a row of 7 vectors
// (112 columns) does not leave a tile of one vector that the broadcasts would bound.
template <int V>
struct Tile {
  const float* xs;      // the task's scratch
  const int64_t* toff;  // per tap (c, kh, kw): offset of its first column into xs
  int64_t taps;
  const float* w;       // the block's packed weights, [tap][kR], then the bias
  float* y;             // y at the block's first channel, (oh0, 0)
  const float* res;     // residual at the same place, or null
  int64_t ldy;          // distance between channels in y
  int64_t rows;         // channels of the block that exist (<= kR)
  int64_t xo[V], yo[V];  // each vector's offset into xs (window's first row) and into y
  __mmask16 m[V];        // each vector's lanes inside the row
};

template <int V>
void tile(const Tile<V>& t, const Epilogue& e) {
  __m512 acc[kR][V];
  const float* bias = t.w + t.taps * kR;
#pragma GCC unroll 16
  for (int r = 0; r < kR; ++r) {
    const __m512 b = _mm512_set1_ps(bias[r]);
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) acc[r][v] = b;
  }
  const float* xv0[V];
#pragma GCC unroll 4
  for (int v = 0; v < V; ++v) xv0[v] = t.xs + t.xo[v];
  const float* wp = t.w;
  for (int64_t i = 0; i < t.taps; ++i, wp += kR) {
    const int64_t o = t.toff[i];
    __m512 xv[V];
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) xv[v] = _mm512_loadu_ps(xv0[v] + o);
    cnnfast::avx512::fma_rows(acc, wp, xv);
  }
  const __m512 alpha = _mm512_set1_ps(float(e.alpha)), beta = _mm512_set1_ps(float(e.beta));
#pragma GCC unroll 16
  for (int r = 0; r < kR; ++r) {
    if (r >= t.rows) continue;
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) {
      const int64_t at = r * t.ldy + t.yo[v];
      CNNFAST_ISA_NS::epilogue_store<Ops>(acc[r][v], t.y + at, t.res ? t.res + at : nullptr, t.m[v], e.act, alpha,
                                          beta);
    }
  }
}

}  // namespace

bool stem_applicable(const ConvShape& s) {
  if (s.in[0] != 1 || s.out[0] != 1 || s.k[0] != 1 || s.groups != 1 || s.C > 4) return false;
  if (s.dil[1] != 1 || s.dil[2] != 1) return false;
  for (int d = 1; d < 3; ++d)
    if (s.stride[d] < 1 || s.stride[d] > 4 || s.pad0[d] < 0 || s.pad1[d] < 0) return false;
  // The packed weights and tap tables are sized for kernels up to 11x11.
  return s.k[1] <= 11 && s.k[2] <= 11 && s.out[1] > 0 && s.out[2] > 0;
}

int64_t stem_packed_size(const ConvShape& s) {
  return (s.K + kR - 1) / kR * (s.C * s.k[1] * s.k[2] + 1) * kR;
}

void stem_pack(const ConvShape& s, const float* w, const float* bias, float* packed) {
  const int64_t taps = s.C * s.k[1] * s.k[2], blocks = (s.K + kR - 1) / kR;
  std::memset(packed, 0, sizeof(float) * size_t(stem_packed_size(s)));
  for (int64_t kb = 0; kb < blocks; ++kb) {
    float* p = packed + kb * (taps + 1) * kR;
    for (int64_t r = 0; r < kR && kb * kR + r < s.K; ++r) {
      const int64_t k = kb * kR + r;
      for (int64_t t = 0; t < taps; ++t) p[t * kR + r] = w[k * taps + t];
      p[taps * kR + r] = bias ? bias[k] : 0.0f;  // the bias follows the taps
    }
  }
}

int64_t stem_scratch(const ConvShape& s, int64_t rows_out) {
  const Layout l = layout(s, rows_out, 0);
  return s.C * l.channel();
}

void stem_rows(const ConvShape& s, const float* x, const float* packed, float* y, const Epilogue& e, int64_t n,
               int64_t oh0, int64_t oh1, float* scratch) {
  const int64_t C = s.C, H = s.in[1], W = s.in[2], Ho = s.out[1], Wo = s.out[2], K = s.K;
  const int64_t KH = s.k[1], KW = s.k[2], sh = s.stride[1];
  const Layout l = layout(s, oh1 - oh0, oh0);
  // Rows in the vertical padding are zeros like the columns: the few border rows then do
  // some dead FMAs, and every tile of the task takes the same taps.
  const float* xn = x + n * C * H * W;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < l.rows; ++i) {
      const int64_t ih = l.ih0 + i;
      float* d = scratch + c * l.channel() + i * l.row();
      if (ih < 0 || ih >= H) std::memset(d, 0, sizeof(float) * size_t(l.row()));
      else copy_row(xn + (c * H + ih) * W, W, s.pad0[2], l, d);
    }
  const int64_t taps = C * KH * KW;
  int64_t toff[kMaxTaps];
  for (int64_t c = 0, i = 0; c < C; ++c)
    for (int64_t kh = 0; kh < KH; ++kh)
      for (int64_t kw = 0; kw < KW; ++kw) toff[i++] = c * l.channel() + kh * l.row() + (kw % l.sw) * l.ld + kw / l.sw;
  const int64_t nv = row_vectors(s), total = (oh1 - oh0) * nv;
  const __mmask16 last = tail_mask16(Wo - (nv - 1) * kLanes);
  const float* res = static_cast<const float*>(e.residual);
  const int64_t y0 = n * K * Ho * Wo + oh0 * Wo;
  // Blocks outer: the block's weights stay in L1 while its tiles pass over the rows
  // (going row by row through all blocks measured the same).
  for (int64_t k0 = 0; k0 < K; k0 += kR) {
    auto run = [&](auto vc, int64_t i0) {
      constexpr int V = decltype(vc)::value;
      Tile<V> t{scratch, toff, taps, packed + (k0 / kR) * (taps + 1) * kR, y + y0 + k0 * Ho * Wo,
                res ? res + y0 + k0 * Ho * Wo : nullptr, Ho * Wo, std::min<int64_t>(kR, K - k0), {}, {}, {}};
      for (int v = 0; v < V; ++v) {
        const int64_t row = (i0 + v) / nv, g = (i0 + v) % nv;
        t.xo[v] = row * sh * l.row() + g * kLanes;
        t.yo[v] = row * Wo + g * kLanes;
        t.m[v] = g + 1 == nv ? last : __mmask16(0xffff);
      }
      tile<V>(t, e);
    };
    int64_t i = 0;
    for (; i + 3 <= total; i += 3) run(std::integral_constant<int, 3>(), i);
    if (total - i == 2) run(std::integral_constant<int, 2>(), i);
    else if (total - i == 1) run(std::integral_constant<int, 1>(), i);
  }
}

}  // namespace cnnfast::cpu::avx512_impl
