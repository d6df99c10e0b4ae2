// The Winograd tile transforms compiled for AVX-512: the kernel transform from the
// generic source (winograd_kernels.h, vectorised by the compiler), and the input and
// output transforms of float written out here, 16 tiles to a zmm.
//
// Why by hand: the generic transforms move every tile element through a scalar load
// with a bounds check (input) or a scalar store (output), lane by lane; on ResNet-50's
// 128-channel 3x3 layer at 28x28, batch 1, they were 40% of the layer. Here the 36
// elements of 16 tiles are gathered straight into vectors (masked at the map's edges),
// and the 16 outputs of each tile position scattered back.
#include <immintrin.h>

#include <algorithm>
#include <climits>

#define CNNFAST_WINO_NS wino_avx512
#define CNNFAST_WINO_LANES 16
#define CNNFAST_WINO_IMPL_NS avx512_impl
#define CNNFAST_WINO_OWN_FLOAT_TRANSFORMS
#include "cpu/winograd_kernels.h"

namespace cnnfast::cpu::avx512_impl {

namespace {

// The lowest image offset of the tiles (the gathers' and scatters' origin), or -1 when
// the offsets from it, plus span, do not fit the 32-bit indices.
int64_t tiles_origin(const WinoTiles& t, int64_t span) {
  if (t.count == 0) return 0;
  int64_t lo = t.base[0], hi = t.base[0];
  for (int64_t i = 1; i < t.count; ++i) lo = std::min(lo, t.base[i]), hi = std::max(hi, t.base[i]);
  return hi - lo + span < INT_MAX ? lo : -1;
}

// Per lane: tile row and column, and the offset of its top-left element from `origin`
// (lanes past L: row far outside, so every mask leaves them out).
struct Lanes {
  __m512i row, col, off;
  __mmask16 live;
};

Lanes lanes(const WinoTiles& t, int64_t t0, int L, int64_t W, int64_t origin) {
  alignas(64) int32_t r[16], c[16], o[16];
  for (int l = 0; l < 16; ++l) {
    if (l < L) {
      r[l] = int32_t(t.row[t0 + l]);
      c[l] = int32_t(t.col[t0 + l]);
      o[l] = int32_t(t.base[t0 + l] - origin + t.row[t0 + l] * W + t.col[t0 + l]);
    } else {
      r[l] = INT_MIN / 2, c[l] = INT_MIN / 2, o[l] = 0;
    }
  }
  return {_mm512_load_si512(r), _mm512_load_si512(c), _mm512_load_si512(o), __mmask16((1u << L) - 1)};
}

// Lanes whose v + i lies in [0, n).
inline __mmask16 in_range(__m512i v, int i, int64_t n);

// The lanes of tiles [t0, t0 + 16) and, for each of the n rows and columns of their
// patches, which lanes it lies inside a H x W map.
template <int n>
Lanes block(const WinoTiles& t, int64_t t0, int64_t H, int64_t W, int64_t origin, __mmask16 (&rows)[n],
            __mmask16 (&cols)[n]) {
  const Lanes ln = lanes(t, t0, int(std::min<int64_t>(16, t.count - t0)), W, origin);
  for (int i = 0; i < n; ++i) rows[i] = in_range(ln.row, i, H) & ln.live, cols[i] = in_range(ln.col, i, W);
  return ln;
}

inline __mmask16 in_range(__m512i v, int i, int64_t n) {
  const __m512i p = _mm512_add_epi32(v, _mm512_set1_epi32(i));
  return _mm512_cmpge_epi32_mask(p, _mm512_setzero_si512()) & _mm512_cmplt_epi32_mask(p, _mm512_set1_epi32(int32_t(n)));
}

// r = B^T applied to six vectors d0..d5 (F(4x4,3x3)'s input matrix, as winograd_kernels.h).
inline void bt6(const __m512 d[6], __m512 r[6]) {
  const __m512 four = _mm512_set1_ps(4.0f), five = _mm512_set1_ps(5.0f), two = _mm512_set1_ps(2.0f);
  r[0] = _mm512_add_ps(_mm512_fnmadd_ps(five, d[2], _mm512_mul_ps(four, d[0])), d[4]);
  r[1] = _mm512_add_ps(_mm512_fnmadd_ps(four, _mm512_add_ps(d[1], d[2]), d[3]), d[4]);
  r[2] = _mm512_fmadd_ps(four, _mm512_sub_ps(d[1], d[2]), _mm512_sub_ps(d[4], d[3]));
  r[3] = _mm512_fmadd_ps(two, _mm512_sub_ps(d[3], d[1]), _mm512_sub_ps(d[4], d[2]));
  r[4] = _mm512_fmadd_ps(two, _mm512_sub_ps(d[1], d[3]), _mm512_sub_ps(d[4], d[2]));
  r[5] = _mm512_add_ps(_mm512_fnmadd_ps(five, d[3], _mm512_mul_ps(four, d[1])), d[5]);
}

// r = A^T applied to six vectors m0..m5 (four results).
inline void at6(const __m512 m[6], __m512 r[4]) {
  const __m512 s12 = _mm512_add_ps(m[1], m[2]), d12 = _mm512_sub_ps(m[1], m[2]);
  const __m512 s34 = _mm512_add_ps(m[3], m[4]), d34 = _mm512_sub_ps(m[3], m[4]);
  r[0] = _mm512_add_ps(_mm512_add_ps(m[0], s12), s34);
  r[1] = _mm512_fmadd_ps(_mm512_set1_ps(2.0f), d34, d12);
  r[2] = _mm512_fmadd_ps(_mm512_set1_ps(4.0f), s34, s12);
  r[3] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.0f), d34, d12), m[5]);
}

}  // namespace

