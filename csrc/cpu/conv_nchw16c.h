// Frozen graphs' channel-blocked layout, NCHW16c: (N, ceil(C / 16), H, W, 16), the
// channels past C zero on entry. Inside a frozen chain of MobileNet/EfficientNet blocks
// (bind_conv.cpp's FrozenConvChain) the 1x1 convolutions, depthwise convolutions and
// squeeze-excite blocks run on it and the public arrays stay NCHW.
//
// Why: on 7x7 and 14x14 maps an NCHW row fills a 16-lane vector to 44-88%, so the
// depthwise kernels either leave lanes idle or transpose every plane into a channel-
// blocked buffer and back; and the 1x1 channel-vector tiles (conv_kvec_avx512.cpp)
// transpose their accumulators into 32 strided rows of y at the end of every tile. With
// the channels in the lanes end to end a depthwise tap is one load and one FMA on a
// full vector at any map size and stride, and a 1x1 tile stores its accumulators as
// they are. onnxruntime's MLAS keeps its NCHWc graphs for the same reasons.
//
// Padded lanes: every kernel writes all 16 lanes of each block it stores, but a
// padded channel may hold act(0) (0.5 after a sigmoid) rather than 0; no kernel reads
// a padded channel into a real one (the 1x1 tiles stop at C, the depthwise and scale
// passes are per lane, and unpacking copies C channels), so those values never reach
// an output.
#pragma once
#include <cstdint>

#include "cpu/conv.h"
#include "cpu/epilogue.h"

namespace cnnfast::cpu {

constexpr int64_t kBlockLanes = 16;

inline int64_t nchw16c_blocks(int64_t C) { return (C + kBlockLanes - 1) / kBlockLanes; }
// Floats of an (N, C, P) tensor in NCHW16c.
inline int64_t nchw16c_floats(int64_t N, int64_t C, int64_t P) { return N * nchw16c_blocks(C) * P * kBlockLanes; }

// Whether a float32 convolution runs on the blocked layout: 2-D, and either 1x1 with
// stride 1, no padding and groups 1, or depthwise (groups == C == K) 3x3 or 5x5 with
// stride 1 or 2 (the same both ways), no dilation and padding under the kernel size.
// Needs the AVX-512 level (use_avx512()), checked by the caller at run time.
bool nchw16c_conv_applicable(const ConvShape& s);
bool nchw16c_is_depthwise(const ConvShape& s);

// x (N, C, P) <-> xb (N, C/16, P, 16), on the thread pool.
void nchw16c_pack(const float* x, int64_t N, int64_t C, int64_t P, float* xb);
void nchw16c_unpack(const float* xb, int64_t N, int64_t C, int64_t P, float* x);

// A depthwise weight (C, 1, kh, kw) rearranged to (C/16, kh kw, 16), and its bias (or
// zeros) to (C/16 * 16), zero past C.
void nchw16c_pack_depthwise(const float* w, const float* bias, int64_t C, int64_t taps, float* wb, float* bb);

// y = epilogue(conv(x) + bias) on blocked x, y and e.residual. Pointwise layers take
// ConvPacked::kvec()'s weights (K/32, C, 32); depthwise ones nchw16c_pack_depthwise's,
// with its padded bias (bias is then that). xscale (pointwise only, may be null): (N, C),
// x's channels scaled per image first (a squeeze-excite block's scales).
void nchw16c_conv_forward(const ConvShape& s, const float* xb, const float* w, const float* bias, float* yb,
                          const Epilogue& e, const float* xscale = nullptr);

// A depthwise layer (shape dw, weights w2 and padded bias b2 as nchw16c_pack_depthwise
// makes them, epilogue e2, no residual) over bands of output rows, each band's input rows
// made into a buffer of the thread's that stays in L2 instead of a whole tensor through
// memory: by the expanding 1x1 layer whose output only this layer reads (pw: its shape,
// with kvec weights w1, padded bias b1, epilogue e1, no residual; x blocked), or, where
// pw is null, by packing NCHW x (the layer after a stem). The rows that neighbouring
// bands share are made twice. Whether that pays: nchw16c_band_pays.
void nchw16c_banded_depthwise(const ConvShape* pw, const float* x, const float* w1, const float* b1,
                              const Epilogue& e1, const ConvShape& dw, const float* w2, const float* b2, float* yb,
                              const Epilogue& e2);
// packed: the bands' rows are packed NCHW rows (cheap to make twice), not a 1x1 layer's.
bool nchw16c_band_pays(const ConvShape& dw, bool packed);

// squeeze_excite_forward (squeeze_excite.h) on blocked x and y; and its first half
// alone, the scales (N, C), for a 1x1 layer that applies them as it reads x
// (nchw16c_conv_forward's xscale) instead of a pass that writes x * scale.
void nchw16c_squeeze_excite(const float* xb, float* yb, int64_t N, int64_t C, int64_t P, const float* w1,
                            const float* b1, int64_t R, const float* w2, const float* b2, const Epilogue& e1,
                            const Epilogue& e2);
void nchw16c_squeeze_excite_scales(const float* xb, int64_t N, int64_t C, int64_t P, const float* w1,
                                   const float* b1, int64_t R, const float* w2, const float* b2, const Epilogue& e1,
                                   const Epilogue& e2, float* scale);

namespace avx512_impl {
// Positions [p0, p0 + np) of channel block cb of one image x (C, P) to dst (np, 16).
void nchw16c_pack_range(const float* x, int64_t C, int64_t P, int64_t cb, int64_t p0, int64_t np, float* dst);
void nchw16c_unpack_blocks(const float* xb, int64_t C, int64_t P, float* x, int64_t cb0, int64_t cb1);
// Output positions [p0, p0 + np) of 32 channels (two blocks, np <= 14) or of 16 (one
// block, where two_blocks is false, np <= 28) from input channels [c0, c1) (c0 a multiple
// of 16): xb is one image's (block stride P positions), w the weight block's (C, 32)
// slice from row c0; yb points at the tile's first output of its first block, its
// blocks yP positions apart, and res (may be null) likewise. accumulate adds to y;
// finish applies bias (when !accumulate), the residual and the activation. wnext (may
// be null): the weight slice the caller uses next, fetched into L2 meanwhile. xscale
// (may be null): per input channel of this image, multiplied into each weight row as
// it is loaded, which scales x without a pass over it.
void nchw16c_pointwise_tile(const float* xb, int64_t P, int64_t c0, int64_t c1, const float* w, bool two_blocks,
                            const float* bias, float* yb, int64_t yP, const float* res, int64_t p0, int64_t np,
                            const Epilogue& e, bool accumulate, bool finish, const float* wnext,
                            const float* xscale = nullptr);
// Output rows [oh0, oh1) of one 16-channel plane: x (rows from row0 on, W, 16) holding
// the input rows those outputs read, w (kh kw, 16), bias (16), y and res (Ho, Wo, 16).
void nchw16c_depthwise_rows(const ConvShape& s, const float* x, int64_t row0, const float* w, const float* bias,
                            float* y, const float* res, int64_t oh0, int64_t oh1, const Epilogue& e);
// out[l] = mean over the P positions of lane l, for one block.
void nchw16c_block_mean(const float* xb, int64_t P, float* out);
// y = x * scale (16 lanes, one per channel of the block), P positions.
void nchw16c_block_scale(const float* xb, int64_t P, const float* scale, float* yb);
}  // namespace avx512_impl

}  // namespace cnnfast::cpu
