// AVX2 float32 pooling pieces: max/average windows for 8 adjacent outputs of
// one row at a time, the contiguous reductions of adaptive and global pooling
// (row sum, sums of 8 small planes at once, scan-order argmax), and adaptive
// pooling of 8 small planes at once through a transposed copy.
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

// Runs block(ow) for ow = begin, begin+8, ... and, when a partial block is
// left, once more for the last 8 outputs (recomputing a few, with identical
// results) so the row's tail does not fall back to scalar code. Returns how
// many outputs from begin were written.
template <class Block>
inline int64_t blocks(int64_t begin, int64_t end, Block&& block) {
  if (end - begin < 8) return 0;
  int64_t ow = begin;
  for (; ow + 8 <= end; ow += 8) block(ow);
  if (ow < end) block(end - 8);
  return end - begin;
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
  auto block = [&](int64_t ow) {
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
  };
  return blocks(ow_begin, ow_end, block);
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
  auto block = [&](int64_t ow) {
    const int64_t w0 = ow * s - p;
    const bool two_ok = w0 + (k - 1) + 16 <= in_w;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t r = 0; r < nrows; ++r) {
      const float* xr = plane + rows[r] + w0;
      for (int64_t kw = 0; kw < k; ++kw) acc = _mm256_add_ps(acc, load_strided(xr + kw, s, lane_s, two_ok));
    }
    _mm256_storeu_ps(y + (ow - ow_begin), _mm256_div_ps(acc, div));
  };
  return blocks(ow_begin, ow_end, block);
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

namespace {

// One register's worth of a plane's partial sums (unrolled by two for small planes).
inline __m256 plane_partial(const float* x, int64_t len, __m256i tail) {
  __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= len; i += 16) {
    a = _mm256_add_ps(a, _mm256_loadu_ps(x + i));
    b = _mm256_add_ps(b, _mm256_loadu_ps(x + i + 8));
  }
  if (i + 8 <= len) {
    a = _mm256_add_ps(a, _mm256_loadu_ps(x + i));
    i += 8;
  }
  if (i < len) b = _mm256_add_ps(b, _mm256_maskload_ps(x + i, tail));
  return _mm256_add_ps(a, b);
}

}  // namespace

void sum_planes(const float* x, int64_t planes, int64_t len, float* out) {
  const __m256i tail = avx2::tail_mask(static_cast<int>(len % 8));
  int64_t p = 0;
  // Eight planes at a time: their partial-sum registers are reduced together
  // by a tree of horizontal adds, instead of eight separate horizontal sums.
  for (; p + 8 <= planes; p += 8) {
    const float* b = x + p * len;
    __m256 a[8];
    for (int j = 0; j < 8; ++j) a[j] = plane_partial(b + j * len, len, tail);
    const __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
    const __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
    const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
    // u0 = [s0..s3 of elements 0-3 | s0..s3 of elements 4-7], u1 likewise for s4..s7.
    _mm256_storeu_ps(out + p, _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31)));
  }
  for (; p < planes; ++p) out[p] = avx2::hsum8(plane_partial(x + p * len, len, tail));
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

// ---- adaptive pooling, 8 planes at a time ---------------------------------------

using cnnfast::avx2::tail_mask;

namespace {

inline void transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// dst[i*8 + p] = src[p*n + i] for 8 planes p of n values.
void planes_to_lanes(const float* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; i += 8) {
    const int64_t w = n - i < 8 ? n - i : 8;
    const __m256i m = tail_mask(static_cast<int>(w));
    __m256 r[8];
    for (int p = 0; p < 8; ++p) r[p] = w == 8 ? _mm256_loadu_ps(src + p * n + i) : _mm256_maskload_ps(src + p * n + i, m);
    transpose8(r);
    for (int64_t j = 0; j < w; ++j) _mm256_store_ps(dst + (i + j) * 8, r[j]);
  }
}

// Rows i..i+7 of an [n][8] lane block (zeros past n), transposed: r[p] holds lane p's 8 values.
inline void load_lanes_transposed(const float* src, int64_t n, int64_t i, __m256 r[8]) {
  const int64_t w = n - i < 8 ? n - i : 8;
  for (int64_t j = 0; j < 8; ++j) r[j] = j < w ? _mm256_load_ps(src + (i + j) * 8) : _mm256_setzero_ps();
  transpose8(r);
}

// The inverse of planes_to_lanes: dst[p*n + i] = src[i*8 + p].
void lanes_to_planes(const float* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; i += 8) {
    const int64_t w = n - i < 8 ? n - i : 8;
    const __m256i m = tail_mask(static_cast<int>(w));
    __m256 r[8];
    load_lanes_transposed(src, n, i, r);
    for (int p = 0; p < 8; ++p) {
      if (w == 8) _mm256_storeu_ps(dst + p * n + i, r[p]);
      else _mm256_maskstore_ps(dst + p * n + i, m, r[p]);
    }
  }
}

