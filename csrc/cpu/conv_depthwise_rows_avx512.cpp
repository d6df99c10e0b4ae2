// Depthwise planes on AVX-512 straight from NCHW: an output row goes 16 columns to a
// zmm, and every tap is one masked load of its input row and one FMA with the
// broadcast tap. The load masks zero the lanes whose input column falls in the
// padding or past the row (and the lanes past the row's end), so borders, tails and
// maps narrower than a vector take the same code as the interior: no scalar edge
// loop and no transposed copy of the plane (the channel-blocked kernel's packing cost
// as much as its taps on MobileNet's 14x14 and 56x56 maps). R output rows per pass
// share the input rows their windows have in common, and their R independent
// accumulators keep both FMA pipes busy through each tap chain's latency.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "cpu/conv.h"
#include "cpu/simd_math_avx512.h"

namespace cnnfast::cpu::avx512_impl {
namespace {

using cnnfast::avx512::load_lanes;
using cnnfast::avx512::store_lanes;
constexpr int64_t kLanes = 16;
constexpr int64_t kMaxSegments = 64;  // rows of up to 1024 outputs

// Lanes [lo, hi) of n set, clipped to [0, n).
inline __mmask16 lane_range(int64_t lo, int64_t hi, int64_t n) {
  lo = std::max<int64_t>(lo, 0);
  hi = std::min(hi, n);
  if (hi <= lo) return 0;
  const uint32_t upto = hi >= 16 ? 0xffffu : (1u << hi) - 1u;
  return static_cast<__mmask16>(upto & ~((1u << lo) - 1u));
}

// Lane j of a segment starting at output column ow0 reads input column ow0 + j + kw - pw
// for tap kw: one load at ow0 + kw - pw, masked to the lanes whose column is inside the row.
template <int K>
struct Segments {
  int64_t count = 0;
  int64_t base[kMaxSegments][K];  // first input column of the tap's load
  __mmask16 valid[kMaxSegments][K];

  Segments(int64_t W, int64_t Wo, int64_t pw) {
    count = (Wo + kLanes - 1) / kLanes;
    for (int64_t g = 0; g < count; ++g) {
      const int64_t ow0 = g * kLanes, n = std::min(kLanes, Wo - ow0);
      for (int kw = 0; kw < K; ++kw) {
        const int64_t b = ow0 + kw - pw;
        base[g][kw] = b;
        // Columns outside [0, W) read as zero (padding); lanes past the segment stay off.
        valid[g][kw] = lane_range(-b, std::min(W - b, n), kLanes);
      }
    }
  }
};

// The R-rows-a-pass loop shared by both strides: output row oh + r reads input rows
// S (oh + r) - ph + kh; tap(ih, g, kw) gives input row ih's 16 values for tap kw of
// segment g (zero where the input is padding).
// before(ih0, ih1) runs ahead of each pass, for the input rows [ih0, ih1) it reads.
template <int K, int S, int R, class Tap, class Before>
void rows_pass(int64_t H, const float* w, float bias, float* y, int64_t Ho, int64_t Wo, int64_t ph, Tap tap,
               Before before) {
  constexpr int NR = S * (R - 1) + K;  // input rows the R output rows' windows span
  __m512 wv[K][K];
  for (int a = 0; a < K; ++a)
    for (int b = 0; b < K; ++b) wv[a][b] = _mm512_set1_ps(w[a * K + b]);
  const __m512 vb = _mm512_set1_ps(bias);
  const int64_t segments = (Wo + kLanes - 1) / kLanes;
  for (int64_t oh = 0; oh < Ho; oh += R) {
    const int64_t nr = std::min<int64_t>(R, Ho - oh);
    const int64_t ih0 = S * oh - ph;
    before(std::max<int64_t>(ih0, 0), std::min(H, ih0 + NR));
    for (int64_t g = 0; g < segments; ++g) {
      __m512 acc[R];
      // Fully unrolled, so that acc and wv stay in registers and the tap tests fold away.
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) acc[r] = vb;
#pragma GCC unroll 16
      for (int i = 0; i < NR; ++i) {
        const int64_t ih = ih0 + i;
        if (ih < 0 || ih >= H) continue;  // a padding row adds nothing
#pragma GCC unroll 8
        for (int kw = 0; kw < K; ++kw) {
          const __m512 v = tap(ih, g, kw);
          // Output row r uses input row i as its tap row i - S r.
#pragma GCC unroll 16
          for (int r = 0; r < R; ++r) {
            const int kh = i - S * r;
            if (kh >= 0 && kh < K) acc[r] = _mm512_fmadd_ps(wv[kh][kw], v, acc[r]);
          }
        }
      }
      const __mmask16 store = lane_range(0, Wo - g * kLanes, kLanes);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r)
        if (r < nr) store_lanes(y + (oh + r) * Wo + g * kLanes, store, acc[r]);
    }
  }
}

