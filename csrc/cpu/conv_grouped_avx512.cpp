// The grouped-convolution plane kernels of conv_grouped.h for AVX-512.
//
// Output columns go 16 to a vector. Which lanes of a tap's input load are real
// (inside the input row, and the output column inside the row) depends only on the
// column block and the tap column kw, never on the row, so the masks are worked out
// once per plane into a table; a load whose lanes read padding or run past the row
// is a masked load (masked-off lanes neither fault nor read), so the borders and
// the row tails take the same code as the interior.
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "cpu/conv_grouped.h"

// GCC 12's _mm512_reduce_add_ps starts from _mm512_undefined_ps(), which
// -Wmaybe-uninitialized reports inside the system header: a false alarm.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace cnnfast::cpu::avx512_impl {
namespace {

constexpr int64_t L = 16;

// Lanes [lo, hi) of 16, clamped.
inline __mmask16 lane_range(int64_t lo, int64_t hi) {
  lo = std::max<int64_t>(lo, 0);
  hi = std::min<int64_t>(hi, L);
  if (hi <= lo) return 0;
  return __mmask16(((1u << hi) - 1u) & ~((1u << lo) - 1u));
}

// mask[b * kws + kw]: the lanes of column block b whose tap kw reads inside the row
// (and whose output column exists); zero for the blocks b >= nb and taps kw >= KW
// that the register-blocked loops run past the end with.
std::vector<__mmask16> tap_masks(const GroupedPlane& p, int64_t nb_pad, int64_t kws) {
  const int64_t nb = (p.Wo + L - 1) / L;
  std::vector<__mmask16> m(size_t(nb_pad * kws), 0);
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t kw = 0; kw < p.KW; ++kw) {
      const int64_t start = b * L + p.ox + kw * p.dw;  // input column of lane 0
      m[size_t(b * kws + kw)] = lane_range(-start, std::min(p.Wi - start, p.Wo - b * L));
    }
  return m;
}

// Output channels [k0, k0 + KB) of y, NV column blocks at a time. wp holds the
// block's weights tap-major, wp[((c * KH + kh) * KW + kw) * KB + k], so the KB
// broadcasts of one input vector read consecutive floats off one pointer (with
// each channel's weights a plane apart, the address arithmetic spilled).
template <int KB, int NV>
void corr_channels(const GroupedPlane& p, const float* x, const float* wp, const float* bias, float* y,
                   const __mmask16* mtab, const __mmask16* ytab) {
  const int64_t nb = (p.Wo + L - 1) / L, plane = p.Hi * p.Wi, taps = p.KH * p.KW;
  for (int64_t oh = 0; oh < p.Ho; ++oh) {
    for (int64_t b0 = 0; b0 < nb; b0 += NV) {
      __m512 acc[KB][NV];
#pragma GCC unroll 8
      for (int k = 0; k < KB; ++k)
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v)
          acc[k][v] = p.accumulate ? _mm512_maskz_loadu_ps(ytab[b0 + v], y + (k * p.Ho + oh) * p.Wo + (b0 + v) * L)
                                   : _mm512_set1_ps(bias ? bias[k] : 0.f);
      for (int64_t kh = 0; kh < p.KH; ++kh) {
        const int64_t ih = oh * p.sh + p.oy + kh * p.dh;
        if (ih < 0 || ih >= p.Hi) continue;
        for (int64_t kw = 0; kw < p.KW; ++kw) {
          __mmask16 m[NV];
#pragma GCC unroll 2
          for (int v = 0; v < NV; ++v) m[v] = mtab[(b0 + v) * p.KW + kw];
          // An offset, not a pointer: lane 0 may sit before the row (left padding).
          const float* xc = x + (ih * p.Wi + b0 * L + p.ox + kw * p.dw);
          const float* wc = wp + (kh * p.KW + kw) * KB;
          for (int64_t c = 0; c < p.Ci; ++c, xc += plane, wc += taps * KB) {
            __m512 xv[NV];
#pragma GCC unroll 2
            for (int v = 0; v < NV; ++v) xv[v] = _mm512_maskz_loadu_ps(m[v], xc + v * L);
#pragma GCC unroll 8
            for (int k = 0; k < KB; ++k) {
              const __m512 a = _mm512_set1_ps(wc[k]);
#pragma GCC unroll 2
              for (int v = 0; v < NV; ++v) acc[k][v] = _mm512_fmadd_ps(a, xv[v], acc[k][v]);
            }
          }
        }
      }
#pragma GCC unroll 8
      for (int k = 0; k < KB; ++k)
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v)
          _mm512_mask_storeu_ps(y + (k * p.Ho + oh) * p.Wo + (b0 + v) * L, ytab[b0 + v], acc[k][v]);
    }
  }
}