// Divided one extent at a time, as the scalar reference (and PyTorch).
inline __m256 divide_extents(__m256 acc, const float* e) {
  acc = _mm256_div_ps(acc, _mm256_set1_ps(e[0]));
  acc = _mm256_div_ps(acc, _mm256_set1_ps(e[1]));
  return _mm256_div_ps(acc, _mm256_set1_ps(e[2]));
}

}  // namespace

void adaptive_avg_planes8(const float* x, int64_t ip, int64_t op, const AdaptiveTaps& t, float* scratch, float* y) {
  float* in = scratch;
  float* out = scratch + ip * 8;
  planes_to_lanes(x, ip, in);
  for (int64_t c = 0; c < op; ++c) {
    __m256 acc = _mm256_setzero_ps();
    for (int32_t k = t.start[c]; k < t.start[c + 1]; ++k) acc = _mm256_add_ps(acc, _mm256_load_ps(in + t.off[k] * 8));
    _mm256_store_ps(out + c * 8, divide_extents(acc, t.ext + 3 * c));
  }
  lanes_to_planes(out, op, y);
}

void adaptive_max_planes8(const float* x, int64_t ip, int64_t op, const AdaptiveTaps& t, float* scratch, float* y,
                          int64_t* indices) {
  float* in = scratch;
  float* out = scratch + ip * 8;
  float* where = out + op * 8;
  planes_to_lanes(x, ip, in);
  const __m256 ninf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t c = 0; c < op; ++c) {
    const int32_t k0 = t.start[c], k1 = t.start[c + 1];
    __m256 best = ninf;
    // In-plane offsets travel as int32 bit patterns in float lanes; blends only move them.
    __m256 at = _mm256_castsi256_ps(_mm256_set1_epi32(t.off[k0]));
    for (int32_t k = k0; k < k1; ++k) {
      const __m256 v = _mm256_load_ps(in + t.off[k] * 8);
      const __m256 take = _mm256_or_ps(_mm256_cmp_ps(v, best, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
      best = _mm256_blendv_ps(best, v, take);
      at = _mm256_blendv_ps(at, _mm256_castsi256_ps(_mm256_set1_epi32(t.off[k])), take);
    }
    _mm256_store_ps(out + c * 8, best);
    _mm256_store_ps(where + c * 8, at);
  }
  lanes_to_planes(out, op, y);
  // The offsets, transposed like the values, widen to int64 on the way out.
  for (int64_t i = 0; i < op; i += 8) {
    const int64_t w = op - i < 8 ? op - i : 8;
    __m256 r[8];
    load_lanes_transposed(where, op, i, r);
    const __m256i lo_mask = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(tail_mask(static_cast<int>(w))));
    const __m256i hi_mask = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(tail_mask(static_cast<int>(w > 4 ? w - 4 : 0))));
    for (int p = 0; p < 8; ++p) {
      const __m256i v = _mm256_castps_si256(r[p]);
      long long* dst = reinterpret_cast<long long*>(indices + p * op + i);
      const __m256i lo = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(v));
      const __m256i hi = _mm256_cvtepi32_epi64(_mm256_extracti128_si256(v, 1));
      if (w == 8) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), lo);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 4), hi);
      } else {
        _mm256_maskstore_epi64(dst, lo_mask, lo);
        if (w > 4) _mm256_maskstore_epi64(dst + 4, hi_mask, hi);
      }
    }
  }
}

void adaptive_avg_backward_planes8(const float* gy, int64_t ip, int64_t op, const AdaptiveTaps& t, float* scratch,
                                   float* gx) {
  float* acc = scratch;
  float* g = scratch + ip * 8;
  planes_to_lanes(gy, op, g);
  for (int64_t i = 0; i < ip * 8; i += 8) _mm256_store_ps(acc + i, _mm256_setzero_ps());
  // Cells in order, each adding its share to its window: every input element
  // receives its terms in the scalar reference's order.
  for (int64_t c = 0; c < op; ++c) {
    const __m256 delta = divide_extents(_mm256_load_ps(g + c * 8), t.ext + 3 * c);
    for (int32_t k = t.start[c]; k < t.start[c + 1]; ++k) {
      float* a = acc + t.off[k] * 8;
      _mm256_store_ps(a, _mm256_add_ps(_mm256_load_ps(a), delta));
    }
  }
  lanes_to_planes(acc, ip, gx);
}

}  // namespace cnnfast::cpu::avx2_impl
