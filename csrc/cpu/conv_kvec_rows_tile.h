// The row tile's frame shared by its float32 (conv_kvec_rows_avx512.cpp) and bf16
// (conv_bf16_rows_amx.cpp) kernels: 4 x NP float32 accumulators loaded or zeroed, each
// live tap's channel loop run by the kernel's Ops::taps, the accumulators stored. Lives
// in CNNFAST_ISA_NS like every header compiled into more than one level.
//
// Ops: E (the plane and weight element: float, or uint32 bf16 pairs) and
//   template <int NP, int S, int JL, int JR> static void taps(__m512 (&acc)[NP][4],
//   const E* x, int64_t plane, const E* w, int64_t w_step, int64_t units):
//   one tap over `units` channels (or pairs), positions [JL, NP - JR) only.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <utility>

#include "core/simd.h"
#include "cpu/conv_kvec_rows.h"
#include "cpu/simd_transpose_x86.h"

namespace cnnfast::cpu::CNNFAST_ISA_NS::row_tiles {

template <class Ops, int NP, int S>
void tile(const typename Ops::E* x, int64_t plane, const RowTileTap* taps, int64_t ntaps, const typename Ops::E* w,
          int64_t kk, int64_t units, float* out, bool first) {
  __m512 acc[NP][4];
#pragma GCC unroll 8
  for (int j = 0; j < NP; ++j)
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) acc[j][v] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(out + j * 64 + 16 * v);
  const int64_t w_step = kk * 64;
  for (int64_t i = 0; i < ntaps; ++i) {
    const RowTileTap& t = taps[i];
    const auto* xt = x + t.x_off;
    const auto* wt = w + int64_t(t.w_row) * 64;
    // A one-position tile never has a live tap with a dead position.
    if constexpr (NP == 1) {
      Ops::template taps<NP, S, 0, 0>(acc, xt, plane, wt, w_step, units);
    } else {
      switch (t.skip_first * 2 + t.skip_last) {
        case 0: Ops::template taps<NP, S, 0, 0>(acc, xt, plane, wt, w_step, units); break;
        case 1: Ops::template taps<NP, S, 0, 1>(acc, xt, plane, wt, w_step, units); break;
        case 2: Ops::template taps<NP, S, 1, 0>(acc, xt, plane, wt, w_step, units); break;
        default: Ops::template taps<NP, S, 1, 1>(acc, xt, plane, wt, w_step, units); break;
      }
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < NP; ++j)
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) _mm512_storeu_ps(out + j * 64 + 16 * v, acc[j][v]);
}

template <class Ops, int S, int... NP>
void dispatch_width(std::integer_sequence<int, NP...>, int64_t np, const typename Ops::E* x, int64_t plane,
                    const RowTileTap* taps, int64_t ntaps, const typename Ops::E* w, int64_t kk, int64_t units,
                    float* out, bool first) {
  ((np == NP + 1 ? (tile<Ops, NP + 1, S>(x, plane, taps, ntaps, w, kk, units, out, first), true) : false) || ...);
}

inline __mmask16 lanes_mask(int64_t n) { return n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1u); }

// 16 values as float32 (bf16 bits widened exactly).
inline __m512 load16(__mmask16 m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
inline __m512 load16(__mmask16 m, const uint16_t* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}

// GCC 12 takes the intrinsics' own undefined pass-through operand for an uninitialized
// value once transpose16 is inlined here (a false positive).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// 64 lanes (rows lane0 .. lane0 + 63 of src, ld apart, zero from `lanes` on) by n <= 16
// consecutive values of each, transposed by 16 x 16 register blocks: value j of every lane
// -> dst + step(j) 64, as float32. The weight packs' core.
template <class T, class Step>
void transpose_lanes(const T* src, int64_t ld, int64_t lane0, int64_t lanes, int64_t n, float* dst, Step step) {
  const __mmask16 m = lanes_mask(n);
  for (int64_t q = 0; q < 4; ++q) {
    __m512 r[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) {
      const int64_t k = lane0 + q * 16 + i;
      r[i] = k < lanes ? load16(m, src + k * ld) : _mm512_setzero_ps();
    }
    transpose16(r);
    for (int64_t j = 0; j < n; ++j) _mm512_storeu_ps(dst + step(j) * 64 + q * 16, r[j]);
  }
}
#pragma GCC diagnostic pop

// The tile of np (1-7) positions at column stride 1 or 2.
template <class Ops>
void run(int64_t np, int64_t stride, const typename Ops::E* x, int64_t plane, const RowTileTap* taps, int64_t ntaps,
         const typename Ops::E* w, int64_t kk, int64_t units, float* acc, bool first) {
  constexpr auto widths = std::make_integer_sequence<int, kRowTileMaxPositions>();
  if (stride == 2)
    dispatch_width<Ops, 2>(widths, np, x, plane, taps, ntaps, w, kk, units, acc, first);
  else
    dispatch_width<Ops, 1>(widths, np, x, plane, taps, ntaps, w, kk, units, acc, first);
}

}  // namespace cnnfast::cpu::CNNFAST_ISA_NS::row_tiles
