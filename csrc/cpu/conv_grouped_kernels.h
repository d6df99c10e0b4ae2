// The grouped-convolution plane kernels of conv_grouped.h, written once over a vector
// description VT and compiled per level (conv_grouped_avx512.cpp: 16 lanes, blocks of 8
// output channels; conv_grouped_avx2.cpp: 8 lanes, blocks of 4 in its 16 registers),
// each in its own CNNFAST_ISA_NS. VT supplies
//   V, M, L, KB        vector, lane mask, lanes, widest output-channel block
//   lanes(lo, hi)      the mask of lanes [lo, hi), clamped to [0, L)
//   load(m, p)         the lanes of m from p, zero elsewhere (masked-off lanes never fault)
//   store(m, p, v)     the lanes of m to p
//   set1(f), fma(a, b, c) = a*b + c, sum(v)
//
// Output columns go L to a vector. Which lanes of a tap's input load are real
// (inside the input row, and the output column inside the row) depends only on the
// column block and the tap column kw, never on the row, so the masks are worked out
// once per plane into a table; a load whose lanes read padding or run past the row
// is a masked load, so the borders and the row tails take the same code as the interior.
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "core/simd.h"
#include "cpu/conv_grouped.h"

namespace cnnfast::cpu::CNNFAST_ISA_NS {

// mask[b * kws + kw]: the lanes of column block b whose tap kw reads inside the row
// (and whose output column exists); zero for the blocks b >= nb and taps kw >= KW
// that the register-blocked loops run past the end with.
template <class VT>
std::vector<typename VT::M> tap_masks(const GroupedPlane& p, int64_t nb_pad, int64_t kws) {
  constexpr int64_t L = VT::L;
  const int64_t nb = (p.Wo + L - 1) / L;
  std::vector<typename VT::M> m(size_t(nb_pad * kws), VT::lanes(0, 0));
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t kw = 0; kw < p.KW; ++kw) {
      const int64_t start = b * L + p.ox + kw * p.dw;  // input column of lane 0
      m[size_t(b * kws + kw)] = VT::lanes(-start, std::min(p.Wi - start, p.Wo - b * L));
    }
  return m;
}

// Output channels [k0, k0 + KB) of y, NV column blocks at a time. wp holds the
// block's weights tap-major, wp[((c * KH + kh) * KW + kw) * KB + k], so the KB
// broadcasts of one input vector read consecutive floats off one pointer (with
// each channel's weights a plane apart, the address arithmetic spilled).
template <class VT, int KB, int NV>
void corr_channels(const GroupedPlane& p, const float* x, const float* wp, const float* bias, float* y,
                   const typename VT::M* mtab, const typename VT::M* ytab) {
  using V = typename VT::V;
  constexpr int64_t L = VT::L;
  const int64_t nb = (p.Wo + L - 1) / L, plane = p.Hi * p.Wi, taps = p.KH * p.KW;
  for (int64_t oh = 0; oh < p.Ho; ++oh) {
    for (int64_t b0 = 0; b0 < nb; b0 += NV) {
      V acc[KB][NV];
#pragma GCC unroll 8
      for (int k = 0; k < KB; ++k)
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v)
          acc[k][v] = p.accumulate ? VT::load(ytab[b0 + v], y + (k * p.Ho + oh) * p.Wo + (b0 + v) * L)
                                   : VT::set1(bias ? bias[k] : 0.f);
      for (int64_t kh = 0; kh < p.KH; ++kh) {
        const int64_t ih = oh * p.sh + p.oy + kh * p.dh;
        if (ih < 0 || ih >= p.Hi) continue;
        for (int64_t kw = 0; kw < p.KW; ++kw) {
          typename VT::M m[NV];
#pragma GCC unroll 2
          for (int v = 0; v < NV; ++v) m[v] = mtab[(b0 + v) * p.KW + kw];
          // An offset, not a pointer: lane 0 may sit before the row (left padding).
          const float* xc = x + (ih * p.Wi + b0 * L + p.ox + kw * p.dw);
          const float* wc = wp + (kh * p.KW + kw) * KB;
          for (int64_t c = 0; c < p.Ci; ++c, xc += plane, wc += taps * KB) {
            V xv[NV];
#pragma GCC unroll 2
            for (int v = 0; v < NV; ++v) xv[v] = VT::load(m[v], xc + v * L);
#pragma GCC unroll 8
            for (int k = 0; k < KB; ++k) {
              const V a = VT::set1(wc[k]);
#pragma GCC unroll 2
              for (int v = 0; v < NV; ++v) acc[k][v] = VT::fma(a, xv[v], acc[k][v]);
            }
          }
        }
      }
#pragma GCC unroll 8
      for (int k = 0; k < KB; ++k)
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v)
          VT::store(ytab[b0 + v], y + (k * p.Ho + oh) * p.Wo + (b0 + v) * L, acc[k][v]);
    }
  }
}

