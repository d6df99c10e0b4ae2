// Convolution hyper-parameter checks shared by the CPU and CUDA bindings
// (bind_conv.cpp, bind_cuda_conv.cpp), so both backends accept and reject the
// same stride / padding / dilation / groups with the same messages.
#pragma once
#include <cstdint>
#include <vector>

#include "core/checked_math.h"
#include "core/error.h"
#include "cpu/conv.h"

namespace cnnfast::bind {

using ConvPads = std::vector<std::vector<int64_t>>;  // one (start, end) pair per spatial dim

// Checks the hyper-parameters of an nd-D layer and copies them into slots 3-nd..2.
inline void fill_params(cpu::ConvShape& s, int nd, const std::vector<int64_t>& stride, const ConvPads& padding,
                        const std::vector<int64_t>& dilation, int64_t groups) {
  CNNFAST_CHECK(int(stride.size()) == nd, ValueError, "stride: expected ", nd, " values, got ", stride.size());
  CNNFAST_CHECK(int(dilation.size()) == nd, ValueError, "dilation: expected ", nd, " values, got ",
                dilation.size());
  CNNFAST_CHECK(int(padding.size()) == nd, ValueError, "padding: expected ", nd, " (start, end) pairs, got ",
                padding.size());
  CNNFAST_CHECK(groups >= 1, ValueError, "groups: expected a positive int, got ", groups);
  for (int i = 0; i < nd; ++i) {
    const int d = 3 - nd + i;
    CNNFAST_CHECK(stride[i] >= 1, ValueError, "stride: expected positive values, got ", stride[i]);
    CNNFAST_CHECK(dilation[i] >= 1, ValueError, "dilation: expected positive values, got ", dilation[i]);
    CNNFAST_CHECK(padding[i].size() == 2, ValueError, "padding: expected (start, end) pairs, got one with ",
                  padding[i].size(), " values");
    CNNFAST_CHECK(padding[i][0] >= 0 && padding[i][1] >= 0, ValueError,
                  "padding: expected non-negative values, got (", padding[i][0], ", ", padding[i][1], ")");
    s.stride[d] = stride[i];
    s.dil[d] = dilation[i];
    s.pad0[d] = padding[i][0];
    s.pad1[d] = padding[i][1];
  }
  s.groups = groups;
}

// Output extent of spatial slot d (dim_index for messages) of a convolution with
// s.in, s.k and the hyper-parameters filled in. Stride, padding and dilation are
// arbitrary int64s from Python, so every step is checked: a wrapped sum would
// pass the span check and size y from garbage.
inline int64_t conv_out_extent(const cpu::ConvShape& s, int d, int dim_index) {
  const int64_t span = checked_add(checked_mul(s.dil[d], s.k[d] - 1, "dilation"), 1, "dilation");
  const int64_t padded = checked_add(checked_add(s.in[d], s.pad0[d], "padding"), s.pad1[d], "padding");
  CNNFAST_CHECK(span <= padded, ValueError, "weight: kernel size ", s.k[d], " (dilated extent ", span,
                ") is larger than the padded input size ", padded, " in spatial dim ", dim_index);
  return (padded - span) / s.stride[d] + 1;
}

// The transposed convolution's output extent in slot d, (in - 1) * stride -
// start - end + dilation * (k - 1) + output_padding + 1, checked as above.
inline int64_t conv_transpose_out_extent(const cpu::ConvShape& s, int d, int64_t output_padding, int dim_index) {
  int64_t v = checked_mul(s.out[d] - 1, s.stride[d], "stride");
  v = checked_add(v, checked_mul(s.dil[d], s.k[d] - 1, "dilation"), "dilation");
  v = checked_add(checked_add(v, output_padding, "output_padding"), 1, "output_padding");
  v = checked_sub(checked_sub(v, s.pad0[d], "padding"), s.pad1[d], "padding");
  CNNFAST_CHECK(v >= 1, ValueError, "padding: the transposed output size in spatial dim ", dim_index, " would be ",
                v, "; expected a positive size (padding too large for the input and kernel)");
  return v;
}

// The shape of a convolution from x (N, C, in...) and weight (K, C/g, k...), given as
// shape vectors whose rank, sizes and dtypes the caller has checked (each binding checks
// its own dtypes: float32/64, bfloat16, device arrays).
inline cpu::ConvShape conv_shape_from(const std::vector<int64_t>& x, const std::vector<int64_t>& w,
                                      const std::vector<int64_t>& stride, const ConvPads& padding,
                                      const std::vector<int64_t>& dilation, int64_t groups, int nd) {
  cpu::ConvShape s;
  fill_params(s, nd, stride, padding, dilation, groups);
  s.N = x[0];
  s.C = x[1];
  s.K = w[0];
  CNNFAST_CHECK(s.C % groups == 0 && w[1] * groups == s.C, ValueError, "weight: expected shape[1] * groups == ",
                "x channels (", s.C, ") with groups=", groups, ", got weight shape ", shape_str(w));
  CNNFAST_CHECK(s.K % groups == 0, ValueError, "weight: expected out channels (", s.K, ") divisible by groups=",
                groups);
  for (int i = 0; i < nd; ++i) {
    const int d = 3 - nd + i;
    s.in[d] = x[2 + i];
    s.k[d] = w[2 + i];
    s.out[d] = conv_out_extent(s, d, i);
  }
  return s;
}

// (a, b, spatial sizes of the nd-D layer) from a 3-D extent array.
inline std::vector<int64_t> nd_shape(int64_t a, int64_t b, const int64_t* sp, int nd) {
  std::vector<int64_t> v{a, b};
  for (int i = 0; i < nd; ++i) v.push_back(sp[3 - nd + i]);
  return v;
}

}  // namespace cnnfast::bind
