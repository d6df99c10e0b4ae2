// The im2col matrix of a 2-D layer, whole channels at a time (conv_im2col.h,
// im2col_channels): the frozen graphs' panel and channel-vector tiles (prepack.cpp)
// map every column of an image in one call, so each input row can be prepared once
// for all the taps and output rows that read it.
//
// Why not ColumnMap: it maps chunks of columns, so it zero-borders the whole image
// (and splits it into column phases at stride 2, one scalar element at a time) on
// every call, and copies runs with per-run bookkeeping. One thread, batch 1, the
// im2col alone, ColumnMap / here: ResNet-50's 1x1 stride-2 512-channel layer at 28x28
// 0.24 / 0.08 ms, its 3x3 stride-2 256-channel layer 0.30 / 0.12, 3x3 256-channel at
// 14x14 0.11 / 0.07 (a tenth to a fifth of each layer before).
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "cpu/conv_im2col.h"
#include "cpu/simd_math_avx512.h"
#include "cpu/simd_transpose_x86.h"

namespace cnnfast::cpu::avx512_impl {

using namespace cnnfast::avx512;

namespace {

// dst[0, n) = src[0, n), whole vectors plain and the tail masked.
inline void copy_run(float* dst, const float* src, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, _mm512_loadu_ps(src + i));
  if (i < n) {
    const __mmask16 m = tail_mask16(n - i);
    _mm512_mask_storeu_ps(dst + i, m, _mm512_maskz_loadu_ps(m, src + i));
  }
}

inline void zero_run(float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, _mm512_setzero_ps());
  if (i < n) _mm512_mask_storeu_ps(dst + i, tail_mask16(n - i), _mm512_setzero_ps());
}

// Geometry of one channel's zero-bordered plane, each padded row split into sw column
// phases (padded column j is phase j % sw at j / sw), so that every tap's run of Wo
// outputs in an output row reads contiguous memory.
struct Plane {
  int64_t rows, span, phase_len;
  explicit Plane(const ConvShape& s)
      : rows((s.out[1] - 1) * s.stride[1] + (s.k[1] - 1) * s.dil[1] + 1),
        span((s.out[2] - 1) * s.stride[2] + (s.k[2] - 1) * s.dil[2] + 1),
        phase_len((span + s.stride[2] - 1) / s.stride[2]) {}
  int64_t row_floats(int64_t sw) const { return sw * phase_len; }
};

}  // namespace

