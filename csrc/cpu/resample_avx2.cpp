// AVX2+FMA float32 plane kernels for resample.h. Forward: for each output row,
// the D x H source rows are combined into one row with vector FMAs (contiguous,
// full width), then each group of 8 outputs gathers its W taps from that row.
// Backward is the transpose: W taps scatter (scalar, they may collide) into one
// row, which is then added into the D x H source rows with vector FMAs.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "cpu/resample.h"
#include "cpu/resample_rows.h"
#include "cpu/simd_math_avx2.h"

namespace cnnfast::cpu::avx2_impl {
namespace {

using namespace cnnfast::avx2;

// row[0:n] (+)= a * src[0:n]
inline void axpy(float* row, const float* src, float a, int64_t n, bool first) {
  const __m256 va = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 s = _mm256_mul_ps(va, _mm256_loadu_ps(src + i));
    _mm256_storeu_ps(row + i, first ? s : _mm256_add_ps(_mm256_loadu_ps(row + i), s));
  }
  for (; i < n; ++i) row[i] = first ? a * src[i] : row[i] + a * src[i];
}

}  // namespace

void resample_plane_forward(const float* x, float* y, const AxisTable<float>& d, const AxisTable<float>& h,
                            const AxisTable<float>& w, float* row) {
  const int64_t T = w.taps;
  for (int64_t od = 0; od < d.out; ++od)
    for (int64_t oh = 0; oh < h.out; ++oh) {
      CNNFAST_ISA_NS::combine_rows(x, d, h, w, od, oh, row, axpy);
      float* yr = y + (od * h.out + oh) * w.out;
      int64_t ow = 0;
      // Lane j of a group reads table entries (ow + j) * T + k: a stride-T gather of the tables.
      const __m256i lane = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(int(T)));
      for (; ow + 8 <= w.out; ow += 8) {
        __m256 acc = _mm256_setzero_ps();
        for (int64_t k = 0; k < T; ++k) {
          const int64_t base = ow * T + k;
          // Indices are < in_w, which the binding bounds to int32; the int64 table is read as
          // pairs of 32-bit halves (little-endian), the low half at the even position.
          __m256i idx = _mm256_i32gather_epi32(reinterpret_cast<const int*>(w.index + base),
                                               _mm256_add_epi32(lane, lane), 4);
          __m256 wt = _mm256_i32gather_ps(w.weight + base, lane, 4);
          acc = _mm256_fmadd_ps(wt, _mm256_i32gather_ps(row, idx, 4), acc);
        }
        _mm256_storeu_ps(yr + ow, acc);
      }
      for (; ow < w.out; ++ow) {
        float acc = 0;
        for (int64_t k = 0; k < T; ++k) acc += w.weight[ow * T + k] * row[w.index[ow * T + k]];
        yr[ow] = acc;
      }
    }
}

void resample_plane_backward(const float* gy, float* gx, const AxisTable<float>& d, const AxisTable<float>& h,
                             const AxisTable<float>& w, float* row) {
  CNNFAST_ISA_NS::plane_backward_rows(gy, gx, d, h, w, row, axpy);
}

}  // namespace cnnfast::cpu::avx2_impl