// gw[k0 .. k0+KB)[c][kh][kw0 .. kw0+NW) for every c, kh and group of NW taps along W:
// each grad_y vector is loaded once for NW taps, each input vector once for KB channels.
template <class VT, int KB, int NW>
void weight_channels(const GroupedPlane& p, const float* x, const float* gy, float* gw,
                     const typename VT::M* mtab, int64_t kws, const typename VT::M* ytab) {
  using V = typename VT::V;
  constexpr int64_t L = VT::L;
  const int64_t nb = (p.Wo + L - 1) / L, plane = p.Hi * p.Wi, wk = p.Ci * p.KH * p.KW, oplane = p.Ho * p.Wo;
  for (int64_t c = 0; c < p.Ci; ++c)
    for (int64_t kh = 0; kh < p.KH; ++kh)
      for (int64_t kw0 = 0; kw0 < p.KW; kw0 += NW) {
        V acc[KB][NW];
#pragma GCC unroll 8
        for (int k = 0; k < KB; ++k)
#pragma GCC unroll 4
          for (int j = 0; j < NW; ++j) acc[k][j] = VT::set1(0.f);
        for (int64_t oh = 0; oh < p.Ho; ++oh) {
          const int64_t ih = oh + p.oy + kh * p.dh;
          if (ih < 0 || ih >= p.Hi) continue;
          // Offsets, not pointers: lane 0 may sit before the row (left padding).
          const float* xr = x + (c * plane + ih * p.Wi + p.ox + kw0 * p.dw);
          const float* gr = gy + oh * p.Wo;
          for (int64_t b = 0; b < nb; ++b, xr += L, gr += L) {
            V xv[NW];
#pragma GCC unroll 4
            for (int j = 0; j < NW; ++j) xv[j] = VT::load(mtab[b * kws + kw0 + j], xr + j * p.dw);
#pragma GCC unroll 8
            for (int k = 0; k < KB; ++k) {
              const V g = VT::load(ytab[b], gr + k * oplane);
#pragma GCC unroll 4
              for (int j = 0; j < NW; ++j) acc[k][j] = VT::fma(g, xv[j], acc[k][j]);
            }
          }
        }
#pragma GCC unroll 8
        for (int k = 0; k < KB; ++k)
#pragma GCC unroll 4
          for (int j = 0; j < NW; ++j)
            if (kw0 + j < p.KW) gw[k * wk + (c * p.KH + kh) * p.KW + kw0 + j] += VT::sum(acc[k][j]);
      }
}

// Runs body<KB>(k0) over the output channels in blocks of KBmax (8 or 4), then 4, 2, 1.
template <int KBmax, class Body>
void by_channel_blocks(int64_t Ko, Body&& body) {
  int64_t k0 = 0;
  for (; k0 + KBmax <= Ko; k0 += KBmax) body(std::integral_constant<int, KBmax>(), k0);
  if (KBmax > 4 && k0 + 4 <= Ko) body(std::integral_constant<int, 4>(), k0), k0 += 4;
  if (k0 + 2 <= Ko) body(std::integral_constant<int, 2>(), k0), k0 += 2;
  if (k0 < Ko) body(std::integral_constant<int, 1>(), k0);
}

template <class VT>
std::vector<typename VT::M> row_masks(const GroupedPlane& p, int64_t nb_pad) {
  constexpr int64_t L = VT::L;
  std::vector<typename VT::M> m(size_t(nb_pad), VT::lanes(0, 0));
  for (int64_t b = 0; b * L < p.Wo; ++b) m[size_t(b)] = VT::lanes(0, p.Wo - b * L);
  return m;
}


