// Convolution (1-D, 2-D, 3-D; strides, dilation, groups, explicit (start, end)
// padding) and its two backward passes, on the GEMM of gemm.h.
//
// Every problem is carried as 3-D: a 1-D or 2-D convolution is a 3-D one whose
// leading spatial sizes, kernel sizes, strides and dilations are 1 and pads 0.
// Layouts (PyTorch): x (N, C, D, H, W), weight (K, C/groups, kD, kH, kW),
// y (N, K, Do, Ho, Wo). Transposed convolution is the adjoint of this one: its
// forward is conv_backward_data and its weight layout (C_in, C_out/groups, k...)
// is exactly `weight` with K = C_in, C = C_out (see the binding layer).
//
// Gradient contract: conv_backward_data writes grad_x (=); conv_backward_weight
// and bias_backward accumulate into grad_w / grad_b (+=).
//
// Algorithms: im2col + GEMM for every shape (a 1x1 stride-1 unpadded layer skips
// im2col and multiplies the input directly), and Winograd F(4x4, 3x3) for 2-D
// 3x3 stride-1 dilation-1 layers (winograd.h). ConvAlgo::Auto picks per shape
// with choose_algo(); see its comment for the rule.
//
// Kernel taps that read only padding for every output (a 3x3 kernel on a 1x1 map
// with padding 1 has eight) are skipped exactly: every algorithm except a forced
// Winograd runs on the smallest window of live taps (conv_window.cpp, live_tap_window).
#pragma once
#include <cstdint>

namespace cnnfast::cpu {

struct ConvShape {
  int64_t N = 1, C = 1, K = 1, groups = 1;
  int64_t in[3] = {1, 1, 1};   // D, H, W of x
  int64_t out[3] = {1, 1, 1};  // D, H, W of y
  int64_t k[3] = {1, 1, 1};
  int64_t stride[3] = {1, 1, 1};
  int64_t dil[3] = {1, 1, 1};
  int64_t pad0[3] = {0, 0, 0};  // padding before each spatial dim
  int64_t pad1[3] = {0, 0, 0};  // padding after

