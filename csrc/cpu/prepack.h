// Convolution weights packed once for the GEMM, for frozen inference graphs
// (python/cnnfast/inference): _C.ConvPacked(weight, groups) builds one and
// _C.conv_forward(..., packed=) reuses it on every call, where the eager path packs
// the weights again on each call (a 512x512 3x3 layer's 9.4 MB at batch 1 on a 7x7
// map cost more than the multiply).
//
// The output channels of each group are also split into row blocks at packing
// time, so that at batch 1 on a small map, where (image, column chunk) tasks are
// fewer than the threads, the threads can share a layer by output channels.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "core/memory.h"
#include "core/workspace.h"
#include "cpu/conv.h"
#include "cpu/epilogue.h"
#include "cpu/gemm.h"
#include "cpu/winograd.h"

namespace cnnfast::cpu {

class ConvPacked {
 public:
  // w: (K, Cg, kk) float32; copied (the packed operands keep pointing at the copy).
  ConvPacked(const float* w, int64_t K, int64_t Cg, int64_t kk, int64_t groups);
  int64_t K() const { return K_; }
  int64_t Cg() const { return Cg_; }
  int64_t kk() const { return kk_; }
  int64_t groups() const { return groups_; }
  int64_t row_blocks() const { return row_blocks_; }
  int64_t rows_per_block() const { return rows_per_block_; }
  const GemmLhs<float>& lhs(int64_t g, int64_t rb) const { return lhs_[g * row_blocks_ + rb]; }
  // A dense (one-group) weight also packed for conv_forward_panels: panels of
  // kPanelRows output channels, (panel, C*kk, kPanelRows), zero rows past K; else null.
  const float* panels() const { return pw_.get(); }
  const float* weights() const { return w_.get(); }  // (K, Cg*kk) row-major
  // The layer's Winograd weights split into `parts` output-channel blocks (3x3 layers
  // that Auto runs as Winograd), made on first use and kept: a layer that never runs
  // Winograd holds none, one that does holds 2 x 36 K Cg floats. Shared, so a call on
  // another thread that wants another split cannot free it under this one.
  std::shared_ptr<const WinogradPack> winograd(int64_t parts) const;
  // A dense weight packed for the channel-vector tiles (conv_kvec_avx512.cpp): blocks
  // of kKvecRows output channels, (block, Cg*kk, kKvecRows), zero rows past K; made on
  // first use (the small-map layers that take those tiles) and kept.
  const float* kvec() const;