// Columns j*SW + q - pad of each row, zero where that is outside [0, W): the
// compile-time stride lets the compiler turn the strided copy into permutes.
template <int64_t SW>
void phase_rows(const float* x, int64_t rows, int64_t W, int64_t sw, int64_t q, int64_t pad, int64_t Wq,
                float* dst) {
  const int64_t s = SW > 0 ? SW : sw, off = q - pad;
  // j in [lo, hi) reads inside the row: lo = ceil(-off / s), hi = ceil((W - off) / s).
  const int64_t lo = std::clamp<int64_t>(off >= 0 ? 0 : (-off + s - 1) / s, 0, Wq);
  const int64_t hi = std::clamp<int64_t>(W - off <= 0 ? 0 : (W - off + s - 1) / s, lo, Wq);
  for (int64_t r = 0; r < rows; ++r, x += W, dst += Wq) {
    std::fill(dst, dst + lo, 0.f);
    for (int64_t j = lo; j < hi; ++j) dst[j] = x[j * s + off];
    std::fill(dst + hi, dst + Wq, 0.f);
  }
}

template <class VT>
void column_phase(const float* x, int64_t rows, int64_t W, int64_t sw, int64_t q, int64_t pad, int64_t Wq,
                  float* dst) {
  if (sw == 2) return phase_rows<2>(x, rows, W, sw, q, pad, Wq, dst);
  if (sw == 4) return phase_rows<4>(x, rows, W, sw, q, pad, Wq, dst);
  phase_rows<0>(x, rows, W, sw, q, pad, Wq, dst);
}

template <class VT>
void grouped_corr(const GroupedPlane& p, const float* x, const float* w, const float* bias, float* y) {
  constexpr int64_t L = VT::L;
  const int64_t nb = (p.Wo + L - 1) / L;
  // Two column blocks per pass when the row has them: 2 x KB accumulators, each
  // input vector feeding KB FMAs.
  const bool two = nb >= 2;
  const std::vector<typename VT::M> mtab = tap_masks<VT>(p, nb + 1, p.KW), ytab = row_masks<VT>(p, nb + 1);
  std::vector<float> wp(size_t(VT::KB * p.Ci * p.KH * p.KW));
  by_channel_blocks<VT::KB>(p.Ko, [&](auto kb, int64_t k0) {
    constexpr int KB = decltype(kb)::value;
    const int64_t per_k = p.Ci * p.KH * p.KW;
    for (int64_t t = 0; t < per_k; ++t)
      for (int k = 0; k < KB; ++k) wp[size_t(t * KB + k)] = w[(k0 + k) * per_k + t];
    const float* bk = bias ? bias + k0 : nullptr;
    float* yk = y + k0 * p.Ho * p.Wo;
    if (two) corr_channels<VT, KB, 2>(p, x, wp.data(), bk, yk, mtab.data(), ytab.data());
    else corr_channels<VT, KB, 1>(p, x, wp.data(), bk, yk, mtab.data(), ytab.data());
  });
}

template <class VT>
void grouped_corr_weight(const GroupedPlane& p, const float* x, const float* gy, float* gw) {
  constexpr int64_t L = VT::L;
  constexpr int NW = 3;
  const int64_t nb = (p.Wo + L - 1) / L, kws = (p.KW + NW - 1) / NW * NW;
  const std::vector<typename VT::M> mtab = tap_masks<VT>(p, nb, kws), ytab = row_masks<VT>(p, nb);
  by_channel_blocks<VT::KB>(p.Ko, [&](auto kb, int64_t k0) {
    constexpr int KB = decltype(kb)::value;
    weight_channels<VT, KB, NW>(p, x, gy + k0 * p.Ho * p.Wo, gw + k0 * p.Ci * p.KH * p.KW, mtab.data(), kws,
                            ytab.data());
  });
}


}  // namespace cnnfast::cpu::CNNFAST_ISA_NS

// A level's three entry points (conv_grouped.h) on its vector description, expanded
// inside that level's *_impl namespace.
#define CNNFAST_GROUPED_ENTRY_POINTS(ISA, VT)                                                                  \
  void grouped_corr(const GroupedPlane& p, const float* x, const float* w, const float* bias, float* y) {      \
    ISA::grouped_corr<VT>(p, x, w, bias, y);                                                                   \
  }                                                                                                            \
  void grouped_corr_weight(const GroupedPlane& p, const float* x, const float* gy, float* gw) {                \
    ISA::grouped_corr_weight<VT>(p, x, gy, gw);                                                                \
  }                                                                                                            \
  void column_phase(const float* x, int64_t rows, int64_t W, int64_t sw, int64_t q, int64_t pad, int64_t Wq,    \
                    float* dst) {                                                                              \
    ISA::column_phase<VT>(x, rows, W, sw, q, pad, Wq, dst);                                                    \
  }
