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
  __mmask16 store[kMaxSegments];

  Segments(int64_t W, int64_t Wo, int64_t pw) {
    count = (Wo + kLanes - 1) / kLanes;
    for (int64_t g = 0; g < count; ++g) {
      const int64_t ow0 = g * kLanes, n = std::min(kLanes, Wo - ow0);
      store[g] = lane_range(0, n, kLanes);
      for (int kw = 0; kw < K; ++kw) {
        const int64_t b = ow0 + kw - pw;
        base[g][kw] = b;
        // Columns outside [0, W) read as zero (padding); lanes past the segment stay off.
        valid[g][kw] = lane_range(-b, std::min(W - b, n), kLanes);
      }
    }
  }
};

template <int K, int R>
void rows_plane(const float* x, int64_t H, int64_t W, const float* w, float bias, float* y, int64_t Ho, int64_t Wo,
                int64_t ph, const Segments<K>& seg) {
  constexpr int NR = R - 1 + K;  // input rows the R output rows' windows span
  __m512 wv[K][K];
  for (int a = 0; a < K; ++a)
    for (int b = 0; b < K; ++b) wv[a][b] = _mm512_set1_ps(w[a * K + b]);
  const __m512 vb = _mm512_set1_ps(bias);
  for (int64_t oh = 0; oh < Ho; oh += R) {
    const int64_t nr = std::min<int64_t>(R, Ho - oh);
    const int64_t ih0 = oh - ph;
    for (int64_t g = 0; g < seg.count; ++g) {
      __m512 acc[R];
      // Fully unrolled, so that acc and wv stay in registers and the tap tests fold away.
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) acc[r] = vb;
#pragma GCC unroll 16
      for (int i = 0; i < NR; ++i) {
        const int64_t ih = ih0 + i;
        if (ih < 0 || ih >= H) continue;  // a padding row adds nothing
        const float* row = x + ih * W;
#pragma GCC unroll 8
        for (int kw = 0; kw < K; ++kw) {
          const __m512 v = load_lanes(seg.valid[g][kw], row + seg.base[g][kw]);
          // Output row r uses input row i as its tap row i - r.
#pragma GCC unroll 16
          for (int r = 0; r < R; ++r) {
            const int kh = i - r;
            if (kh >= 0 && kh < K) acc[r] = _mm512_fmadd_ps(wv[kh][kw], v, acc[r]);
          }
        }
      }
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        if (r >= nr) continue;
        store_lanes(y + (oh + r) * Wo + g * kLanes, seg.store[g], acc[r]);
      }
    }
  }
}

template <int K>
void plane(const ConvShape& s, const float* x, const float* w, float bias, float* y) {
  const Segments<K> seg(s.in[2], s.out[2], s.pad0[2]);
  // Four rows a pass (4 accumulators, 6 input rows for 3x3); 6 and 8 measured the same
  // (Zen 5, MobileNet-V2 and EfficientNet-B0 shapes).
  rows_plane<K, 4>(x, s.in[1], s.in[2], w, bias, y, s.out[1], s.out[2], s.pad0[1], seg);
}

}  // namespace

bool dw_rows_applicable(const ConvShape& s) {
  if (s.in[0] != 1 || s.out[0] != 1 || s.k[0] != 1) return false;
  if (s.groups != s.C || s.K != s.C) return false;
  if (s.k[1] != s.k[2] || (s.k[1] != 3 && s.k[1] != 5)) return false;
  if (s.stride[1] != 1 || s.stride[2] != 1) return false;
  if (s.dil[1] != 1 || s.dil[2] != 1) return false;
  if (s.pad0[1] < 0 || s.pad0[2] < 0 || s.pad0[1] >= s.k[1] || s.pad0[2] >= s.k[2]) return false;
  return s.out[1] > 0 && s.out[2] > 0 && s.out[2] <= kMaxSegments * kLanes;
}

void dw_rows_plane(const ConvShape& s, const float* x, const float* w, float bias, float* y) {
  if (s.k[1] == 3) return plane<3>(s, x, w, bias, y);
  plane<5>(s, x, w, bias, y);
}

}  // namespace cnnfast::cpu::avx512_impl
