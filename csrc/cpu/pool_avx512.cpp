// AVX-512 float32 max pooling without indices, separable: every input row a
// task meets is reduced over the kernel's W taps once, into a slot of scratch
// where it stays while the output rows whose windows contain it need it, and
// each output row is then the fold of its window's reduced rows. A 3x3/2 pool
// so reads each input row once for W instead of once per overlapping window.
//
// Bit-identical to the scalar reference, NaN payloads and signed zeros included:
// its update "take v if v > best or v is NaN" is associative (the result is the
// last NaN in scan order, else the first maximum), so folding each row's taps in
// W order and then the rows in (D, H) order is only a regrouping of its scan.
// Padding is -inf, which that update never takes over an input element.
#include <immintrin.h>

#include <cstdint>
#include <limits>
#include <utility>

#include "cpu/pool.h"
#include "cpu/simd_math_avx512.h"

namespace cnnfast::cpu::avx512_impl {
namespace {

using cnnfast::avx512::tail_mask16;

// The scalar reference's update. VMAXPS returns its second operand when either
// is NaN and on equal zeros, so max(v, best) is "v if v > best, else best"
// except for a NaN v, which the mask takes directly.
inline __m512 fold(__m512 best, __m512 v) {
  return _mm512_mask_max_ps(v, _mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v, best);
}

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Lanes of a block's loads that fall inside the row, as one bit per position
// q + i for i in [0, 64): a load at q + o then takes bits [o, o + 16).
inline uint64_t valid_bits(int64_t n, int64_t q) {
  const int64_t lo = q < 0 ? -q : 0, hi = n - q;
  if (hi <= lo) return 0;
  const uint64_t below_hi = hi >= 64 ? ~uint64_t(0) : (uint64_t(1) << hi) - 1;
  return lo >= 64 ? 0 : below_hi & ~((uint64_t(1) << lo) - 1);
}

// Row elements [q + o, q + o + 16), -inf outside the row. Edge blocks read through
// masks (masked-off lanes are not read, so the address may lie outside the row);
// `bits` is valid_bits(n, q) when the block's loads reach no further than q + 64.
template <bool kEdge>
inline __m512 load_row(const float* x, int64_t n, int64_t q, int64_t o, uint64_t bits, bool wide) {
  if constexpr (!kEdge) return _mm512_loadu_ps(x + q + o);
  const __mmask16 m = wide ? static_cast<__mmask16>(valid_bits(n, q + o) & 0xffff)
                           : static_cast<__mmask16>((bits >> o) & 0xffff);
  return _mm512_mask_loadu_ps(_mm512_set1_ps(kNegInf), m, x + q + o);
}

// One block of 16 outputs starting at row position q; kS is the stride (1 or 2).
template <int kS, bool kEdge>
inline __m512 hrow_block(const float* x, int64_t n, int64_t q, int64_t k, int64_t d, uint64_t bits, bool wide) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  auto tap = [&](int64_t o) {
    if constexpr (kS == 1) return load_row<kEdge>(x, n, q, o, bits, wide);
    return _mm512_permutex2var_ps(load_row<kEdge>(x, n, q, o, bits, wide), even,
                                  load_row<kEdge>(x, n, q, o + 16, bits, wide));
  };
  __m512 best = tap(0);
  for (int64_t kw = 1; kw < k; ++kw) best = fold(best, tap(kw * d));
  return best;
}

// Any kernel width, dilation and padding: every tap loaded on its own.
template <int kS>
void hrow(const float* x, int64_t n, int64_t out_w, int64_t p, int64_t k, int64_t d, float* h) {
  // A block's loads span [q, q + reach); blocks inside the row need no masks.
  const int64_t reach = (k - 1) * d + 16 * kS;
  const bool wide = reach > 64;
  for (int64_t ow = 0; ow < out_w; ow += 16) {
    const int64_t q = ow * kS - p;
    __m512 v;
    if (q >= 0 && q + reach <= n) v = hrow_block<kS, false>(x, n, q, k, d, 0, wide);
    else v = hrow_block<kS, true>(x, n, q, k, d, wide ? 0 : valid_bits(n, q), wide);
    _mm512_storeu_ps(h + ow, v);
  }
}

// The common geometries (dilation 1; stride, width and padding as template
// arguments) read the row as s phases, phase f holding elements f, f + s, ... in
// blocks of 16 (x[s*(16j + i) + f - p] is lane i of block j), each loaded once: a
// tap at offset o = s*m + f from a window's start is lane i + m of phase f, which
// VALIGND takes from block j and a neighbour. Loading every tap instead costs a
// 3x3/2 pool six loads per 16 outputs, all crossing a cache line.

// Block c of 16 row elements x[16c - p ..], -inf outside the row.
template <int kP>
inline __m512 load_block(const float* x, int64_t n, int64_t c) {
  const int64_t q = 16 * c - kP;
  if (q >= 0 && q + 16 <= n) return _mm512_loadu_ps(x + q);
  const int64_t lo = q < 0 ? -q : 0, hi = n - q;
  const __mmask16 m = hi <= lo ? __mmask16(0) : static_cast<__mmask16>(tail_mask16(hi) & ~tail_mask16(lo));
  return _mm512_mask_loadu_ps(_mm512_set1_ps(kNegInf), m, x + q);
}

template <int kS, int kP>
inline void load_phases(const float* x, int64_t n, int64_t j, __m512 ph[kS]) {
  if constexpr (kS == 1) {
    ph[0] = load_block<kP>(x, n, j);
  } else {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    const __m512 a = load_block<kP>(x, n, 2 * j), b = load_block<kP>(x, n, 2 * j + 1);
    ph[0] = _mm512_permutex2var_ps(a, even, b);
    ph[1] = _mm512_permutex2var_ps(a, odd, b);
  }
}

template <int kS, int kT>
inline __m512 phase_tap(const __m512* cur, const __m512* next) {
  constexpr int f = kT % kS, m = kT / kS;
  static_assert(m < 16, "a tap beyond the next block");
  if constexpr (m == 0) return cur[f];
  return _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(next[f]), _mm512_castps_si512(cur[f]), m));
}