 private:
  int64_t K_, Cg_, kk_, groups_, row_blocks_, rows_per_block_;
  AlignedPtr<float> w_, pw_;
  std::vector<GemmLhs<float>> lhs_;
  mutable std::once_flag kvec_once_;
  mutable AlignedPtr<float> kvec_;
  mutable std::mutex winograd_mutex_;
  mutable std::shared_ptr<const WinogradPack> winograd_;
};

// y = epilogue(conv(x, packed weights) + bias) on the im2col + GEMM path, when the
// shape takes that path with its full kernel (no dead taps to trim, not the
// tiny-map tap or batched-images paths); returns false, touching nothing, otherwise.
bool conv_forward_packed(const ConvShape& s, const float* x, const ConvPacked& p, const float* bias, float* y,
                         const Epilogue& e);

// The eager forward on the channel-vector tiles through im2col columns, with the weights
// packed for the call (dense layers with rows under 16 outputs and >= 1024 positions
// over the batch, on AVX-512); returns false, touching nothing, where it does not apply.
bool kvec_eager_pays(const ConvShape& s);
bool conv_forward_kvec_eager(const ConvShape& s, const float* x, const float* w, const float* bias, float* y,
                             const Epilogue& e);

// w (K, CK) packed for the channel-vector tiles (ConvPacked::kvec's layout) by the
// threads, into a workspace: the eager passes' per-call pack.
Workspace<float> pack_kvec_weights(const float* w, int64_t K, int64_t CK);

// w (K, CK) row-major -> blocks of `rows` output channels, (block, CK, rows), zero rows
// past K, blocks [b0, b1) of dst: the panel tiles' layout (rows = kPanelRows) and the
// channel-vector tiles' (kKvecRows), packed once by ConvPacked or per call by
// conv_kvec_taps.cpp.
void pack_row_blocks_into(const float* w, int64_t K, int64_t CK, int64_t rows, int64_t b0, int64_t b1, float* dst);

// y = epilogue(conv(x, packed weights) + bias) for a dense convolution on the
// AVX-512 tiles of conv_panels_avx512.cpp (conv_panels_avx2.cpp's on AVX2-only CPUs), the epilogue in registers: a 1x1 layer
// with stride 1 and no padding reads x as it is; any other layer with at most
// kPanelMaxPositions output positions goes through its im2col matrix (one image at a
// time) when allow_im2col. Returns false, touching nothing, when the shape, the pack
// or the SIMD level does not allow it.
constexpr int64_t kPanelRows = 6;
// The channel-vector tiles (conv_kvec_avx512.cpp): kKvecRows output channels by up to
// kKvecMaxCols positions, taken instead of the panel tiles on AVX-512 for layers with at
// least kKvecMinDepth im2col rows on maps of at most kKvecMaxPositions positions (twice
// that depth on larger ones), prepack.cpp's kvec_pays.
constexpr int64_t kKvecRows = 32, kKvecMaxCols = 14;
constexpr int64_t kKvecMaxPositions = 256, kKvecMinDepth = 96;
constexpr int64_t kPanelMaxPositions = 1024;
// Without AVX-512: 1x1 layers with at most this many input channels, and im2col at batch 1 only.
constexpr int64_t kAvx2PanelMaxChannels = 32;
bool conv_forward_panels(const ConvShape& s, const float* x, const ConvPacked& p, const float* bias, float* y,
                         const Epilogue& e, bool allow_im2col);

// y (N, M) = epilogue(x (N, K) W (M, K)^T + bias) for a few rows of x (N <= kGemvMaxRows),
// streaming W once per row of x (float32 + AVX2; returns false, touching nothing,
// otherwise): a batch-1 Linear, or a 1x1 convolution on a 1x1 map (squeeze-and-excitation).
constexpr int64_t kGemvMaxRows = 4;
bool linear_forward_gemv(const float* x, const float* w, const float* bias, float* y, int64_t N, int64_t K, int64_t M,
                         const Epilogue& e);

namespace avx2_impl {
// y[i] = W[i, :] . x for i < M; W (M, K) row-major (prepack_gemv_avx2.cpp).
void gemv_rows(int64_t M, int64_t K, const float* W, const float* x, float* y);
// avx512_impl::panel_tile on AVX2 + FMA (conv_panels_avx2.cpp), same arguments.
void panel_tile(int64_t C, const float* x, int64_t ldx, const float* wp, int64_t rows, const float* bias, float* y,
                const float* res, int64_t ldy, int64_t cols, const Epilogue& e, bool accumulate, bool finish,
                const float* prefetch, const float* weight_prefetch = nullptr);
}  // namespace avx2_impl

namespace avx512_impl {
// y (rows <= kKvecRows, np <= kKvecMaxCols), ld ldy = w^T x + (accumulate ? y : bias),
// then the epilogue if finish (res, may be null, read at y's offsets); w a (C,
// kKvecRows) slice of ConvPacked::kvec, x (C rows, ld ldx) from its first position.
// wnext (or null): the (C, kKvecRows) weight slice the caller takes next, fetched into L2
// meanwhile (a frozen graph's weights come from L3 or memory).
void kvec_tile(int64_t C, const float* x, int64_t ldx, const float* w, int64_t rows, const float* bias, float* y,
               const float* res, int64_t ldy, int64_t np, const Epilogue& e, bool accumulate, bool finish,
               const float* wnext);
// kvec_tile with row c of x at x + off[c] (conv_kvec_taps.cpp: a zero-bordered image and
// each (channel, kh, kw) tap's offset in it, positions sw (1 or 2) columns apart), over
// all CK rows in one pass, y = w^T x + bias (no epilogue).
void kvec_taps_tile(int64_t CK, const float* x, const int32_t* off, int64_t sw, const float* w, int64_t rows,
                    const float* bias, float* y, int64_t ldy, int64_t np);
// The weight gradient on the same tiles (conv_kvec_taps.cpp): dy (K, P) of one image ->
// dyt (64-channel blocks, P, 64), block kb at dyt + kb kb_stride, for blocks [kb0, kb1);
// then gw (rows <= 16 KV, ld ldw) columns [0, R KW) += the products of dyt with the
// bordered images x (Wp wide, from the tile's first kernel row; output row oh reads from
// row oh sh, column ow from ow sw) over the Ho x Wo positions of `images` images, x_image
// and dyt_image floats apart. kvec_weight_tile runs KV = 4 with (R, KW) in {(1|2, 3),
// (1, 4), (1, 5)}, KV = 2 with R up to 3, 3, 2 for KW = 3, 4, 5, sw 1 or 2, and returns
// false, touching nothing, for any other.
void kvec_transpose_grad(const float* dy, int64_t K, int64_t P, float* dyt, int64_t kb_stride, int64_t kb0,
                         int64_t kb1);
bool kvec_weight_tile(int64_t R, int64_t KW, int64_t KV, int64_t images, int64_t Ho, int64_t Wo, int64_t Wp, int64_t sh,
                      int64_t sw, const float* dyt, int64_t dyt_image, const float* x, int64_t x_image, float* gw,
                      int64_t ldw, int64_t rows);
// avx2_impl::gemv_rows on AVX-512 (prepack_gemv_avx512.cpp), same arguments.
void gemv_rows(int64_t M, int64_t K, const float* W, const float* x, float* y);
// y (rows, cols), ld ldy = wp^T x + (accumulate ? y : bias), then the epilogue if
// finish (res, may be null, read at y's offsets): one tile, wp a (C, kPanelRows) panel
// slice, rows <= kPanelRows, cols <= 64 positions of x (C rows, ld ldx). prefetch (or
// null): the next tile's x (same rows and ld), brought into L1 meanwhile. weight_prefetch
// (or null): the next tile's panel slice, fetched into L2 a line per step of C: at batch 1
// on a small map the weights stream from memory panel slice by panel slice, and each
// slice starts a stream of its own that the hardware prefetchers pick up too late.
void panel_tile(int64_t C, const float* x, int64_t ldx, const float* wp, int64_t rows, const float* bias, float* y,
                const float* res, int64_t ldy, int64_t cols, const Epilogue& e, bool accumulate, bool finish,
                const float* prefetch, const float* weight_prefetch = nullptr);
}  // namespace avx512_impl

}  // namespace cnnfast::cpu