// Stride 2: every input row is first split into its even and its odd columns, with
// zero margins, so that each tap is a plain load of 16 consecutive values of one phase:
// input column 2 ow + d is even[ow + d / 2] for even d and odd[ow + (d - 1) / 2] for odd
// d (floor division). Picking the columns per tap instead (two loads and a permute each)
// ran at half the speed of the channel-blocked kernel.
constexpr int64_t kMargin = 16;

inline int64_t phase_row_length(int64_t Wo) { return kMargin + ((Wo + kLanes - 1) / kLanes + 1) * kLanes; }

// Phase rows cover the indices the taps read: up to 2 past the last segment.
inline void split_row(const float* row, int64_t W, int64_t chunks, float* even, float* odd) {
  const __m512i pick_even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i pick_odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  _mm512_storeu_ps(even, _mm512_setzero_ps());
  _mm512_storeu_ps(odd, _mm512_setzero_ps());
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t i0 = 2 * kLanes * c;
    // Columns past the row load as zero: the right padding.
    // Chunks past the row (the margin the last segment's taps read) are zeros without a
    // load: a masked load with no lane on costs about what a full one does.
    const __mmask16 mlo = lane_range(0, W - i0, kLanes), mhi = lane_range(0, W - i0 - kLanes, kLanes);
    const __m512 lo = mlo ? load_lanes(mlo, row + i0) : _mm512_setzero_ps();
    const __m512 hi = mhi ? load_lanes(mhi, row + i0 + kLanes) : _mm512_setzero_ps();
    _mm512_storeu_ps(even + kMargin + kLanes * c, _mm512_permutex2var_ps(lo, pick_even, hi));
    _mm512_storeu_ps(odd + kMargin + kLanes * c, _mm512_permutex2var_ps(lo, pick_odd, hi));
  }
}

// Rows are split as the passes reach them, into a ring of kRing row pairs: the pairs of
// a whole 112x112 plane (86 KB) passed L1 between their split and their taps.
constexpr int64_t kRing = 16;

template <int K, int R>
void rows_plane_s2(const float* x, int64_t H, int64_t W, const float* w, float bias, float* y, int64_t Ho,
                   int64_t Wo, int64_t ph, int64_t pw, float* scratch) {
  static_assert(2 * (R - 1) + K <= kRing, "a pass's input rows fit the ring");
  const int64_t segments = (Wo + kLanes - 1) / kLanes, L = phase_row_length(Wo);
  // Tap kw reads phase (d & 1) at offset d >> 1 of the row pair, d = kw - pw.
  int64_t tap[K];
  for (int kw = 0; kw < K; ++kw) {
    const int64_t d = kw - pw;
    tap[kw] = kMargin + (d & 1) * L + (d >> 1);
  }
  int64_t split = 0;  // rows [0, split) are split
  rows_pass<K, 2, R>(
      H, w, bias, y, Ho, Wo, ph,
      [&](int64_t ih, int64_t g, int kw) {
        return _mm512_loadu_ps(scratch + 2 * (ih % kRing) * L + g * kLanes + tap[kw]);
      },
      [&](int64_t ih0, int64_t ih1) {
        for (int64_t ih = std::max(split, ih0); ih < ih1; ++ih) {
          float* pair = scratch + 2 * (ih % kRing) * L;
          split_row(x + ih * W, W, segments + 1, pair, pair + L);
        }
        split = std::max(split, ih1);
      });
}

