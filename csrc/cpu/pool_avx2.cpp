// AVX2 float32 pooling pieces: 8 adjacent outputs of one row at a time.
//
// Each lane runs the scalar reference's loop in the same order (window rows,
// then taps), so results and tie-breaking match the scalar path exactly: the
// max uses the same "greater, or NaN" update, the average the same summation
// order and a true division. Strided inputs are fetched with a plain load
// (stride 1), an even-lane deinterleave of two loads (stride 2, the common
// 2x2/3x3 stride-2 pools), or a gather otherwise.
#include <immintrin.h>

#include <cmath>
#include <limits>

#include "cpu/pool.h"
#include "cpu/simd_math_avx2.h"

namespace cnnfast::cpu::avx2_impl {
namespace {

// Lanes 0, s, 2s, ... 7s relative to q. two_ok: q[0..15] may be read.
inline __m256 load_strided(const float* q, int64_t s, __m256i lane_s, bool two_ok) {
  if (s == 1) return _mm256_loadu_ps(q);
  if (s == 2 && two_ok) {
    const __m256 a = _mm256_loadu_ps(q), b = _mm256_loadu_ps(q + 8);
    // a0 a2 b0 b2 | a4 a6 b4 b6 -> a0 a2 a4 a6 b0 b2 b4 b6
    const __m256 ev = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(ev), _MM_SHUFFLE(3, 1, 2, 0)));
  }
  return _mm256_i32gather_ps(q, lane_s, 4);
}

inline __m256i lane_times(int64_t s) {
  const int si = static_cast<int>(s);
  return _mm256_setr_epi32(0, si, 2 * si, 3 * si, 4 * si, 5 * si, 6 * si, 7 * si);
}

}  // namespace

namespace {

template <bool kIndices>
int64_t max_pool_row_impl(const float* plane, const int64_t* rows, int64_t nrows, int64_t ow_begin, int64_t ow_end,
                          int64_t in_w, int64_t s, int64_t p, int64_t k, int64_t d, float* y, int64_t* indices) {
  const __m256i lane_s = lane_times(s);
  const __m256 ninf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t ow = ow_begin;
  for (; ow + 8 <= ow_end; ow += 8) {
    const int64_t w0 = ow * s - p;
    // The furthest element a stride-2 double load touches, for every tap.
    const bool two_ok = w0 + (k - 1) * d + 16 <= in_w;
    __m256 best = ninf;
    // Interior windows start in bounds, so the initial index is the first tap of the first row.
    __m256i bi = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(rows[0] + w0)), lane_s);
    for (int64_t r = 0; r < nrows; ++r) {
      const float* xr = plane + rows[r] + w0;
      for (int64_t kw = 0; kw < k; ++kw) {
        const __m256 v = load_strided(xr + kw * d, s, lane_s, two_ok);
        const __m256 take = _mm256_or_ps(_mm256_cmp_ps(v, best, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        best = _mm256_blendv_ps(best, v, take);
        if constexpr (kIndices) {
          const __m256i at =
              _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(rows[r] + w0 + kw * d)), lane_s);
          bi = _mm256_blendv_epi8(bi, at, _mm256_castps_si256(take));
        }
      }
    }
    _mm256_storeu_ps(y + (ow - ow_begin), best);
    if constexpr (kIndices) {
      int64_t* ip = indices + (ow - ow_begin);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(ip), _mm256_cvtepi32_epi64(_mm256_castsi256_si128(bi)));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(ip + 4),
                          _mm256_cvtepi32_epi64(_mm256_extracti128_si256(bi, 1)));
    }
  }
  return ow - ow_begin;
}

}  // namespace

int64_t max_pool_row(const float* plane, const int64_t* rows, int64_t nrows, int64_t ow_begin, int64_t ow_end,
                     int64_t in_w, int64_t s, int64_t p, int64_t k, int64_t d, float* y, int64_t* indices) {
  // Gather offsets are int32; a stride that large is left to the scalar path.
  if (s > (int64_t(1) << 27)) return 0;
  if (indices) return max_pool_row_impl<true>(plane, rows, nrows, ow_begin, ow_end, in_w, s, p, k, d, y, indices);
  return max_pool_row_impl<false>(plane, rows, nrows, ow_begin, ow_end, in_w, s, p, k, d, y, nullptr);
}

int64_t avg_pool_row(const float* plane, const int64_t* rows, int64_t nrows, int64_t ow_begin, int64_t ow_end,
                     int64_t in_w, int64_t s, int64_t p, int64_t k, float divisor, float* y) {
  if (s > (int64_t(1) << 27)) return 0;
  const __m256i lane_s = lane_times(s);
  const __m256 div = _mm256_set1_ps(divisor);
  int64_t ow = ow_begin;
  for (; ow + 8 <= ow_end; ow += 8) {
    const int64_t w0 = ow * s - p;
    const bool two_ok = w0 + (k - 1) + 16 <= in_w;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t r = 0; r < nrows; ++r) {
      const float* xr = plane + rows[r] + w0;
      for (int64_t kw = 0; kw < k; ++kw) acc = _mm256_add_ps(acc, load_strided(xr + kw, s, lane_s, two_ok));
    }
    _mm256_storeu_ps(y + (ow - ow_begin), _mm256_div_ps(acc, div));
  }
  return ow - ow_begin;
}

float sum(const float* x, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_loadu_ps(x + i));
    a1 = _mm256_add_ps(a1, _mm256_loadu_ps(x + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_loadu_ps(x + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_loadu_ps(x + i + 24));
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_add_ps(a0, _mm256_loadu_ps(x + i));
  if (i < n) {
    const __m256i m = avx2::tail_mask(static_cast<int>(n - i));
    a1 = _mm256_add_ps(a1, _mm256_maskload_ps(x + i, m));
  }
  return avx2::hsum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}

void argmax(const float* x, int64_t n, float* best_out, int64_t* index_out) {
  const __m256i eight = _mm256_set1_epi32(8);
  __m256i at = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  __m256 best = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  __m256i bi = at;
  int64_t i = 0;
  // Int32 lane indices: rows longer than 2^31 are not a pooling window.
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 take = _mm256_or_ps(_mm256_cmp_ps(v, best, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    best = _mm256_blendv_ps(best, v, take);
    bi = _mm256_blendv_epi8(bi, at, _mm256_castps_si256(take));
    at = _mm256_add_epi32(at, eight);
  }
  alignas(32) float bv[8];
  alignas(32) int32_t bx[8];
  _mm256_store_ps(bv, best);
  _mm256_store_si256(reinterpret_cast<__m256i*>(bx), bi);
  // Merge the lanes into the scan-order winner: the last NaN if any, else the
  // first (lowest index) maximum.
  float m = -std::numeric_limits<float>::infinity();
  int64_t mi = 0;
  bool nan = false;
  for (int l = 0; l < 8 && i > 0; ++l) {
    if (std::isnan(bv[l])) {
      if (!nan || bx[l] > mi) mi = bx[l];
      nan = true;
      m = bv[l];
    } else if (!nan && (bv[l] > m || (bv[l] == m && bx[l] < mi))) {
      m = bv[l];
      mi = bx[l];
    }
  }
  // A window of all -inf keeps its first element, as the scalar rule does.
  if (!nan && m == -std::numeric_limits<float>::infinity()) mi = 0;
  for (; i < n; ++i) {
    if (x[i] > m || std::isnan(x[i])) {
      m = x[i];
      mi = i;
    }
  }
  *best_out = m;
  *index_out = mi;
}

}  // namespace cnnfast::cpu::avx2_impl
