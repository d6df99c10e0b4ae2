// AVX-512 float32 plane kernels for resample.h, the AVX2 file's scheme on 16 lanes:
// forward combines the D x H source rows of an output row into one row with vector
// FMAs, then picks each group of 16 outputs' W taps from it (by permutes within one
// 16-value window where the taps fit, as in every upsampling; by gathers, which are
// slow on Zen 4, otherwise); backward scatters the
// W taps of a gradient row into one row (scalar: taps may collide) and adds it into
// the D x H source rows with vector FMAs. Row tails go through masked loads/stores.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "cpu/resample.h"
#include "cpu/resample_rows.h"
#include "cpu/simd_math_avx512.h"

namespace cnnfast::cpu::avx512_impl {
namespace {

using namespace cnnfast::avx512;

// row[0:n] = a * src[0:n] (first) or row[0:n] += a * src[0:n]
inline void axpy(float* row, const float* src, float a, int64_t n, bool first) {
  const __m512 va = _mm512_set1_ps(a);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask16(n - i);
    __m512 s = _mm512_mul_ps(va, load_lanes(m, src + i));
    store_lanes(row + i, m, first ? s : _mm512_add_ps(load_lanes(m, row + i), s));
  }
}

}  // namespace

void resample_plane_forward(const float* x, float* y, const AxisTable<float>& d, const AxisTable<float>& h,
                            const AxisTable<float>& w, float* row, const int32_t* tidx, const float* twt) {
  const int64_t T = w.taps, groups = (w.out + 15) / 16, stride = groups * 16;
  for (int64_t od = 0; od < d.out; ++od)
    for (int64_t oh = 0; oh < h.out; ++oh) {
      CNNFAST_ISA_NS::combine_rows(x, d, h, w, od, oh, row, axpy);
      float* yr = y + (od * h.out + oh) * w.out;
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t ow = g * 16;
        const __mmask16 m = tail_mask16(w.out - ow);
        // Upsampling reads at most 16 consecutive source values per group of 16 outputs:
        // then one load of row[base, base + 16) and in-register permutes replace the gathers.
        int32_t base = tidx[ow];
        for (int64_t k = 1; k < T; ++k) base = std::min(base, tidx[k * stride + ow]);
        const __m512i vbase = _mm512_set1_epi32(base);
        __mmask16 far = 0;
        for (int64_t k = 0; k < T; ++k) {
          __m512i local = _mm512_sub_epi32(_mm512_loadu_si512(tidx + k * stride + ow), vbase);
          far |= _mm512_cmpge_epu32_mask(local, _mm512_set1_epi32(16));
        }
        __m512 acc = _mm512_setzero_ps();
        if (!(far & m)) {
          const __m512 src = load_lanes(tail_mask16(w.in - base), row + base);
          for (int64_t k = 0; k < T; ++k) {
            __m512i local = _mm512_sub_epi32(_mm512_loadu_si512(tidx + k * stride + ow), vbase);
            acc = _mm512_fmadd_ps(_mm512_loadu_ps(twt + k * stride + ow), _mm512_permutexvar_ps(local, src), acc);
          }
        } else {
          for (int64_t k = 0; k < T; ++k) {
            __m512i idx = _mm512_loadu_si512(tidx + k * stride + ow);
            acc = _mm512_fmadd_ps(_mm512_loadu_ps(twt + k * stride + ow),
                                  _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, row, 4), acc);
          }
        }
        store_lanes(yr + ow, m, acc);
      }
    }
}

void resample_plane_backward(const float* gy, float* gx, const AxisTable<float>& d, const AxisTable<float>& h,
                             const AxisTable<float>& w, float* row) {
  CNNFAST_ISA_NS::plane_backward_rows(gy, gx, d, h, w, row, axpy);
}

}  // namespace cnnfast::cpu::avx512_impl