void im2col_channels(const ConvShape& s, const float* x, float* col, int64_t ld, int64_t c0, int64_t c1,
                     float* scratch) {
  const int64_t H = s.in[1], W = s.in[2], Ho = s.out[1], Wo = s.out[2];
  const int64_t kh = s.k[1], kw = s.k[2], sh = s.stride[1], sw = s.stride[2], dh = s.dil[1], dw = s.dil[2];
  const int64_t ph = s.pad0[1], pw = s.pad0[2], kk = kh * kw;
  const Plane g(s);
  const int64_t row_len = g.row_floats(sw);
  float* plane = scratch;
  float* padded = plane + g.rows * row_len + 16;  // one padded row before its split (sw > 1)
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  // Whole-vector copies may run past a row's Wo outputs into the next row's, which are
  // written after them, but never past the matrix row's ld (the next matrix row may be
  // another thread's).
  const int64_t vecs = (Wo + 15) / 16, plain_rows = std::min(Ho, (ld - 16 * vecs) / Wo + 1);
  // Rows no tap reads are left alone (half of them for a 1x1 stride-2 layer).
  std::vector<char> row_read(g.rows, 0);
  for (int64_t b = 0; b < kh; ++b)
    for (int64_t oh = 0; oh < Ho; ++oh) row_read[oh * sh + b * dh] = 1;
  for (int64_t c = c0; c < c1; ++c) {
    const float* xc = x + c * H * W;
    for (int64_t i = 0; i < g.rows; ++i) {
      if (!row_read[i]) continue;
      float* dst = plane + i * row_len;
      const int64_t ih = i - ph;
      if (ih < 0 || ih >= H) {
        zero_run(dst, row_len);
        continue;
      }
      float* pr = sw == 1 ? dst : padded;
      const float* xr = xc + ih * W;
      zero_run(pr, std::min(pw, g.span));
      if (pw < g.span) copy_run(pr + pw, xr, std::min(W, g.span - pw));
      if (pw + W < g.span) zero_run(pr + pw + W, g.span - pw - W);
      if (sw == 2) {
        for (int64_t l = 0; l < g.phase_len; l += 16) {
          // Lanes past span hold zeros; no run reads them.
          const int64_t left = g.span - 2 * l;
          const __m512 lo = _mm512_maskz_loadu_ps(tail_mask16(std::min<int64_t>(16, left)), pr + 2 * l);
          const __m512 hi = left > 16 ? _mm512_maskz_loadu_ps(tail_mask16(std::min<int64_t>(16, left - 16)),
                                                             pr + 2 * l + 16)
                                      : _mm512_setzero_ps();
          const __mmask16 m = tail_mask16(std::min<int64_t>(16, g.phase_len - l));
          _mm512_mask_storeu_ps(dst + l, m, _mm512_permutex2var_ps(lo, even, hi));
          _mm512_mask_storeu_ps(dst + g.phase_len + l, m, _mm512_permutex2var_ps(lo, odd, hi));
        }
      } else if (sw > 2) {
        for (int64_t q = 0; q < sw; ++q)
          for (int64_t l = 0, j = q; l < g.phase_len; ++l, j += sw) dst[q * g.phase_len + l] = j < g.span ? pr[j] : 0.0f;
      }
    }
    for (int64_t b = 0; b < kh; ++b)
      for (int64_t e = 0; e < kw; ++e) {
        float* out = col + (c * kk + b * kw + e) * ld;
        const float* in = plane + (b * dh * sw + (e * dw) % sw) * g.phase_len + (e * dw) / sw;
        for (int64_t oh = 0; oh < Ho; ++oh, out += Wo, in += sh * row_len) {
          if (oh < plain_rows) {
            for (int64_t v = 0; v < vecs; ++v) _mm512_storeu_ps(out + 16 * v, _mm512_loadu_ps(in + 16 * v));
          } else {
            copy_run(out, in, Wo);
          }
        }
      }
  }
}

int64_t im2col_channels_scratch(const ConvShape& s) {
  const Plane g(s);
  const int64_t sw = s.stride[2];
  // The plane with a vector of slack for the whole-vector copies, then the padded row
  // that sw = 2 splits (its loads reach 2 * phase_len).
  return g.rows * g.row_floats(sw) + 16 + 2 * g.phase_len + 32;
}

void transpose_add_bias(const float* ct, int64_t P, int64_t ldc, const float* bias, float* y, int64_t k0,
                        int64_t k1) {
  for (int64_t kb = k0; kb < k1; kb += 16) {
    const int64_t nk = std::min<int64_t>(16, k1 - kb);
    const __mmask16 km = tail_mask16(nk);
    for (int64_t p0 = 0; p0 < P; p0 += 16) {
      const int64_t np = std::min<int64_t>(16, P - p0);
      __m512 r[16];
      for (int64_t i = 0; i < 16; ++i)
        r[i] = i < np ? _mm512_maskz_loadu_ps(km, ct + (p0 + i) * ldc + kb) : _mm512_setzero_ps();
      CNNFAST_ISA_NS::transpose16(r);
      const __mmask16 pm = tail_mask16(np);
      for (int64_t j = 0; j < nk; ++j) {
        const __m512 v = bias ? _mm512_add_ps(r[j], _mm512_set1_ps(bias[kb + j])) : r[j];
        store_lanes(y + (kb + j) * P + p0, pm, v);
      }
    }
  }
}

}  // namespace cnnfast::cpu::avx512_impl
