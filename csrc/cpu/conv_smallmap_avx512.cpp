// The AVX-512 tiles of conv_smallmap.cpp (see there for why): output positions in the
// vector lanes, the weights broadcast straight from their own (K, C, kh, kw) layout.
#include <immintrin.h>

#include <algorithm>
#include <stdexcept>

#include "cpu/conv_smallmap.h"
#include "cpu/simd_math_avx512.h"

namespace cnnfast::cpu::avx512_impl {
namespace {

using namespace cnnfast::avx512;

constexpr int64_t kPrefetchPlanes = 4;

// KB rows by VB vectors of positions. Per (input plane i, tap j): VB loads of the plane at
// the tap's offset and KB broadcasts, one from each row's weights, feed KB VB FMAs. Rows
// past `rows` repeat the last real row and are never stored.
template <int KB, int VB>
void rows_tile(int64_t n_in, int64_t taps, const float* src, int64_t plane, const int32_t* off, const float* w,
               int64_t ld_row, int64_t ld_in, int64_t rows, const float* bias, float* out) {
  const float* wr[KB];
  __m512 acc[KB][VB];
#pragma GCC unroll 8
  for (int r = 0; r < KB; ++r) {
    const int64_t rr = std::min<int64_t>(r, rows - 1);
    wr[r] = w + rr * ld_row;
    const __m512 b = bias ? _mm512_set1_ps(bias[rr]) : _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int v = 0; v < VB; ++v) acc[r][v] = b;
  }
  // grad_x reads each input plane's weights for the tile's rows as one short run
  // (KB taps floats) a whole weight row (C taps) after the last: a stride the hardware
  // prefetcher does not keep up with, so the run kPrefetchPlanes planes ahead is asked
  // for here (5x5 C256 at 7x7 batch 1, 2 threads: grad_x 1.36 -> 0.68 ms). The forward's
  // runs are contiguous and need none.
  const bool strided = ld_in != taps;
  const int64_t run = (rows - 1) * ld_row + taps;
  for (int64_t i = 0; i < n_in; ++i, src += plane) {
    if (strided && i + kPrefetchPlanes < n_in)
      for (int64_t l = 0; l < run; l += 16)
        _mm_prefetch(reinterpret_cast<const char*>(wr[0] + kPrefetchPlanes * ld_in + l), _MM_HINT_T0);
    for (int64_t j = 0; j < taps; ++j) {
      const float* sj = src + off[j];
      __m512 xv[VB];
#pragma GCC unroll 8
      for (int v = 0; v < VB; ++v) xv[v] = _mm512_loadu_ps(sj + 16 * v);
#pragma GCC unroll 8
      for (int r = 0; r < KB; ++r) {
        const __m512 wb = _mm512_set1_ps(wr[r][j]);
#pragma GCC unroll 8
        for (int v = 0; v < VB; ++v) acc[r][v] = _mm512_fmadd_ps(wb, xv[v], acc[r][v]);
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < KB; ++r) wr[r] += ld_in;
  }
#pragma GCC unroll 8
  for (int r = 0; r < KB; ++r) {
    if (r >= rows) break;
#pragma GCC unroll 8
    for (int v = 0; v < VB; ++v) _mm512_storeu_ps(out + (r * VB + v) * 16, acc[r][v]);
  }
}

// KB rows of grad_y by the 64 columns of xt, summed over images x positions.
template <int KB>
void weight_tile(int64_t images, int64_t P, const float* gy, int64_t gy_image, int64_t ld_row, const float* xt,
                 int64_t rows, float* gw, int64_t ld_gw, int64_t cols, bool accumulate, const float* next_gw) {
  const float* gr[KB];
  __m512 acc[KB][4];
  // The next tile's rows of gw lie a whole row of the im2col width apart, too far for
  // the hardware prefetcher: each store would wait for its line. Asked for now, they
  // arrive under this tile's FMAs.
  if (next_gw)
    for (int r = 0; r < KB; ++r)
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v) _mm_prefetch(reinterpret_cast<const char*>(next_gw + r * ld_gw + 16 * v), _MM_HINT_ET0);
#pragma GCC unroll 8
  for (int r = 0; r < KB; ++r) {
    gr[r] = gy + std::min<int64_t>(r, rows - 1) * ld_row;
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) acc[r][v] = _mm512_setzero_ps();
  }
  for (int64_t n = 0; n < images; ++n) {
    for (int64_t p = 0; p < P; ++p, xt += 64) {
      __m512 xv[4];
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v) xv[v] = _mm512_loadu_ps(xt + 16 * v);
#pragma GCC unroll 8
      for (int r = 0; r < KB; ++r) {
        const __m512 g = _mm512_set1_ps(gr[r][p]);
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v) acc[r][v] = _mm512_fmadd_ps(g, xv[v], acc[r][v]);
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < KB; ++r) gr[r] += gy_image;
  }
  for (int r = 0; r < KB; ++r) {
    if (r >= rows) break;
    float* o = gw + r * ld_gw;
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) {
      const __mmask16 m = tail_mask16(std::clamp<int64_t>(cols - 16 * v, 0, 16));
      if (!m) break;
      const __m512 a = accumulate ? _mm512_add_ps(acc[r][v], _mm512_maskz_loadu_ps(m, o + 16 * v)) : acc[r][v];
      _mm512_mask_storeu_ps(o + 16 * v, m, a);
    }
  }
}

}  // namespace

int smallmap_rows_per_tile(int64_t vectors) { return vectors >= 5 ? 4 : vectors == 4 ? 7 : 8; }

void smallmap_rows_tile(int64_t KB, int64_t VB, int64_t n_in, int64_t taps, const float* src, int64_t plane,
                        const int32_t* off, const float* w, int64_t ld_row, int64_t ld_in, int64_t rows,
                        const float* bias, float* out) {
  auto run = [&](auto tile) { tile(n_in, taps, src, plane, off, w, ld_row, ld_in, rows, bias, out); };
  switch (KB * 8 + VB) {
#define CNNFAST_ROWS_TILE(kb, vb) \
  case kb * 8 + vb:               \
    return run(rows_tile<kb, vb>);
    CNNFAST_ROWS_TILE(8, 1)
    CNNFAST_ROWS_TILE(8, 2)
    CNNFAST_ROWS_TILE(8, 3)
    CNNFAST_ROWS_TILE(7, 1)
    CNNFAST_ROWS_TILE(7, 2)
    CNNFAST_ROWS_TILE(7, 3)
    CNNFAST_ROWS_TILE(7, 4)
    CNNFAST_ROWS_TILE(4, 1)
    CNNFAST_ROWS_TILE(4, 2)
    CNNFAST_ROWS_TILE(4, 3)
    CNNFAST_ROWS_TILE(4, 4)
    CNNFAST_ROWS_TILE(4, 5)
    CNNFAST_ROWS_TILE(4, 6)
    CNNFAST_ROWS_TILE(4, 7)
#undef CNNFAST_ROWS_TILE
    default:
      throw std::logic_error("smallmap_rows_tile: no tile of that shape");
  }
}

void smallmap_weight_tile(int64_t images, int64_t P, const float* gy, int64_t gy_image, int64_t ld_row,
                          const float* xt, int64_t rows, float* gw, int64_t ld_gw, int64_t cols, bool accumulate,
                          const float* next_gw) {
  weight_tile<kSmallmapWeightRows>(images, P, gy, gy_image, ld_row, xt, rows, gw, ld_gw, cols, accumulate, next_gw);
}

}  // namespace cnnfast::cpu::avx512_impl