// plain: every tap may load its 16 values whole (they lie inside the caller's readable
// range, lo to hi) and zero the lanes outside the row in registers. A masked load costs
// more than a plain one and a register mask on Zen 5 (one thread: 3x3 384ch at 14x14
// 32 -> 28 us, 144ch at 56x56 139 -> 121, 5x5 672ch at 14x14 91 -> 80); the tensor's first
// and last planes keep the masked loads, whose disabled lanes read nothing.
template <int K>
void plane(const ConvShape& s, const float* x, const float* w, float bias, float* y, bool plain) {
  const Segments<K> seg(s.in[2], s.out[2], s.pad0[2]);
  const int64_t W = s.in[2];
  auto pass = [&](auto tap) {
    // Four rows a pass (4 accumulators, 6 input rows for 3x3); 6 and 8 measured the same
    // (Zen 5, MobileNet-V2 and EfficientNet-B0 shapes).
    rows_pass<K, 1, 4>(s.in[1], w, bias, y, s.out[1], s.out[2], s.pad0[1], tap, [](int64_t, int64_t) {});
  };
  if (plain)
    pass([&](int64_t ih, int64_t g, int kw) {
      return _mm512_maskz_mov_ps(seg.valid[g][kw], _mm512_loadu_ps(x + ih * W + seg.base[g][kw]));
    });
  else
    pass([&](int64_t ih, int64_t g, int kw) { return load_lanes(seg.valid[g][kw], x + ih * W + seg.base[g][kw]); });
}

}  // namespace

bool dw_rows_applicable(const ConvShape& s) {
  if (s.in[0] != 1 || s.out[0] != 1 || s.k[0] != 1) return false;
  if (s.groups != s.C || s.K != s.C) return false;
  if (s.k[1] != s.k[2] || (s.k[1] != 3 && s.k[1] != 5)) return false;
  if (s.stride[1] != s.stride[2] || (s.stride[1] != 1 && s.stride[1] != 2)) return false;
  if (s.dil[1] != 1 || s.dil[2] != 1) return false;
  if (s.pad0[1] < 0 || s.pad0[2] < 0 || s.pad0[1] >= s.k[1] || s.pad0[2] >= s.k[2]) return false;
  return s.out[1] > 0 && s.out[2] > 0 && s.out[2] <= kMaxSegments * kLanes;
}

int64_t dw_rows_scratch(const ConvShape& s) {
  return s.stride[2] == 2 ? 2 * kRing * phase_row_length(s.out[2]) : 0;
}

void dw_rows_plane(const ConvShape& s, const float* x, const float* w, float bias, float* y, float* scratch,
                   const float* lo, const float* hi) {
  if (s.stride[2] == 2) {
    // Four output rows a pass: 9 input rows for 3x3, 11 for 5x5.
    if (s.k[1] == 3)
      return rows_plane_s2<3, 4>(x, s.in[1], s.in[2], w, bias, y, s.out[1], s.out[2], s.pad0[1], s.pad0[2], scratch);
    return rows_plane_s2<5, 4>(x, s.in[1], s.in[2], w, bias, y, s.out[1], s.out[2], s.pad0[1], s.pad0[2], scratch);
  }
  // A tap's whole-vector load starts up to pad0 columns before its row and ends up to a
  // vector past the last segment's end.
  const int64_t reach = (s.out[2] + kLanes - 1) / kLanes * kLanes + s.k[2] + kLanes;
  const bool plain = x - s.pad0[2] >= lo && x + (s.in[1] - 1) * s.in[2] + reach <= hi;
  if (s.k[1] == 3) return plane<3>(s, x, w, bias, y, plain);
  plane<5>(s, x, w, bias, y, plain);
}

}  // namespace cnnfast::cpu::avx512_impl
