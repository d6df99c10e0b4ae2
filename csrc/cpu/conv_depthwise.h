// Direct depthwise convolution (one input channel per group, C/groups == 1, any
// channel multiplier K/groups) for 1-D/2-D/3-D, any stride, dilation, padding.
//
// im2col + GEMM is a poor fit here: each group is a 1-row GEMM. Instead every
// output row accumulates `w * shifted input row` per kernel tap, which the
// compiler vectorises along the row. This file is source shared by the generic
// build (conv.cpp) and the AVX2 build (conv_depthwise_avx2.cpp); each defines
// CNNFAST_DW_NS first so the two builds never share a symbol. Every function
// here works on one (image, channel) plane so callers choose the threading.
#pragma once
#include <cstdint>

#include "cpu/conv.h"

namespace cnnfast::cpu::CNNFAST_DW_NS {

// Output positions o in [lo, hi) whose input index o*s + off lies in [0, n_in).
inline void dw_range(int64_t n_out, int64_t n_in, int64_t s, int64_t off, int64_t& lo, int64_t& hi) {
  const int64_t a = -off, b = n_in - off;
  lo = a <= 0 ? 0 : (a + s - 1) / s;
  hi = b <= 0 ? 0 : (b + s - 1) / s;
  if (hi > n_out) hi = n_out;
  if (hi < lo) hi = lo;
}

// y (Do, Ho, Wo) = sum over taps of w[tap] * x (D, H, W) shifted; writes y.
template <class T>
void dw_forward_plane(const ConvShape& s, const T* x, const T* w, T* y) {
  const int64_t Ho = s.out[1], Wo = s.out[2], D = s.in[0], H = s.in[1], W = s.in[2];
  const int64_t sw = s.stride[2];
  for (int64_t od = 0; od < s.out[0]; ++od) {
    for (int64_t oh = 0; oh < Ho; ++oh) {
      T* out = y + (od * Ho + oh) * Wo;
      for (int64_t i = 0; i < Wo; ++i) out[i] = T(0);
      for (int64_t a = 0; a < s.k[0]; ++a) {
        const int64_t id = od * s.stride[0] - s.pad0[0] + a * s.dil[0];
        if (id < 0 || id >= D) continue;
        for (int64_t b = 0; b < s.k[1]; ++b) {
          const int64_t ih = oh * s.stride[1] - s.pad0[1] + b * s.dil[1];
          if (ih < 0 || ih >= H) continue;
          const T* row = x + (id * H + ih) * W;
          for (int64_t e = 0; e < s.k[2]; ++e) {
            const int64_t off = e * s.dil[2] - s.pad0[2];
            const T wv = w[(a * s.k[1] + b) * s.k[2] + e];
            int64_t lo, hi;
            dw_range(Wo, W, sw, off, lo, hi);
            if (sw == 1) {
              const T* in = row + off;
              for (int64_t i = lo; i < hi; ++i) out[i] += wv * in[i];
            } else {
              for (int64_t i = lo; i < hi; ++i) out[i] += wv * row[i * sw + off];
            }
          }
        }
      }
    }
  }
}

// gx (D, H, W) += adjoint of dw_forward_plane applied to gy (Do, Ho, Wo).
template <class T>
void dw_backward_data_plane(const ConvShape& s, const T* gy, const T* w, T* gx) {
  const int64_t Ho = s.out[1], Wo = s.out[2], D = s.in[0], H = s.in[1], W = s.in[2];
  const int64_t sw = s.stride[2];
  for (int64_t od = 0; od < s.out[0]; ++od) {
    for (int64_t oh = 0; oh < Ho; ++oh) {
      const T* g = gy + (od * Ho + oh) * Wo;
      for (int64_t a = 0; a < s.k[0]; ++a) {
        const int64_t id = od * s.stride[0] - s.pad0[0] + a * s.dil[0];
        if (id < 0 || id >= D) continue;
        for (int64_t b = 0; b < s.k[1]; ++b) {
          const int64_t ih = oh * s.stride[1] - s.pad0[1] + b * s.dil[1];
          if (ih < 0 || ih >= H) continue;
          T* row = gx + (id * H + ih) * W;
          for (int64_t e = 0; e < s.k[2]; ++e) {
            const int64_t off = e * s.dil[2] - s.pad0[2];
            const T wv = w[(a * s.k[1] + b) * s.k[2] + e];
            int64_t lo, hi;
            dw_range(Wo, W, sw, off, lo, hi);
            if (sw == 1) {
              T* in = row + off;
              for (int64_t i = lo; i < hi; ++i) in[i] += wv * g[i];
            } else {
              for (int64_t i = lo; i < hi; ++i) row[i * sw + off] += wv * g[i];
            }
          }
        }
      }
    }
  }
}

// gw[tap] += sum over positions of gy (Do, Ho, Wo) * x (D, H, W) shifted. Eight
// independent partial sums per tap let the dot product vectorise without
// reassociating floating-point additions behind the compiler's back.
template <class T>
void dw_backward_weight_plane(const ConvShape& s, const T* gy, const T* x, T* gw) {
  constexpr int L = 8;
  const int64_t Ho = s.out[1], Wo = s.out[2], D = s.in[0], H = s.in[1], W = s.in[2];
  const int64_t sw = s.stride[2];
  for (int64_t a = 0; a < s.k[0]; ++a)
    for (int64_t b = 0; b < s.k[1]; ++b)
      for (int64_t e = 0; e < s.k[2]; ++e) {
        const int64_t off = e * s.dil[2] - s.pad0[2];
        int64_t lo, hi;
        dw_range(Wo, W, sw, off, lo, hi);
        T acc[L] = {};
        T tail = T(0);
        for (int64_t od = 0; od < s.out[0]; ++od) {
          const int64_t id = od * s.stride[0] - s.pad0[0] + a * s.dil[0];
          if (id < 0 || id >= D) continue;
          for (int64_t oh = 0; oh < Ho; ++oh) {
            const int64_t ih = oh * s.stride[1] - s.pad0[1] + b * s.dil[1];
            if (ih < 0 || ih >= H) continue;
            const T* g = gy + (od * Ho + oh) * Wo;
            const T* row = x + (id * H + ih) * W;
            int64_t i = lo;
            if (sw == 1) {
              const T* in = row + off;
              for (; i + L <= hi; i += L)
                for (int l = 0; l < L; ++l) acc[l] += g[i + l] * in[i + l];
              for (; i < hi; ++i) tail += g[i] * in[i];
            } else {
              for (; i < hi; ++i) tail += g[i] * row[i * sw + off];
            }
          }
        }
        T sum = tail;
        for (int l = 0; l < L; ++l) sum += acc[l];
        gw[(a * s.k[1] + b) * s.k[2] + e] += sum;
      }
}

}  // namespace cnnfast::cpu::CNNFAST_DW_NS
