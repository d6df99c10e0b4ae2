// The row loops the AVX2 and AVX-512 resample plane kernels share (resample_avx2.cpp,
// resample_avx512.cpp), parameterised by each level's vector axpy
// `axpy(dst, src, a, n, first)`: dst[0:n] = a * src (first) or += a * src. Included by
// both with their own flags, inside CNNFAST_ISA_NS (core/simd.h), so the two builds
// never share a symbol.
#pragma once
#include <algorithm>
#include <cstdint>

#include "core/simd.h"
#include "cpu/resample.h"

namespace cnnfast::cpu::CNNFAST_ISA_NS {

// row = sum over the D x H taps of output row (od, oh) of weight * source row.
template <class Axpy>
inline void combine_rows(const float* x, const AxisTable<float>& d, const AxisTable<float>& h,
                         const AxisTable<float>& w, int64_t od, int64_t oh, float* row, Axpy axpy) {
  bool first = true;
  for (int64_t kd = 0; kd < d.taps; ++kd)
    for (int64_t kh = 0; kh < h.taps; ++kh) {
      const float a = d.weight[od * d.taps + kd] * h.weight[oh * h.taps + kh];
      axpy(row, x + (d.index[od * d.taps + kd] * h.in + h.index[oh * h.taps + kh]) * w.in, a, w.in, first);
      first = false;
    }
}

// The transpose of forward for one plane: each gradient row's W taps are scattered
// (scalar: taps may collide) into `row`, which is added into its D x H source rows.
template <class Axpy>
inline void plane_backward_rows(const float* gy, float* gx, const AxisTable<float>& d, const AxisTable<float>& h,
                                const AxisTable<float>& w, float* row, Axpy axpy) {
  std::fill(gx, gx + d.in * h.in * w.in, 0.0f);
  const int64_t T = w.taps;
  for (int64_t od = 0; od < d.out; ++od)
    for (int64_t oh = 0; oh < h.out; ++oh) {
      const float* gr = gy + (od * h.out + oh) * w.out;
      std::fill(row, row + w.in, 0.0f);
      for (int64_t ow = 0; ow < w.out; ++ow)
        for (int64_t k = 0; k < T; ++k) row[w.index[ow * T + k]] += w.weight[ow * T + k] * gr[ow];
      for (int64_t kd = 0; kd < d.taps; ++kd)
        for (int64_t kh = 0; kh < h.taps; ++kh) {
          const float a = d.weight[od * d.taps + kd] * h.weight[oh * h.taps + kh];
          axpy(gx + (d.index[od * d.taps + kd] * h.in + h.index[oh * h.taps + kh]) * w.in, row, a, w.in, false);
        }
    }
}

}  // namespace cnnfast::cpu::CNNFAST_ISA_NS
