// Pieces the convolution algorithms share (conv.cpp chooses between them): one
// file per algorithm, as conv.h lists them,
//   conv_im2col.cpp     im2col / col2im column maps (ColumnMap, conv_im2col.h)
//   conv_gemm.cpp       the im2col + GEMM driver for the three passes
//   conv_taps.cpp       tap-by-tap GEMMs for tiny maps
//   conv_smallmap.cpp   weight-streaming direct passes for small maps and batches
//   conv_kvec_taps.cpp  channel-vector tiles from a zero-bordered image
//   conv_depthwise.cpp  depthwise layers (plane kernels in conv_depthwise.h)
//   conv_window.cpp     dropping kernel taps that only read padding
//   conv_dilated.cpp    dilated 3x3 layers as undilated phases on Winograd
//   winograd.cpp        Winograd F(4x4, 3x3)
//   linear.cpp          bias passes and the fully connected layer
// Everything here is generic (baseline) code; the wide kernels sit behind gemm.h
// and the *_avx2 / *_avx512 files.
#pragma once
#include <cstdint>
#include <vector>

#include "cpu/conv.h"
#include "cpu/epilogue.h"

namespace cnnfast::cpu::conv_detail {

// ceil(a / b) for b > 0 and any sign of a; no a + b - 1, which wraps for a stride near 2^63.
inline int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? a / b + (a % b != 0) : -((-a) / b); }

// Output positions o in [0, n_out) whose input index o*s + off falls in [0, n_in).
inline void valid_range(int64_t n_out, int64_t n_in, int64_t s, int64_t off, int64_t& lo, int64_t& hi) {
  lo = std::max<int64_t>(0, ceil_div(-off, s));
  hi = std::min<int64_t>(n_out, ceil_div(n_in - off, s));
  if (hi < lo) hi = lo;
}

// f(tap, p, offset) for every kernel tap (in weight order) and output position p:
// where the tap reads inside one channel's (D, H, W) volume, or -1 on padding.
template <class F>
void for_each_tap_read(const ConvShape& s, F&& f) {
  for (int64_t a = 0, t = 0; a < s.k[0]; ++a)
    for (int64_t b = 0; b < s.k[1]; ++b)
      for (int64_t e = 0; e < s.k[2]; ++e, ++t)
        for (int64_t od = 0, p = 0; od < s.out[0]; ++od)
          for (int64_t oh = 0; oh < s.out[1]; ++oh)
            for (int64_t ow = 0; ow < s.out[2]; ++ow, ++p) {
              const int64_t id = od * s.stride[0] - s.pad0[0] + a * s.dil[0];
              const int64_t ih = oh * s.stride[1] - s.pad0[1] + b * s.dil[1];
              const int64_t iw = ow * s.stride[2] - s.pad0[2] + e * s.dil[2];
              const bool in = id >= 0 && id < s.in[0] && ih >= 0 && ih < s.in[1] && iw >= 0 && iw < s.in[2];
              f(t, p, in ? (id * s.in[1] + ih) * s.in[2] + iw : int64_t(-1));
            }
}

// w (K, Cg, taps) -> wt (C, Kg, taps): each group's two channel axes swapped and
// its taps in reverse order (rotated by 180 degrees), the kernel whose stride-1
// correlation with grad_y is grad_x.
template <class T>
void flip_swap_weights(const ConvShape& s, const T* w, T* wt) {
  const int64_t Cg = s.Cg(), Kg = s.Kg(), taps = s.k_size();
  for (int64_t g = 0; g < s.groups; ++g)
    for (int64_t k = 0; k < Kg; ++k)
      for (int64_t c = 0; c < Cg; ++c)
        for (int64_t t = 0; t < taps; ++t)
          wt[((g * Cg + c) * Kg + k) * taps + (taps - 1 - t)] = w[((g * Kg + k) * Cg + c) * taps + t];
}