  // Always inlined: these headers are included by the per-ISA objects (_avx2, _avx512,
  // _amx), and an out-of-line copy emitted there would be a weak symbol that the linker
  // may pick for every caller (cmake/check_isa_symbols.py refuses such builds; a CI
  // compile once left Cg()/Kg() out of line in gemm_bf16_amx.cpp).
  [[gnu::always_inline]] int64_t Cg() const { return C / groups; }
  [[gnu::always_inline]] int64_t Kg() const { return K / groups; }
  [[gnu::always_inline]] int64_t in_size() const { return in[0] * in[1] * in[2]; }
  [[gnu::always_inline]] int64_t out_size() const { return out[0] * out[1] * out[2]; }
  [[gnu::always_inline]] int64_t k_size() const { return k[0] * k[1] * k[2]; }
  // The output size the padding and kernel imply (floor division, as PyTorch).
  [[gnu::always_inline]] static int64_t natural_out(int64_t in, int64_t k, int64_t s, int64_t d, int64_t p0, int64_t p1) {
    return (in + p0 + p1 - d * (k - 1) - 1) / s + 1;
  }
};

// Direct is the depthwise kernel (conv_depthwise.h) for groups > 1 with one input
// channel per group; Auto picks it there, and it is not offered to users.
enum class ConvAlgo { Auto = 0, Gemm = 1, Winograd = 2, Direct = 3 };

// Whether Winograd F(4x4, 3x3) computes this forward (2-D, 3x3, stride 1, dilation 1).
bool winograd_applicable(const ConvShape& s);
// The algorithm Auto resolves to for this forward / backward-data problem.
ConvAlgo choose_algo(const ConvShape& s, bool is_float32);
// The forward's choice: choose_algo's, except widening layers from 16 input channels per
// group, whose forward runs faster on the GEMM (grad_x keeps Winograd).
ConvAlgo choose_forward_algo(const ConvShape& s, bool is_float32);

// y (N, K, out) = conv(x (N, C, in), w (K, C/g, k)) + bias (K,) (bias may be
// null). Writes every element of y; the bias is added while each block of y is
// still in cache rather than in a separate pass.
template <class T>
void conv_forward(const ConvShape& s, const T* x, const T* w, const T* bias, T* y, ConvAlgo algo);

struct Epilogue;     // cpu/epilogue.h
class ConvPacked;    // cpu/prepack.h
// conv_forward, then y = act(y + residual) (cpu/epilogue.h), run on each block of y
// right after the kernel wrote it (im2col + GEMM, depthwise) instead of as a pass of
// its own; other algorithms take the separate pass. Under Auto, a Winograd-sized layer
// with fewer than 512 output positions over the batch runs on the GEMM instead
// (conv_fused.cpp says why). `packed` (float32, may be null):
// w packed by ConvPacked, used where the GEMM path runs the full kernel.
template <class T>
void conv_forward_fused(const ConvShape& s, const T* x, const T* w, const T* bias, T* y, ConvAlgo algo,
                        const Epilogue& e, const ConvPacked* packed = nullptr);

// grad_x (N, C, in) = conv^T(grad_y (N, K, out), w). Writes (=) every element.
template <class T>
void conv_backward_data(const ConvShape& s, const T* grad_y, const T* w, T* grad_x, ConvAlgo algo);

// grad_w (K, C/g, k) += correlation of grad_y with x.
template <class T>
void conv_backward_weight(const ConvShape& s, const T* grad_y, const T* x, T* grad_w, ConvAlgo algo);

// The same into a fresh (uninitialised) grad_w, which it writes (=) in full. When dead
// taps are dropped, grad_w is written in one pass (zeros and the window's values) instead
// of zeroed and then updated in place: a 512x512 3x3 layer on a 1x1 map otherwise streams
// its 9.4 MB three times for a gradient that is 8/9 zeros.
template <class T>
void conv_backward_weight_fresh(const ConvShape& s, const T* grad_y, const T* x, T* grad_w, ConvAlgo algo);

// y (N, C, S) += b[c] ; grad_b[c] += sum over N and S of grad_y.
template <class T>
void bias_forward(T* y, const T* b, int64_t N, int64_t C, int64_t S);
template <class T>
void bias_backward(const T* grad_y, T* grad_b, int64_t N, int64_t C, int64_t S);

// Fully connected layer on the same GEMM: x (M, in), w (out, in), y (M, out).
// linear_forward writes y = x w^T (+ b if b != nullptr); linear_backward writes
// grad_x (if not null) and accumulates grad_w, grad_b (if not null).
template <class T>
void linear_forward(const T* x, const T* w, const T* b, T* y, int64_t M, int64_t in, int64_t out);
template <class T>
void linear_backward(const T* grad_y, const T* x, const T* w, T* grad_x, T* grad_w, T* grad_b, int64_t M, int64_t in,
                     int64_t out);

namespace avx2_impl {
// Depthwise plane kernels (conv_depthwise.h) built for AVX2; see that file.
void dw_forward_plane(const ConvShape& s, const float* x, const float* w, float* y);
void dw_forward_plane_padded(const ConvShape& s, const float* x, const float* w, float* y, float* scratch);
void dw_backward_data_plane(const ConvShape& s, const float* gy, const float* w, float* gx);
void dw_backward_weight_plane(const ConvShape& s, const float* gy, const float* x, float* gw);
// Register-blocked 2-D kernel (3x3 / 5x5, stride 1, dilation 1, padding < kernel):
// y (Ho, Wo) = bias + depthwise conv of one plane; writes every element.
bool dw_direct_applicable(const ConvShape& s);
void dw_direct_plane(const ConvShape& s, const float* x, const float* w, float bias, float* y);
// gw (k) += correlation of one grad_y plane with one x plane, same conditions.
void dw_direct_weight_plane(const ConvShape& s, const float* gy, const float* x, float* gw);
// Channel-blocked depthwise forward (conv_depthwise_blocked_kernels.h): 2-D, one
// output channel per input channel, any kernel/stride/dilation, padding >= 0;
// dw_blocked_block: channels [c0, c0 + dw_blocked_lanes()) of image n (fewer at the
// end), y = conv + bias; scratch: dw_blocked_scratch(s) floats, 64-byte aligned.
bool dw_blocked_applicable(const ConvShape& s);
int64_t dw_blocked_scratch(const ConvShape& s);
int64_t dw_blocked_lanes();
void dw_blocked_block(const ConvShape& s, const float* x, const float* w, const float* bias, float* y, int64_t n,
                      int64_t c0, float* scratch);
}  // namespace avx2_impl

namespace avx512_impl {
// Depthwise planes read and written in NCHW, 16 output columns a zmm with masked loads
// for the borders (conv_depthwise_rows_avx512.cpp): square 3x3 / 5x5 kernels, stride 1
// or 2 on both axes, dilation 1, padding below the kernel size, rows of <= 1024 outputs.
// dw_rows_plane writes y (Ho, Wo) = bias + the plane's convolution, every element;
// scratch: dw_rows_scratch(s) floats (none at stride 1); [lo, hi): memory around x that
// may be read (the whole input tensor), which lets taps load whole vectors.
bool dw_rows_applicable(const ConvShape& s);
int64_t dw_rows_scratch(const ConvShape& s);
void dw_rows_plane(const ConvShape& s, const float* x, const float* w, float bias, float* y, float* scratch,
                   const float* lo, const float* hi);
// The same at the AVX-512 level, 16 channels a block (conv_depthwise_blocked_avx512.cpp).
int64_t dw_blocked_scratch(const ConvShape& s);
int64_t dw_blocked_lanes();
void dw_blocked_block(const ConvShape& s, const float* x, const float* w, const float* bias, float* y, int64_t n,
                      int64_t c0, float* scratch);
// Direct forward of 2-D layers with few input channels, NCHW (conv_stem_avx512.cpp):
// groups 1, C <= 4, strides 1 to 4, dilation 1, kernels up to 11x11, padding >= 0.
// stem_pack lays w and bias out as stem_rows reads them (stem_packed_size(s) floats);
// stem_rows writes output rows [oh0, oh1) of image n, every channel, with the epilogue
// applied; scratch: stem_scratch(s, oh1 - oh0) floats.
bool stem_applicable(const ConvShape& s);
int64_t stem_packed_size(const ConvShape& s);
void stem_pack(const ConvShape& s, const float* w, const float* bias, float* packed);
int64_t stem_scratch(const ConvShape& s, int64_t rows);
void stem_rows(const ConvShape& s, const float* x, const float* packed, float* y, const Epilogue& e, int64_t n,
               int64_t oh0, int64_t oh1, float* scratch);
}  // namespace avx512_impl

// Whether Auto's fused forward runs a layer on the stem kernel above (conv_fused.cpp).
bool stem_pays(const ConvShape& s);

}  // namespace cnnfast::cpu