// gw[k0 .. k0+KB)[c][kh][kw0 .. kw0+NW) for every c, kh and group of NW taps along W:
// each grad_y vector is loaded once for NW taps, each input vector once for KB channels.
template <int KB, int NW>
void weight_channels(const GroupedPlane& p, const float* x, const float* gy, float* gw, const __mmask16* mtab,
                     int64_t kws, const __mmask16* ytab) {
  const int64_t nb = (p.Wo + L - 1) / L, plane = p.Hi * p.Wi, wk = p.Ci * p.KH * p.KW, oplane = p.Ho * p.Wo;
  for (int64_t c = 0; c < p.Ci; ++c)
    for (int64_t kh = 0; kh < p.KH; ++kh)
      for (int64_t kw0 = 0; kw0 < p.KW; kw0 += NW) {
        __m512 acc[KB][NW];
#pragma GCC unroll 8
        for (int k = 0; k < KB; ++k)
#pragma GCC unroll 4
          for (int j = 0; j < NW; ++j) acc[k][j] = _mm512_setzero_ps();
        for (int64_t oh = 0; oh < p.Ho; ++oh) {
          const int64_t ih = oh + p.oy + kh * p.dh;
          if (ih < 0 || ih >= p.Hi) continue;
          // Offsets, not pointers: lane 0 may sit before the row (left padding).
          const float* xr = x + (c * plane + ih * p.Wi + p.ox + kw0 * p.dw);
          const float* gr = gy + oh * p.Wo;
          for (int64_t b = 0; b < nb; ++b, xr += L, gr += L) {
            __m512 xv[NW];
#pragma GCC unroll 4
            for (int j = 0; j < NW; ++j) xv[j] = _mm512_maskz_loadu_ps(mtab[b * kws + kw0 + j], xr + j * p.dw);
#pragma GCC unroll 8
            for (int k = 0; k < KB; ++k) {
              const __m512 g = _mm512_maskz_loadu_ps(ytab[b], gr + k * oplane);
#pragma GCC unroll 4
              for (int j = 0; j < NW; ++j) acc[k][j] = _mm512_fmadd_ps(g, xv[j], acc[k][j]);
            }
          }
        }
#pragma GCC unroll 8
        for (int k = 0; k < KB; ++k)
#pragma GCC unroll 4
          for (int j = 0; j < NW; ++j)
            if (kw0 + j < p.KW) gw[k * wk + (c * p.KH + kh) * p.KW + kw0 + j] += _mm512_reduce_add_ps(acc[k][j]);
      }
}

// Runs body<KB>(k0) over the output channels in blocks of 8, then 4, 2, 1.
template <class Body>
void by_channel_blocks(int64_t Ko, Body&& body) {
  int64_t k0 = 0;
  for (; k0 + 8 <= Ko; k0 += 8) body(std::integral_constant<int, 8>(), k0);
  if (k0 + 4 <= Ko) body(std::integral_constant<int, 4>(), k0), k0 += 4;
  if (k0 + 2 <= Ko) body(std::integral_constant<int, 2>(), k0), k0 += 2;
  if (k0 < Ko) body(std::integral_constant<int, 1>(), k0);
}

std::vector<__mmask16> row_masks(const GroupedPlane& p, int64_t nb_pad) {
  std::vector<__mmask16> m(size_t(nb_pad), 0);
  for (int64_t b = 0; b * L < p.Wo; ++b) m[size_t(b)] = lane_range(0, p.Wo - b * L);
  return m;
}

}  // namespace

namespace {

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

}  // namespace

void column_phase(const float* x, int64_t rows, int64_t W, int64_t sw, int64_t q, int64_t pad, int64_t Wq,
                  float* dst) {
  if (sw == 2) return phase_rows<2>(x, rows, W, sw, q, pad, Wq, dst);
  if (sw == 4) return phase_rows<4>(x, rows, W, sw, q, pad, Wq, dst);
  phase_rows<0>(x, rows, W, sw, q, pad, Wq, dst);
}

void grouped_corr(const GroupedPlane& p, const float* x, const float* w, const float* bias, float* y) {
  const int64_t nb = (p.Wo + L - 1) / L;
  // Two column blocks (32 outputs) per pass when the row has them: 16 accumulators
  // for 8 channels, each input vector feeding 8 FMAs.
  const bool two = nb >= 2;
  const std::vector<__mmask16> mtab = tap_masks(p, nb + 1, p.KW), ytab = row_masks(p, nb + 1);
  std::vector<float> wp(size_t(8 * p.Ci * p.KH * p.KW));
  by_channel_blocks(p.Ko, [&](auto kb, int64_t k0) {
    constexpr int KB = decltype(kb)::value;
    const int64_t per_k = p.Ci * p.KH * p.KW;
    for (int64_t t = 0; t < per_k; ++t)
      for (int k = 0; k < KB; ++k) wp[size_t(t * KB + k)] = w[(k0 + k) * per_k + t];
    const float* bk = bias ? bias + k0 : nullptr;
    float* yk = y + k0 * p.Ho * p.Wo;
    if (two) corr_channels<KB, 2>(p, x, wp.data(), bk, yk, mtab.data(), ytab.data());
    else corr_channels<KB, 1>(p, x, wp.data(), bk, yk, mtab.data(), ytab.data());
  });
}

void grouped_corr_weight(const GroupedPlane& p, const float* x, const float* gy, float* gw) {
  constexpr int NW = 3;
  const int64_t nb = (p.Wo + L - 1) / L, kws = (p.KW + NW - 1) / NW * NW;
  const std::vector<__mmask16> mtab = tap_masks(p, nb, kws), ytab = row_masks(p, nb);
  by_channel_blocks(p.Ko, [&](auto kb, int64_t k0) {
    constexpr int KB = decltype(kb)::value;
    weight_channels<KB, NW>(p, x, gy + k0 * p.Ho * p.Wo, gw + k0 * p.Ci * p.KH * p.KW, mtab.data(), kws,
                            ytab.data());
  });
}

}  // namespace cnnfast::cpu::avx512_impl