// Taps 0 .. sizeof(kT) in order.
template <int kS, int... kT>
inline __m512 phase_fold(const __m512* cur, const __m512* next, std::integer_sequence<int, kT...>) {
  __m512 best = phase_tap<kS, 0>(cur, next);
  ((best = fold(best, phase_tap<kS, kT + 1>(cur, next))), ...);
  return best;
}

template <int kS, int kK, int kP>
void hrow_phased(const float* x, int64_t n, int64_t out_w, float* h) {
  // Block j of the phases covers window starts 16j.. of the padded row (the row
  // loaded from x[-p]), so every tap offset is non-negative.
  __m512 cur[kS], next[kS];
  load_phases<kS, kP>(x, n, 0, cur);
  for (int64_t j = 0; 16 * j < out_w; ++j) {
    load_phases<kS, kP>(x, n, j + 1, next);
    _mm512_storeu_ps(h + 16 * j, phase_fold<kS>(cur, next, std::make_integer_sequence<int, kK - 1>()));
    for (int f = 0; f < kS; ++f) cur[f] = next[f];
  }
}

// Output rows [r_begin, r_end) with hrow(x_row, h) reducing one input row.
template <class HRow>
void rows_loop(const PoolGeom& g, const WindowAxis& wd, const WindowAxis& wh, const float* x, float* y,
               int64_t r_begin, int64_t r_end, float* hbuf, int64_t* tags, HRow hrow) {
  const int64_t OD = g.out[0], OH = g.out[1], OW = g.out[2], OWp = (OW + 15) / 16 * 16;
  const float* rows[64];
  int64_t plane = r_begin / (OD * OH), od = r_begin / OH % OD, oh = r_begin % OH;
  for (int64_t r = r_begin; r < r_end; ++r) {
    int64_t n = 0;
    for (int64_t i = wd.start[od]; i < wd.start[od + 1]; ++i)
      for (int64_t j = wh.start[oh]; j < wh.start[oh + 1]; ++j) {
        const int64_t at = plane * g.in_plane() + (wd.pos[i] * g.in[1] + wh.pos[j]) * g.in[2];
        const int64_t slot = wd.mod[i] * wh.extent + wh.mod[j];
        float* h = hbuf + slot * OWp;
        if (tags[slot] != at) {
          hrow(x + at, h);
          tags[slot] = at;
        }
        rows[n++] = h;
      }
    float* yr = y + r * OW;
    for (int64_t ow = 0; ow < OW; ow += 16) {
      __m512 best = n ? _mm512_loadu_ps(rows[0] + ow) : _mm512_set1_ps(kNegInf);
      for (int64_t i = 1; i < n; ++i) best = fold(best, _mm512_loadu_ps(rows[i] + ow));
      _mm512_mask_storeu_ps(yr + ow, tail_mask16(OW - ow), best);
    }
    if (++oh == OH) {
      oh = 0;
      if (++od == OD) od = 0, ++plane;
    }
  }
}

}  // namespace

bool max_pool_rows_supported(const PoolGeom& g) {
  return (g.s[2] == 1 || g.s[2] == 2) && g.k[0] * g.k[1] <= 64;
}

void max_pool_rows(const PoolGeom& g, const WindowAxis& wd, const WindowAxis& wh, const float* x, float* y,
                   int64_t r_begin, int64_t r_end, float* hbuf, int64_t* tags) {
  const int64_t W = g.in[2], OW = g.out[2], s = g.s[2], k = g.k[2], p = g.p[2], d = g.d[2];
  auto run = [&](auto hrow) { rows_loop(g, wd, wh, x, y, r_begin, r_end, hbuf, tags, hrow); };
  if (d == 1) {
    // ResNet's and VGG's pools, AlexNet-style 3x3/2, Inception's 3x3/1, YOLO's SPPF 5x5/1.
    if (s == 2 && k == 3 && p == 1) return run([&](const float* xr, float* h) { hrow_phased<2, 3, 1>(xr, W, OW, h); });
    if (s == 2 && k == 2 && p == 0) return run([&](const float* xr, float* h) { hrow_phased<2, 2, 0>(xr, W, OW, h); });
    if (s == 2 && k == 3 && p == 0) return run([&](const float* xr, float* h) { hrow_phased<2, 3, 0>(xr, W, OW, h); });
    if (s == 1 && k == 3 && p == 1) return run([&](const float* xr, float* h) { hrow_phased<1, 3, 1>(xr, W, OW, h); });
    if (s == 1 && k == 5 && p == 2) return run([&](const float* xr, float* h) { hrow_phased<1, 5, 2>(xr, W, OW, h); });
  }
  if (s == 1) return run([&](const float* xr, float* h) { hrow<1>(xr, W, OW, p, k, d, h); });
  run([&](const float* xr, float* h) { hrow<2>(xr, W, OW, p, k, d, h); });
}

}  // namespace cnnfast::cpu::avx512_impl
