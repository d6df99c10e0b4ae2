// Convolution hyper-parameter checks shared by the CPU and CUDA bindings
// (bind_conv.cpp, bind_cuda_conv.cpp), so both backends accept and reject the
// same stride / padding / dilation / groups with the same messages.
#pragma once
#include <cstdint>
#include <vector>

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

}  // namespace cnnfast::bind
