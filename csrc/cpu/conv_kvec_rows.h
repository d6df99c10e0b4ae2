// The row tiles of conv_kvec_rows.cpp: 64 output channels in four zmm by up to 7
// positions of one output row, read from a zero-bordered image (conv_kvec_rows_avx512.cpp).
#pragma once
#include <cstdint>

#include "cpu/epilogue.h"

namespace cnnfast::cpu {

constexpr int64_t kRowTileChannels = 64;  // output channels per tile (vector lanes)
constexpr int64_t kRowTileMaxPositions = 7;

// One live tap of a tile: where its first position reads the bordered plane, which row of
// the packed weights ((channel, tap), 64) it multiplies, and whether the tile's first or
// last position reads the border there (then those FMAs are skipped: they add zero).
struct RowTileTap {
  int32_t x_off;
  int32_t w_row;
  int8_t skip_first, skip_last;
};

namespace avx512_impl {
// dst (nj, 64) = w rows [k0, k0 + 64) (zero past K) by columns [j0, j0 + nj) of the
// (K, CK) weights, transposed: each (channel, tap) row's 64 output channels one load apart.
void row_tiles_pack(const float* w, int64_t K, int64_t CK, int64_t k0, int64_t j0, int64_t nj, float* dst);
// The same rows for the stride-1 grad_x run as a forward (grad_y convolved with the
// kernel rotated by 180 degrees, channel axes swapped), straight from the layer's own
// (channels, lanes, kk) weights: dst ((c - c0) kk + t, l) = w[(c lanes + k0 + l) kk + kk - 1 - t]
// for c in [c0, c0 + nc), zero for lanes past `lanes`.
void row_tiles_pack_rotated(const float* w, int64_t lanes, int64_t kk, int64_t k0, int64_t c0, int64_t nc, float* dst);
// acc (np, 64) = (first ? 0 : acc) + sum over taps t and channels c < nc of
// w[(c kk + taps[t].w_row) 64 + 0 .. 64) x[c plane + taps[t].x_off + j stride] for j < np.
// np 1..7, stride 1 or 2.
void row_tile(int64_t np, int64_t stride, const float* x, int64_t plane, const RowTileTap* taps, int64_t ntaps,
              const float* w, int64_t kk, int64_t nc, float* acc, bool first);
// y[l ldy + j] = epilogue(acc[j 64 + l] + bias[l]) for l < rows, j < np: the tile's
// channels back to rows of y (res: the residual at y's offsets, or null).
void row_tile_store(const float* acc, int64_t np, int64_t rows, const float* bias, float* y, const float* res,
                    int64_t ldy, const Epilogue& e);
}  // namespace avx512_impl

namespace amx_impl {
// The bf16 tiles on VDPBF16PS (conv_bf16_rows_amx.cpp), planes of channel pairs: one
// uint32 per position, bf16(channel 2 pair) in its low half, bf16(channel 2 pair + 1) (or
// 0 past C) in its high half.
// dst (Hp, Wp) = image x (C, H, W)'s pair `pair`, rows placed `top` down and `left` in.
template <class T>
void rows_bf16_border(const T* x, int64_t C, int64_t H, int64_t W, int64_t top, int64_t left, int64_t Hp, int64_t Wp,
                      int64_t pair, uint32_t* dst);
// dst ((p - pair0) kk + t, 64 lanes) = the pair (w[k, 2p, t], w[k, 2p + 1, t]) for output
// channels k = k0 + lane (zero past K) and pairs p in [pair0, pair0 + npairs) of w (K, C,
// kk), or with rotated of w (C, K, kk) at tap kk - 1 - t (the layer whose stride-1 grad_x
// this forward is); scratch: 2 npairs kk 64 floats.
template <class T>
void rows_bf16_pack(const T* w, int64_t K, int64_t C, int64_t kk, int64_t k0, int64_t pair0, int64_t npairs,
                    bool rotated, float* scratch, uint32_t* dst);
// grad_w on VDPBF16PS (stride 1): 64 output channels by up to kWeightTileColumns (channel,
// tap) columns, the sum over positions taken two at a time.
constexpr int kWeightTileColumns = 7;
// dst (x's plane of one channel, bf16, zero-bordered: rows placed `top` down, `left` in).
template <class T>
void rows_bf16_border16(const T* x, int64_t H, int64_t W, int64_t top, int64_t left, int64_t Hp, int64_t Wp,
                        uint16_t* dst);
// dst (Ho, ceil(Wo / 2), 64) = pairs (gy[k][oh][2j], gy[k][oh][2j + 1] or 0) for channels
// k = k0 + lane (zero past K) of one image's gy (K, Ho, Wo); scratch: 64 Wo floats rounded up to 16.
template <class T>
void rows_bf16_grad_pairs(const T* gy, int64_t K, int64_t Ho, int64_t Wo, int64_t k0, float* scratch, uint32_t* dst);
// out (ncols, 64) = sum over q < nsteps of gyp's pair q (64 lanes, gyp + 64 q) times the
// pair of bf16 values at xcol[i] + steps[q].
void rows_bf16_weight_tile(int64_t ncols, const uint32_t* gyp, const int32_t* steps, int64_t nsteps,
                           const uint16_t* const* xcol, float* out);
// row_tile's sum over npairs channel pairs, float32 accumulation.
void rows_bf16_tile(int64_t np, int64_t stride, const uint32_t* x, int64_t plane, const RowTileTap* taps, int64_t ntaps,
                    const uint32_t* w, int64_t kk, int64_t npairs, float* acc, bool first);

// The element types of the templates above (float32, and bf16 as uint16_t), instantiated once
// where they are defined: the AVX512-BF16 unit, or the stubs of builds without it.
#define CNNFAST_ROWS_BF16_INSTANTIATE(T)                                                                        \
  template void rows_bf16_border<T>(const T*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, \
                                    uint32_t*);                                                                 \
  template void rows_bf16_pack<T>(const T*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool, float*,   \
                                  uint32_t*);                                                                   \
  template void rows_bf16_border16<T>(const T*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, uint16_t*); \
  template void rows_bf16_grad_pairs<T>(const T*, int64_t, int64_t, int64_t, int64_t, float*, uint32_t*);
}  // namespace amx_impl

}  // namespace cnnfast::cpu
