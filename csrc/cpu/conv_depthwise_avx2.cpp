// The depthwise plane kernels compiled for AVX2+FMA (source: conv_depthwise.h),
// plus a register-blocked 2-D kernel for the common small square kernels
// (3x3, 5x5) at stride 1, dilation 1 (dw_direct_plane below).
#include <immintrin.h>


#define CNNFAST_DW_NS dw_avx2
#include "core/scratch.h"
#include "cpu/conv_depthwise.h"

namespace cnnfast::cpu::avx2_impl {

void dw_forward_plane(const ConvShape& s, const float* x, const float* w, float* y) {
  dw_avx2::dw_forward_plane<float>(s, x, w, y);
}
void dw_forward_plane_padded(const ConvShape& s, const float* x, const float* w, float* y, float* scratch) {
  dw_avx2::dw_forward_plane_padded<float>(s, x, w, y, scratch);
}
void dw_backward_data_plane(const ConvShape& s, const float* gy, const float* w, float* gx) {
  dw_avx2::dw_backward_data_plane<float>(s, gy, w, gx);
}
void dw_backward_weight_plane(const ConvShape& s, const float* gy, const float* x, float* gw) {
  dw_avx2::dw_backward_weight_plane<float>(s, gy, x, gw);
}

namespace {

// Two output rows per pass share KH+1 input rows: each input vector is loaded
// once and feeds up to two accumulators, and the KW taps along W are unaligned
// loads at consecutive offsets (no shuffles; loads are cheaper than the
// permutes on this core). Rows above/below the input point at a zero row, so
// the row loop has no branches; only the columns whose taps leave the input
// along W (pad columns, at most KW-1 per side) take the scalar path. The
// last vector block overlaps the previous one instead of dropping to scalar.
template <int KH, int KW>
void direct_plane(const float* x, int64_t H, int64_t W, const float* w, float bias, float* y, int64_t Ho,
                  int64_t Wo, int64_t ph, int64_t pw, const float* zero) {
  constexpr int R = 2, NR = KH + R - 1;
  __m256 wv[KH][KW];
  for (int b = 0; b < KH; ++b)
    for (int e = 0; e < KW; ++e) wv[b][e] = _mm256_broadcast_ss(w + b * KW + e);
  const __m256 vb = _mm256_set1_ps(bias);
  // Columns ow with every tap inside the input: pw <= ow and ow - pw + KW <= W.
  int64_t c0 = pw, c1 = W + pw - KW + 1;
  if (c1 > Wo) c1 = Wo;
  if (c0 > c1) c0 = c1;
  const bool vec = c1 - c0 >= 8;
  auto scalar_col = [&](const float* const* rows, float* out, int64_t ow) {
    float acc = bias;
    for (int b = 0; b < KH; ++b)
      for (int e = 0; e < KW; ++e) {
        const int64_t iw = ow - pw + e;
        if (iw >= 0 && iw < W) acc += w[b * KW + e] * rows[b][iw];
      }
    out[ow] = acc;
  };
  int64_t oh = 0;
  for (; oh < Ho; oh += R) {
    const int nr = Ho - oh >= R ? R : 1;
    const float* rows[NR];
    for (int r = 0; r < NR; ++r) {
      const int64_t ih = oh - ph + r;
      rows[r] = (ih >= 0 && ih < H) ? x + ih * W : zero;
    }
    float* out0 = y + oh * Wo;
    float* out1 = out0 + Wo;
    if (vec) {
      auto block = [&](int64_t ow) {
        __m256 a0 = vb, a1 = vb;
        const int64_t iw = ow - pw;
        for (int r = 0; r < NR; ++r)
          for (int e = 0; e < KW; ++e) {
            const __m256 v = _mm256_loadu_ps(rows[r] + iw + e);
            if (r < KH) a0 = _mm256_fmadd_ps(wv[r][e], v, a0);
            if (r >= 1) a1 = _mm256_fmadd_ps(wv[r - 1][e], v, a1);
          }
        _mm256_storeu_ps(out0 + ow, a0);
        if (nr == 2) _mm256_storeu_ps(out1 + ow, a1);
      };
      int64_t ow = c0;
      for (; ow + 8 <= c1; ow += 8) block(ow);
      if (ow < c1) block(c1 - 8);
      for (int64_t o = 0; o < c0; ++o) {
        scalar_col(rows, out0, o);
        if (nr == 2) scalar_col(rows + 1, out1, o);
      }
      for (int64_t o = c1; o < Wo; ++o) {
        scalar_col(rows, out0, o);
        if (nr == 2) scalar_col(rows + 1, out1, o);
      }
    } else {
      for (int64_t o = 0; o < Wo; ++o) {
        scalar_col(rows, out0, o);
        if (nr == 2) scalar_col(rows + 1, out1, o);
      }
    }
  }
}

// gw[b][e] += sum over (oh, ow) of gy[oh][ow] * x[oh - ph + b][ow - pw + e]: one
// pass over the plane with a vector accumulator per tap (instead of one pass
// per tap); the columns outside the 8-wide blocks of the all-taps-inside range
// go to scalar sums. Fixed summation order for a given shape.
template <int KH, int KW>
void direct_weight_plane(const float* gy, const float* x, int64_t H, int64_t W, int64_t Ho, int64_t Wo, int64_t ph,
                         int64_t pw, const float* zero, float* gw) {
  __m256 acc[KH][KW];
  float tail[KH][KW] = {};
  for (int b = 0; b < KH; ++b)
    for (int e = 0; e < KW; ++e) acc[b][e] = _mm256_setzero_ps();
  int64_t c0 = pw, c1 = W + pw - KW + 1;
  if (c1 > Wo) c1 = Wo;
  if (c0 > c1) c0 = c1;
  const int64_t cv = c0 + (c1 - c0) / 8 * 8;
  for (int64_t oh = 0; oh < Ho; ++oh) {
    const float* rows[KH];
    for (int b = 0; b < KH; ++b) {
      const int64_t ih = oh - ph + b;
      rows[b] = (ih >= 0 && ih < H) ? x + ih * W : zero;
    }
    const float* g = gy + oh * Wo;
    for (int64_t ow = c0; ow < cv; ow += 8) {
      const __m256 gv = _mm256_loadu_ps(g + ow);
      for (int b = 0; b < KH; ++b)
        for (int e = 0; e < KW; ++e)
          acc[b][e] = _mm256_fmadd_ps(gv, _mm256_loadu_ps(rows[b] + ow - pw + e), acc[b][e]);
    }
    auto scalar_col = [&](int64_t ow) {
      const float gv = g[ow];
      for (int b = 0; b < KH; ++b)
        for (int e = 0; e < KW; ++e) {
          const int64_t iw = ow - pw + e;
          if (iw >= 0 && iw < W) tail[b][e] += gv * rows[b][iw];
        }
    };
    for (int64_t ow = 0; ow < c0; ++ow) scalar_col(ow);
    for (int64_t ow = cv; ow < Wo; ++ow) scalar_col(ow);
  }
  for (int b = 0; b < KH; ++b)
    for (int e = 0; e < KW; ++e) {
      alignas(32) float v[8];
      _mm256_store_ps(v, acc[b][e]);
      const float sum = ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
      gw[b * KW + e] += sum + tail[b][e];
    }
}

}  // namespace

void dw_direct_weight_plane(const ConvShape& s, const float* gy, const float* x, float* gw) {
  const float* zero = thread_zero_floats(s.in[2]);
  const int64_t H = s.in[1], W = s.in[2], Ho = s.out[1], Wo = s.out[2];
  if (s.k[1] == 3)
    direct_weight_plane<3, 3>(gy, x, H, W, Ho, Wo, s.pad0[1], s.pad0[2], zero, gw);
  else
    direct_weight_plane<5, 5>(gy, x, H, W, Ho, Wo, s.pad0[1], s.pad0[2], zero, gw);
}

bool dw_direct_applicable(const ConvShape& s) {
  if (s.in[0] != 1 || s.out[0] != 1 || s.k[0] != 1) return false;
  if (s.stride[1] != 1 || s.stride[2] != 1 || s.dil[1] != 1 || s.dil[2] != 1) return false;
  if (!((s.k[1] == 3 && s.k[2] == 3) || (s.k[1] == 5 && s.k[2] == 5))) return false;
  // Only rows/columns that meet the input at least once, so the zero row and
  // the column range logic stay simple.
  return s.pad0[1] < s.k[1] && s.pad0[2] < s.k[2] && s.pad1[1] < s.k[1] && s.pad1[2] < s.k[2] &&
         s.pad0[1] >= 0 && s.pad0[2] >= 0;
}

void dw_direct_plane(const ConvShape& s, const float* x, const float* w, float bias, float* y) {
  const float* zero = thread_zero_floats(s.in[2]);
  const int64_t H = s.in[1], W = s.in[2], Ho = s.out[1], Wo = s.out[2];
  if (s.k[1] == 3)
    direct_plane<3, 3>(x, H, W, w, bias, y, Ho, Wo, s.pad0[1], s.pad0[2], zero);
  else
    direct_plane<5, 5>(x, H, W, w, bias, y, Ho, Wo, s.pad0[1], s.pad0[2], zero);
}

}  // namespace cnnfast::cpu::avx2_impl