// A 2-D layer in the (D = 1, H, W) form: no depth extent, kernel or depth padding.
inline bool is_two_d(const ConvShape& s) {
  return s.in[0] == 1 && s.out[0] == 1 && s.k[0] == 1 && s.pad0[0] == 0 && s.pad1[0] == 0;
}

// A depthwise layer: one input channel per group.
inline bool is_depthwise(const ConvShape& s) { return s.groups > 1 && s.Cg() == 1; }
// Whether a float32 depthwise layer runs on avx512_impl::dw_rows_plane (conv_depthwise.cpp).
bool depthwise_rows_pay(const ConvShape& s);

// rows (count, stride ld) of width n: row i += b[i].
template <class T>
void add_bias_rows(T* y, const T* b, int64_t count, int64_t ld, int64_t n) {
  for (int64_t i = 0; i < count; ++i) {
    const T v = b[i];
    T* row = y + i * ld;
    for (int64_t j = 0; j < n; ++j) row[j] += v;
  }
}

// Below this many output positions per image, one image's GEMM is close to a
// matrix-vector product that streams the whole weight per image (ResNet-18 on
// 32x32 inputs: layer4's 3x3 conv has P = 1 and a 9.4 MB weight, 16 ms for a
// batch of 32 against 1.1 ms in PyTorch). The batched paths below put the
// columns of several images side by side so they share one pass over the weight.
constexpr int64_t kSmallOutput = 64;
// Columns per batched GEMM of small maps. Each product streams the whole weight
// matrix, so wider blocks reuse it more: 256 -> 768 (2 threads, Zen 5, ms, forward /
// grad_x): 3x3 C512 at 7x7 batch 32 20.3 / 19.8 -> 19.8 / 18.3, C512 at 6x6 18.2 ->
// 15.7 forward, C256 at 4x4 batch 32 2.65 -> 2.31; C128 at 7x7 batch 16 unchanged.
constexpr int64_t kBatchedColumns = 768;

int64_t images_per_block(const ConvShape& s);

// ---- conv_gemm.cpp: im2col + GEMM (and the tap paths for tiny maps) ----
template <class T>
void forward_gemm(const ConvShape& s, const T* x, const T* w, const T* bias, T* y, const Epilogue* epi = nullptr);
template <class T>
void backward_data_gemm(const ConvShape& s, const T* gy, const T* w, T* gx);
template <class T>
void backward_weight_gemm(const ConvShape& s, const T* gy, const T* x, T* gw);

// ---- conv_taps.cpp ----
// Tiny maps leave most of the column matrix zero even when every tap is live
// somewhere: a 3x3 kernel with padding 1 on a 2x2 map reads 16 real pixels of its
// 36 (tap, output) slots, on a 4x4 map 100 of 144. There the convolution is run
// tap by tap over only the (output, input) pairs that exist,
//   y[:, o] += W_t x[:, i],  grad_x[:, i] += W_t^T grad_y[:, o],  grad_W_t += grad_y[:, o] x[:, i]^T,
// each tap one GEMM whose columns are its pairs over a block of images, gathered
// and scattered around it. The arithmetic drops to the real products (2.25x fewer
// on 2x2 maps); below kTapDensity of the dense work the gathers are worth it.
struct TapPairs {
  std::vector<int64_t> start;  // tap t's pairs are [start[t], start[t + 1])
  std::vector<int32_t> out, in;  // output position, input offset in one channel's volume
};
// Fills tp and says whether the tap path pays for this shape.
bool tap_pairs(const ConvShape& s, TapPairs& tp);
template <class T>
void forward_taps(const ConvShape& s, const TapPairs& tp, const T* x, const T* w, const T* bias, T* y);
template <class T>
void backward_data_taps(const ConvShape& s, const TapPairs& tp, const T* gy, const T* w, T* gx);
template <class T>
void backward_weight_taps(const ConvShape& s, const TapPairs& tp, const T* gy, const T* x, T* gw);

