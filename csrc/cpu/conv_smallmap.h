// Weight-streaming direct convolution for small maps and batches (conv_smallmap.cpp):
// the AVX-512 tiles it runs on (conv_smallmap_avx512.cpp).
#pragma once
#include <cstdint>

namespace cnnfast::cpu {

// Rows of grad_y per weight-gradient tile (by 64 columns of (channel, tap)).
constexpr int64_t kSmallmapWeightRows = 7;

namespace avx512_impl {
// Rows per tile for a tile of `vectors` (1-7) vectors of 16 positions: 28 or fewer
// accumulators.
int smallmap_rows_per_tile(int64_t vectors);
// out (rows, VB * 16) = bias[r] (or 0) + sum over input planes i < n_in and taps j <
// taps of w[r ld_row + i ld_in + j] * src[i plane + off[j] + 0 .. VB * 16), for rows <=
// KB = smallmap_rows_per_tile(v) with VB <= v. Reads VB * 16 floats at every offset.
void smallmap_rows_tile(int64_t KB, int64_t VB, int64_t n_in, int64_t taps, const float* src, int64_t plane,
                        const int32_t* off, const float* w, int64_t ld_row, int64_t ld_in, int64_t rows,
                        const float* bias, float* out);
// gw (rows, cols <= 64), ld_gw, = (or += when accumulate) sum over images n and positions
// p < P of gy[n gy_image + r ld_row + p] * xt[(n P + p) 64 + 0 .. 64); rows <=
// kSmallmapWeightRows. next_gw (or null): where the next tile will write, fetched now.
void smallmap_weight_tile(int64_t images, int64_t P, const float* gy, int64_t gy_image, int64_t ld_row,
                          const float* xt, int64_t rows, float* gw, int64_t ld_gw, int64_t cols, bool accumulate,
                          const float* next_gw);
}  // namespace avx512_impl

}  // namespace cnnfast::cpu
