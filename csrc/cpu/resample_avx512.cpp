// AVX-512 float32 plane kernels for resample.h, the AVX2 file's scheme on 16 lanes:
// forward combines the D x H source rows of an output row into one row with vector
// FMAs, then gathers each group of 16 outputs' W taps from it; backward scatters the
// W taps of a gradient row into one row (scalar: taps may collide) and adds it into
// the D x H source rows with vector FMAs. Row tails go through masked loads/stores.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "cpu/resample.h"
#include "cpu/simd_math_avx512.h"

namespace cnnfast::cpu::avx512_impl {
namespace {

using namespace cnnfast::avx512;

// row[0:n] = a * src[0:n] (first) or row[0:n] += a * src[0:n]
inline void axpy(float* row, const float* src, float a, int64_t n, bool first) {
  const __m512 va = _mm512_set1_ps(a);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask16(n - i);
    __m512 s = _mm512_mul_ps(va, _mm512_maskz_loadu_ps(m, src + i));
    _mm512_mask_storeu_ps(row + i, m, first ? s : _mm512_add_ps(_mm512_maskz_loadu_ps(m, row + i), s));
  }
}

}  // namespace

void resample_plane_forward(const float* x, float* y, const AxisTable<float>& d, const AxisTable<float>& h,
                            const AxisTable<float>& w, float* row) {
  const int64_t T = w.taps;
  // Lane j of a group reads table entries (ow + j) * T + k: a stride-T gather of the tables.
  const __m512i lane = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                          _mm512_set1_epi32(int(T)));
  const __m512i lane2 = _mm512_add_epi32(lane, lane);
  for (int64_t od = 0; od < d.out; ++od)
    for (int64_t oh = 0; oh < h.out; ++oh) {
      bool first = true;
      for (int64_t kd = 0; kd < d.taps; ++kd)
        for (int64_t kh = 0; kh < h.taps; ++kh) {
          const float a = d.weight[od * d.taps + kd] * h.weight[oh * h.taps + kh];
          axpy(row, x + (d.index[od * d.taps + kd] * h.in + h.index[oh * h.taps + kh]) * w.in, a, w.in, first);
          first = false;
        }
      float* yr = y + (od * h.out + oh) * w.out;
      for (int64_t ow = 0; ow < w.out; ow += 16) {
        const __mmask16 m = tail_mask16(w.out - ow);
        __m512 acc = _mm512_setzero_ps();
        for (int64_t k = 0; k < T; ++k) {
          const int64_t base = ow * T + k;
          // Indices are < in_w, which the binding bounds to int32; the int64 table is read as
          // pairs of 32-bit halves (little-endian), the low half at the even position.
          __m512i idx = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, lane2,
                                                    reinterpret_cast<const int*>(w.index + base), 4);
          __m512 wt = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, lane, w.weight + base, 4);
          acc = _mm512_fmadd_ps(wt, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, row, 4), acc);
        }
        _mm512_mask_storeu_ps(yr + ow, m, acc);
      }
    }
}

void resample_plane_backward(const float* gy, float* gx, const AxisTable<float>& d, const AxisTable<float>& h,
                             const AxisTable<float>& w, float* row) {
  std::fill(gx, gx + d.in * h.in * w.in, 0.0f);
  const int64_t T = w.taps;
  for (int64_t od = 0; od < d.out; ++od)
    for (int64_t oh = 0; oh < h.out; ++oh) {
      const float* gr = gy + (od * h.out + oh) * w.out;
      std::fill(row, row + w.in, 0.0f);
      for (int64_t ow = 0; ow < w.out; ++ow)
        for (int64_t k = 0; k < T; ++k) row[w.index[ow * T + k]] += w.weight[ow * T + k] * gr[ow];
      for (int64_t kd = 0; kd < d.taps; ++kd)
        for (int64_t kh = 0; kh < h.taps; ++kh) {
          const float a = d.weight[od * d.taps + kd] * h.weight[oh * h.taps + kh];
          axpy(gx + (d.index[od * d.taps + kd] * h.in + h.index[oh * h.taps + kh]) * w.in, row, a, w.in, false);
        }
    }
}

}  // namespace cnnfast::cpu::avx512_impl