void winograd_input_transform(const float* x, int64_t Cg, int64_t H, int64_t W, const WinoTiles& t, float* V,
                              int64_t nr) {
  const int64_t plane = H * W, origin = tiles_origin(t, Cg * plane + 6 * W + 6);
  if (nr % 16 != 0 || origin < 0) return wino_avx512::input_transform<float>(x, Cg, H, W, t, V, nr);
  const int64_t nt = t.count, xi_stride = wino_avx512::v_xi_stride(Cg, nt, nr);
  const float* x0 = x + origin;
  for (int64_t t0 = 0; t0 < nt; t0 += 16) {
    __mmask16 rows[6], cols[6];
    const Lanes ln = block(t, t0, H, W, origin, rows, cols);
    const bool whole = ln.live == 0xffff;
    for (int64_t c = 0; c < Cg; ++c) {
      const float* src = x0 + c * plane;
      __m512 u[6][6];  // u = B^T d, by columns of d
      for (int j = 0; j < 6; ++j) {
        __m512 d[6];
        for (int i = 0; i < 6; ++i) {
          const __m512i idx = _mm512_add_epi32(ln.off, _mm512_set1_epi32(int32_t(i * W + j)));
          d[i] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), rows[i] & cols[j], idx, src, 4);
        }
        __m512 r[6];
        bt6(d, r);
        for (int i = 0; i < 6; ++i) u[i][j] = r[i];
      }
      float* out = V + wino_avx512::v_offset(c, t0, Cg, nt, nr);
      for (int i = 0; i < 6; ++i) {
        __m512 v[6];
        bt6(u[i], v);
        for (int j = 0; j < 6; ++j) {
          float* o = out + (i * 6 + j) * xi_stride;
          if (whole) _mm512_storeu_ps(o, v[j]);
          else _mm512_mask_storeu_ps(o, ln.live, v[j]);
        }
      }
    }
  }
}

void winograd_output_transform(const float* M, int64_t Kg, int64_t Ho, int64_t Wo, const WinoTiles& t,
                               const float* bias, float* y) {
  const int64_t plane = Ho * Wo, origin = tiles_origin(t, Kg * plane + 4 * Wo + 4);
  if (origin < 0) return wino_avx512::output_transform<float>(M, Kg, Ho, Wo, t, bias, y);
  const int64_t nt = t.count, xi_stride = wino_avx512::m_xi_stride(Kg, nt);
  float* y0 = y + origin;
  for (int64_t t0 = 0; t0 < nt; t0 += 16) {
    __mmask16 rows[4], cols[4];
    const Lanes ln = block(t, t0, Ho, Wo, origin, rows, cols);
    for (int64_t k = 0; k < Kg; ++k) {
      const float* in = M + k * nt + t0;
      __m512 u[4][6];  // u = A^T m, by columns of m
      for (int j = 0; j < 6; ++j) {
        __m512 m[6];
        for (int i = 0; i < 6; ++i) m[i] = _mm512_maskz_loadu_ps(ln.live, in + (i * 6 + j) * xi_stride);
        __m512 r[4];
        at6(m, r);
        for (int i = 0; i < 4; ++i) u[i][j] = r[i];
      }
      const __m512 bk = _mm512_set1_ps(bias ? bias[k] : 0.0f);
      float* dst = y0 + k * plane;
      for (int i = 0; i < 4; ++i) {
        __m512 o[4];
        at6(u[i], o);
        for (int j = 0; j < 4; ++j) {
          const __m512i idx = _mm512_add_epi32(ln.off, _mm512_set1_epi32(int32_t(i * Wo + j)));
          _mm512_mask_i32scatter_ps(dst, rows[i] & cols[j], idx, _mm512_add_ps(o[j], bk), 4);
        }
      }
    }
  }
}

}  // namespace cnnfast::cpu::avx512_impl
