// Grouped convolution with few channels per group (2..16 in and out, e.g. ResNeXt's
// 32-group 3x3 layers with 4-16 channels per group), 2-D: a direct kernel
// (conv_grouped_kernels.h, AVX-512 and AVX2 builds) driven by conv_grouped.cpp. The same
// kernel takes the passes of other stride-1 layers where it measured faster than
// im2col + GEMM (dilated 3x3, few input channels: grouped_direct_applicable).
//
// im2col + GEMM is a poor fit there: each group's GEMM is (Kg <= 16) x (Cg*k*k <= 144)
// against a column matrix it first has to write, so the im2col traffic and the
// GEMM's packing cost as much as the 8-16 FMAs per column element. The direct
// kernel loads each input row segment once per tap (a masked load: padding and
// the row's tail are masked-off lanes, never a scalar loop) and feeds it to the
// accumulators of up to 8 output channels x 32 output columns.
#pragma once
#include <cstdint>

#include "cpu/conv.h"

namespace cnnfast::cpu {

namespace conv_detail {
// Whether the direct kernel takes this pass of this shape at the current SIMD level
// (float32, avx512), in place of the im2col + GEMM that Auto would otherwise run.
enum class Pass { Forward, Data, Weight };
bool grouped_direct_applicable(const ConvShape& s, Pass pass);
// The three passes; each returns false (and does nothing) when the shape or type is
// not the kernel's, so the caller falls through to im2col + GEMM.
template <class T>
bool grouped_forward(const ConvShape& s, const T* x, const T* w, const T* bias, T* y);
template <class T>
bool grouped_backward_data(const ConvShape& s, const T* gy, const T* w, T* gx);
template <class T>
bool grouped_backward_weight(const ConvShape& s, const T* gy, const T* x, T* gw);
}  // namespace conv_detail

// One (image, group) plane set. Input: Ci channels of Hi x Wi; output: Ko channels
// of Ho x Wo; tap (kh, kw) of output (oh, ow) reads input
// (oh*sh + oy + kh*dh, ow + ox + kw*dw), zero outside the input (stride 1 along W:
// a strided layer's forward first splits its input into column phases).
struct GroupedPlane {
  int64_t Ci, Hi, Wi, Ko, Ho, Wo, KH, KW, dh, dw, oy, ox;
  int64_t sh = 1;
  bool accumulate = false;
};

// Each level's kernels (conv_grouped_kernels.h, compiled by conv_grouped_avx512.cpp
// and conv_grouped_avx2.cpp):
//   grouped_corr:        y[k] = bias[k] + sum_{c,kh,kw} w[k][c][kh][kw] * x[c][...]
//                        (writes y, or adds to it with `accumulate`)
//   grouped_corr_weight: gw[k][c][kh][kw] += sum_{oh,ow} gy[k][oh][ow] * x[c][...]   (sh = 1)
//   column_phase:        column phase q of `rows` rows of width W at stride sw:
//                        dst[r][j] = x[r][j*sw + q - pad] for j < Wq, zero outside the row.
#define CNNFAST_DECLARE_GROUPED_LEVEL()                                                                     \
  void grouped_corr(const GroupedPlane& p, const float* x, const float* w, const float* bias, float* y);   \
  void grouped_corr_weight(const GroupedPlane& p, const float* x, const float* gy, float* gw);             \
  void column_phase(const float* x, int64_t rows, int64_t W, int64_t sw, int64_t q, int64_t pad, int64_t Wq, \
                    float* dst);
namespace avx2_impl {
CNNFAST_DECLARE_GROUPED_LEVEL()
}  // namespace avx2_impl
namespace avx512_impl {
CNNFAST_DECLARE_GROUPED_LEVEL()
}  // namespace avx512_impl
#undef CNNFAST_DECLARE_GROUPED_LEVEL

}  // namespace cnnfast::cpu