// ---- conv_depthwise.cpp: one (image, channel) plane per task ----
template <class T>
void depthwise_forward(const ConvShape& s, const T* x, const T* w, const T* bias, T* y);
template <class T>
void depthwise_backward_data(const ConvShape& s, const T* gy, const T* w, T* gx);
template <class T>
void depthwise_backward_weight(const ConvShape& s, const T* gy, const T* x, T* gw);

// ---- conv_dilated.cpp ----
// Whether a 2-D 3x3 stride-1 dilated layer runs faster as its dilation phases on
// Winograd (float32 callers): below AVX-512, every phase holds inputs and outputs and
// the smallest phase would take Winograd on choose_algo.
bool dilated_winograd_pays(const ConvShape& s);
template <class T>
void dilated_forward_winograd(const ConvShape& s, const T* x, const T* w, const T* bias, T* y);
template <class T>
void dilated_backward_data_winograd(const ConvShape& s, const T* gy, const T* w, T* gx);

// ---- conv_kvec_taps.cpp ----
// Whether a float32 layer's forward runs on the channel-vector tiles straight from a
// zero-bordered image (AVX-512 at full rate, dense, 2-D, stride 1 or 2, no dilation, rows
// of >= 16 outputs, >= 7 with weights a frozen graph packed, layers Auto does not give
// Winograd), and that forward: y = conv(x, w) + bias, then the epilogue e if given (on
// each block of 32 channels as it is written). packed: w already in ConvPacked::kvec's
// layout (a frozen graph's), or null to pack it here.
bool kvec_taps_pays(const ConvShape& s, bool prepacked = false);
void forward_kvec_taps(const ConvShape& s, const float* x, const float* w, const float* bias, float* y,
                       const float* packed = nullptr, const Epilogue* e = nullptr);
// The stride-1 grad_x as a forward: grad_y convolved with the kernel rotated by 180
// degrees and its channel axes swapped (flip_swap_weights), padding dil (k - 1) - pad;
// and whether that forward takes the tiles above (groups 1, stride 1).
ConvShape data_pass_as_forward(const ConvShape& s);
bool kvec_taps_data_pays(const ConvShape& s);
// grad_w += on the same tiles, 64 channels by the taps of one or two kernel rows,
// reducing over every output position of every image: dense, 2-D, stride 1 or 2, no
// dilation, 3 to 5 kernel columns, rows of >= 4 outputs (>= 16 past 256 channels),
// 64-channel blocks (32 for layers of at most 32) >= 85% full.
bool kvec_weight_pays(const ConvShape& s);
void backward_weight_kvec_taps(const ConvShape& s, const float* gy, const float* x, float* gw);

// x (C, H, W) -> xp (C, Hp, Wp): x's rows placed `top` rows down and `left` columns in
// (either may be negative: rows or columns outside xp are dropped), zeros elsewhere.
void border_image(const float* x, int64_t C, int64_t H, int64_t W, int64_t top, int64_t left, int64_t Hp, int64_t Wp,
                  float* xp);
// The extent along spatial dim d (1, 2) of that bordered image for layer s: every tap of
// every output reads inside it.
int64_t bordered_extent(const ConvShape& s, int d);

