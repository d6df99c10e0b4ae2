// Direct depthwise convolution (one input channel per group, C/groups == 1, any
// channel multiplier K/groups) for 1-D/2-D/3-D, any stride, dilation, padding.
//
// im2col + GEMM is a poor fit here: each group is a 1-row GEMM. Instead every
// output row accumulates `w * shifted input row` per kernel tap, which the
// compiler vectorises along the row. This file is source shared by the generic
// build (conv_depthwise.cpp) and the AVX2 build (conv_depthwise_avx2.cpp); each defines
// CNNFAST_DW_NS first so the two builds never share a symbol. Every function
// here works on one (image, channel) plane so callers choose the threading.
#pragma once
#include <cstdint>

#include "cpu/conv.h"

namespace cnnfast::cpu::CNNFAST_DW_NS {

// Output positions o in [lo, hi) whose input index o*s + off lies in [0, n_in).
inline void dw_range(int64_t n_out, int64_t n_in, int64_t s, int64_t off, int64_t& lo, int64_t& hi) {
  const int64_t a = -off, b = n_in - off;
  // Rounded up without a + s - 1, which wraps for a stride near 2^63.
  lo = a <= 0 ? 0 : a / s + (a % s != 0);
  hi = b <= 0 ? 0 : b / s + (b % s != 0);
  if (hi > n_out) hi = n_out;
  if (hi < lo) hi = lo;
}

// out[0:B] = all taps of one output row segment whose taps lie inside the input
// (B a multiple of 8: B/8 independent FMA chains hide the FMA latency).
template <class T, int B>
inline void dw_interior_block(const ConvShape& s, const T* x, const T* w, T* out, int64_t od, int64_t oh,
                              int64_t ow) {
  const int64_t D = s.in[0], H = s.in[1], W = s.in[2], kw = s.k[2];
  T acc[B] = {};
  for (int64_t a = 0; a < s.k[0]; ++a) {
    const int64_t id = od * s.stride[0] - s.pad0[0] + a * s.dil[0];
    if (id < 0 || id >= D) continue;
    for (int64_t b = 0; b < s.k[1]; ++b) {
      const int64_t ih = oh * s.stride[1] - s.pad0[1] + b * s.dil[1];
      if (ih < 0 || ih >= H) continue;
      const T* row = x + (id * H + ih) * W + ow - s.pad0[2];
      const T* wt = w + (a * s.k[1] + b) * kw;
      for (int64_t e = 0; e < kw; ++e) {
        const T wv = wt[e];
        const T* in = row + e * s.dil[2];
        for (int l = 0; l < B; ++l) acc[l] += wv * in[l];
      }
    }
  }
  for (int l = 0; l < B; ++l) out[ow + l] = acc[l];
}

// y (Do, Ho, Wo) = sum over taps of w[tap] * x (D, H, W) shifted; writes y.
// With stride 1 along W, the columns where every tap is inside the input are
// done eight at a time with all taps summed in registers before one store; the
// edges (and strided layers) take the row-at-a-time loop.
template <class T>
void dw_forward_plane(const ConvShape& s, const T* x, const T* w, T* y) {
  constexpr int L = 8;
  const int64_t Ho = s.out[1], Wo = s.out[2], D = s.in[0], H = s.in[1], W = s.in[2];
  const int64_t sw = s.stride[2], kw = s.k[2];
  // Interior columns [ilo, ihi): valid for the first and the last tap along W.
  int64_t ilo = 0, ihi = 0;
  if (sw == 1) {
    int64_t lo0, hi0, lo1, hi1;
    dw_range(Wo, W, 1, -s.pad0[2], lo0, hi0);
    dw_range(Wo, W, 1, (kw - 1) * s.dil[2] - s.pad0[2], lo1, hi1);
    ilo = lo0 > lo1 ? lo0 : lo1;
    ihi = hi0 < hi1 ? hi0 : hi1;
    if (ihi < ilo) ihi = ilo;
    ihi = ilo + (ihi - ilo) / L * L;
  }
  constexpr int kCached = 32;
  int64_t lo_e[kCached], hi_e[kCached];
  for (int64_t e = 0; e < kw && e < kCached; ++e) dw_range(Wo, W, sw, e * s.dil[2] - s.pad0[2], lo_e[e], hi_e[e]);
  auto tap_range = [&](int64_t e, int64_t& lo, int64_t& hi) {
    if (e < kCached) {
      lo = lo_e[e];
      hi = hi_e[e];
    } else {
      dw_range(Wo, W, sw, e * s.dil[2] - s.pad0[2], lo, hi);
    }
  };
  for (int64_t od = 0; od < s.out[0]; ++od) {
    for (int64_t oh = 0; oh < Ho; ++oh) {
      T* out = y + (od * Ho + oh) * Wo;
      for (int64_t i = 0; i < Wo; ++i) out[i] = T(0);
      // Vector interior: 32 columns (four FMA chains) at a time, then 8.
      int64_t ow = ilo;
      for (; ow + 4 * L <= ihi; ow += 4 * L) dw_interior_block<T, 4 * L>(s, x, w, out, od, oh, ow);
      for (; ow < ihi; ow += L) dw_interior_block<T, L>(s, x, w, out, od, oh, ow);
      // Edges and strided layers, tap by tap (the valid column range of tap e
      // does not depend on the row: computed once per plane in lo_e / hi_e).
      for (int64_t a = 0; a < s.k[0]; ++a) {
        const int64_t id = od * s.stride[0] - s.pad0[0] + a * s.dil[0];
        if (id < 0 || id >= D) continue;
        for (int64_t b = 0; b < s.k[1]; ++b) {
          const int64_t ih = oh * s.stride[1] - s.pad0[1] + b * s.dil[1];
          if (ih < 0 || ih >= H) continue;
          const T* row = x + (id * H + ih) * W;
          for (int64_t e = 0; e < kw; ++e) {
            const int64_t off = e * s.dil[2] - s.pad0[2];
            const T wv = w[(a * s.k[1] + b) * kw + e];
            int64_t lo, hi;
            tap_range(e, lo, hi);
            if (sw == 1) {
              const T* in = row + off;
              const int64_t m1 = ilo < hi ? ilo : hi;
              for (int64_t i = lo; i < m1; ++i) out[i] += wv * in[i];
              for (int64_t i = (ihi > lo ? ihi : lo); i < hi; ++i) out[i] += wv * in[i];
            } else {
              for (int64_t i = lo; i < hi; ++i) out[i] += wv * row[i * sw + off];
            }
          }
        }
      }
    }
  }
}

// Size (elements) of the zero-padded copy dw_forward_plane_padded needs.
inline int64_t dw_padded_size(const ConvShape& s) {
  const int64_t Hp = (s.out[1] - 1) * s.stride[1] + (s.k[1] - 1) * s.dil[1] + 1;
  const int64_t Wp = (s.out[2] + 7) / 8 * 8 + (s.k[2] - 1) * s.dil[2];
  return s.in[0] * Hp * Wp;
}

// The same result as dw_forward_plane for stride 1 along W: the input is first
// copied into a zero-padded plane (scratch, dw_padded_size elements), so every
// output column, edges included, is a plain block of 8 with all taps summed in
// a register and no bounds checks; the work per output is exactly its taps.
template <class T>
void dw_forward_plane_padded(const ConvShape& s, const T* x, const T* w, T* y, T* scratch) {
  constexpr int L = 8;
  const int64_t Ho = s.out[1], Wo = s.out[2], D = s.in[0], H = s.in[1], W = s.in[2];
  const int64_t kh = s.k[1], kw = s.k[2], dh = s.dil[1], dwd = s.dil[2];
  const int64_t Hp = (Ho - 1) * s.stride[1] + (kh - 1) * dh + 1;
  const int64_t Wpad8 = (Wo + L - 1) / L * L, Wp = Wpad8 + (kw - 1) * dwd;
  for (int64_t d = 0; d < D; ++d)
    for (int64_t r = 0; r < Hp; ++r) {
      // Zeros, then the valid run as a plain copy (a per-element condition here
      // becomes masked loads, which are slow on some x86 cores).
      T* dst = scratch + (d * Hp + r) * Wp;
      const int64_t ih = r - s.pad0[1];
      for (int64_t c = 0; c < Wp; ++c) dst[c] = T(0);
      if (ih < 0 || ih >= H) continue;
      const int64_t c0 = s.pad0[2], c1 = (s.pad0[2] + W) < Wp ? (s.pad0[2] + W) : Wp;
      const T* src = x + (d * H + ih) * W - s.pad0[2];
      for (int64_t c = c0; c < c1; ++c) dst[c] = src[c];
    }
  for (int64_t od = 0; od < s.out[0]; ++od) {
    for (int64_t oh = 0; oh < Ho; ++oh) {
      T* out = y + (od * Ho + oh) * Wo;
      int64_t ow = 0;
      // Four independent 8-wide chains first: one chain alone waits on FMA latency.
      for (; ow + 4 * L <= Wpad8; ow += 4 * L) {
        T acc[4 * L] = {};
        for (int64_t a = 0; a < s.k[0]; ++a) {
          const int64_t id = od * s.stride[0] - s.pad0[0] + a * s.dil[0];
          if (id < 0 || id >= D) continue;
          for (int64_t b = 0; b < kh; ++b) {
            const T* row = scratch + (id * Hp + oh * s.stride[1] + b * dh) * Wp + ow;
            const T* wt = w + (a * kh + b) * kw;
            for (int64_t e = 0; e < kw; ++e) {
              const T wv = wt[e];
              const T* in = row + e * dwd;
              for (int l = 0; l < 4 * L; ++l) acc[l] += wv * in[l];
            }
          }
        }
        const int64_t n = (Wo - ow) < 4 * L ? (Wo - ow) : 4 * L;
        for (int l = 0; l < n; ++l) out[ow + l] = acc[l];
      }
      for (; ow < Wpad8; ow += L) {
        T acc[L] = {};
        for (int64_t a = 0; a < s.k[0]; ++a) {
          const int64_t id = od * s.stride[0] - s.pad0[0] + a * s.dil[0];
          if (id < 0 || id >= D) continue;
          for (int64_t b = 0; b < kh; ++b) {
            const T* row = scratch + (id * Hp + oh * s.stride[1] + b * dh) * Wp + ow;
            const T* wt = w + (a * kh + b) * kw;
            for (int64_t e = 0; e < kw; ++e) {
              const T wv = wt[e];
              const T* in = row + e * dwd;
              for (int l = 0; l < L; ++l) acc[l] += wv * in[l];
            }
          }
        }
        const int64_t n = (Wo - ow) < L ? (Wo - ow) : L;
        for (int l = 0; l < n; ++l) out[ow + l] = acc[l];
      }
    }
  }
}

// gx (D, H, W) += adjoint of dw_forward_plane applied to gy (Do, Ho, Wo).
template <class T>
void dw_backward_data_plane(const ConvShape& s, const T* gy, const T* w, T* gx) {
  const int64_t Ho = s.out[1], Wo = s.out[2], D = s.in[0], H = s.in[1], W = s.in[2];
  const int64_t sw = s.stride[2], kw = s.k[2];
  constexpr int kCached = 32;
  int64_t lo_e[kCached], hi_e[kCached];
  for (int64_t e = 0; e < kw && e < kCached; ++e) dw_range(Wo, W, sw, e * s.dil[2] - s.pad0[2], lo_e[e], hi_e[e]);
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
            if (e < kCached) {
              lo = lo_e[e];
              hi = hi_e[e];
            } else {
              dw_range(Wo, W, sw, off, lo, hi);
            }
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