// ---- conv_kvec_rows.cpp ----
// Whether a float32 layer's forward runs on the row tiles (64 output channels by up to 7
// positions of an output row, live taps only): AVX-512, dense, 2-D, column stride 1 or 2,
// any row stride and dilation, padding >= 0; and that forward, y = conv(x, w) + bias,
// then the epilogue e if given, on each tile as it is stored.
bool kvec_rows_applies(const ConvShape& s);
bool kvec_rows_forward_pays(const ConvShape& s);
// The stride-1 grad_x as the forward of grad_y on the same tiles (data_pass_as_forward),
// the weights rotated and swapped as they are packed.
bool kvec_rows_data_pays(const ConvShape& s);
void backward_data_kvec_rows(const ConvShape& s, const float* gy, const float* w, float* gx);
// The bf16 forward on the VDPBF16PS tiles (bf16.h's AVX512-BF16 path; float32 inputs are
// rounded to bf16 as they are laid out), float32 accumulation; no epilogue.
bool kvec_rows_bf16_pays(const ConvShape& s);
template <class T>
void forward_kvec_rows_bf16(const ConvShape& s, const T* x, const T* w, const float* bias, float* y);
// The stride-1 grad_x on them as the forward of grad_y (data_pass_as_forward), the
// weights rotated and swapped while packed; kvec_rows_bf16_pays(data_pass_as_forward(s)).
template <class T>
void backward_data_kvec_rows_bf16(const ConvShape& s, const T* gy, const T* w, float* gx);
// grad_w (written, not added) on the VDPBF16PS weight tiles: stride 1, the sum over
// positions two at a time.
bool kvec_rows_bf16_weight_pays(const ConvShape& s);
template <class T>
void backward_weight_kvec_rows_bf16(const ConvShape& s, const T* gy, const T* x, float* gw);
// -1: the rule above decides (the default, or CNNFAST_KVEC_ROWS's value), 0: never, 1:
// wherever the tiles apply. Returns the previous mode.
int set_kvec_rows_mode(int mode);
void forward_kvec_rows(const ConvShape& s, const float* x, const float* w, const float* bias, float* y,
                       const Epilogue* e = nullptr);

// ---- conv_smallmap.cpp ----
// Weight-streaming direct passes for layers bound by their weights (small maps and
// batches): AVX-512 at full rate, float32, 2-D, groups 1, padding >= 0; the forward and
// grad_w at any stride, grad_x at stride 1; any dilation. grad_w writes (accumulate
// false) or adds to gw.
bool smallmap_forward_pays(const ConvShape& s);
// The share of the forward's FMAs that are real products: vector lanes filled with
// positions times taps that read inside the image (3x3 at 7x7 0.63, at 4x4 0.28).
double smallmap_useful_share(const ConvShape& s);
bool smallmap_data_pays(const ConvShape& s);
bool smallmap_weight_pays(const ConvShape& s);
void forward_smallmap(const ConvShape& s, const float* x, const float* w, const float* bias, float* y);
void backward_data_smallmap(const ConvShape& s, const float* gy, const float* w, float* gx);
void backward_weight_smallmap(const ConvShape& s, const float* gy, const float* x, float* gw, bool accumulate);

// ---- conv_window.cpp ----
// Dead kernel taps. A tap whose input position is padding for every output
// (ResNet-18 on 32x32 inputs: layer4's 3x3 convolutions see a 1x1 or 2x2 map
// with padding 1, so 8 of the 9 taps of the second one only ever read zeros)
// contributes nothing to y or grad_x and has an exactly zero weight gradient.
// Per spatial dim the live taps are a set; the convolution is rerun on the
// smallest kernel window [lo, hi) that holds them, with the padding shifted so
// every remaining tap reads the same input positions as before: the result is
// the same sum without the zero terms, not an approximation. The window is
// widened where trimming would make a padding negative, so every algorithm
// below still sees a normal shape.
struct TapWindow {
  ConvShape s;             // the convolution over the window's taps
  int64_t lo[3] = {0, 0, 0};
  bool trimmed = false;    // some taps are dropped
  bool empty = false;      // no tap is live: y = bias, grad_x = 0, grad_w += 0
};

TapWindow live_tap_window(const ConvShape& s);
// The window's taps of w (K, Cg, k) -> wc (K, Cg, window) when `to_window`, or
// the adjoint, w[taps of the window] += wc, otherwise.
template <class T>
void copy_window(const ConvShape& s, const TapWindow& t, T* w, T* wc, bool to_window);
// w (K, Cg, k) = the window's taps wc (K, Cg, window) with zeros at every other tap,
// written in one pass (w need not be initialised).
template <class T>
void expand_window(const ConvShape& s, const TapWindow& t, T* w, const T* wc);

}  // namespace cnnfast::cpu::conv_detail
