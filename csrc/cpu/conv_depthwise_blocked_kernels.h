// Channel-blocked depthwise forward (inference), written once over a vector
// description VT and compiled per level (conv_depthwise_blocked_avx2.cpp: blocks of
// 8 channels in a ymm register; conv_depthwise_blocked_avx512.cpp: 16 in a zmm), each
// in its own CNNFAST_ISA_NS. Any kernel size, stride, dilation and padding. One call
// does one block of channels of one image; conv_fused.cpp threads the blocks and
// applies the inference epilogue to each block of y while it is in cache.
//
// Why: the plane kernels of conv_depthwise.h vectorise along a row, so a 7x7 or
// 14x14 map (MobileNet/EfficientNet's late stages) leaves most lanes on scalar
// edge code, and a stride-2 row gathers. Here one task takes a block of channels of
// one image, transposes them into a zero-padded (Hp, Wp, L) buffer (NHWC8c or
// NHWC16c, in registers, eight channels by eight columns at a time), and every tap of
// every output is one full-width FMA whatever the map size; the outputs are transposed
// back eight columns at a time. The public layout stays NCHW.
//
// VT supplies V, L (lanes: 8 or 16), load(p), store(p, v), fma(a, b, c), and
// group(v, g): the 8 lanes [8g, 8g + 8) of v as a __m256.
#pragma once
#include <immintrin.h>

#include <cstring>

#include "core/simd.h"
#include "cpu/conv.h"
#include "cpu/simd_transpose_x86.h"

namespace cnnfast::cpu::CNNFAST_ISA_NS {
namespace dw_blocked {

struct Geometry {
  int64_t H, W, Ho, Wo, kh, kw, sh, sw, dh, dw, ph, pw, Hp, Wp;
  explicit Geometry(const ConvShape& s)
      : H(s.in[1]), W(s.in[2]), Ho(s.out[1]), Wo(s.out[2]), kh(s.k[1]), kw(s.k[2]), sh(s.stride[1]),
        sw(s.stride[2]), dh(s.dil[1]), dw(s.dil[2]), ph(s.pad0[1]), pw(s.pad0[2]),
        Hp((s.out[1] - 1) * s.stride[1] + (s.k[1] - 1) * s.dil[1] + 1),
        Wp((s.out[2] - 1) * s.stride[2] + (s.k[2] - 1) * s.dil[2] + 1) {}
};

// xb (Hp, Wp, L) = the padded window of the planes (H, W), zeros outside the input.
template <class VT>
void pack_input(const Geometry& g, const float* const* planes, float* xb) {
  constexpr int64_t L = VT::L;
  // Columns fed by the input.
  const int64_t c_lo = g.pw < g.Wp ? g.pw : g.Wp, c_hi = g.pw + g.W < g.Wp ? g.pw + g.W : g.Wp;
  for (int64_t r = 0; r < g.Hp; ++r) {
    float* dst = xb + r * g.Wp * L;
    const int64_t ih = r - g.ph;
    if (ih < 0 || ih >= g.H || c_hi <= c_lo) {
      std::memset(dst, 0, sizeof(float) * g.Wp * L);
      continue;
    }
    std::memset(dst, 0, sizeof(float) * c_lo * L);
    std::memset(dst + c_hi * L, 0, sizeof(float) * (g.Wp - c_hi) * L);
    const int64_t n = c_hi - c_lo;  // input columns 0..n
    // Eight columns of eight channels at a time, the last columns by masked loads: a 7-
    // or 14-wide map went element by element before. Lanes of missing channels repeat a
    // real plane; they meet zero weights and are never stored.
    for (int64_t iw = 0; iw < n; iw += 8) {
      const int64_t m = n - iw < 8 ? n - iw : 8;
      const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(m)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
      for (int64_t grp = 0; grp < L / 8; ++grp) {
        const float* const* pl = planes + grp * 8;
        __m256 v[8];
        if (m == 8) {
          for (int l = 0; l < 8; ++l) v[l] = _mm256_loadu_ps(pl[l] + ih * g.W + iw);
        } else {
          for (int l = 0; l < 8; ++l) v[l] = _mm256_maskload_ps(pl[l] + ih * g.W + iw, mask);
        }
        transpose8(v);
        // A constant trip count with a test, not `l < m`: GCC turned that loop into a
        // memcpy from the stack (rep movsq), a fifth of the kernel's time at 14x14.
        for (int l = 0; l < 8; ++l)
          if (l < m) _mm256_storeu_ps(dst + (c_lo + iw + l) * L + grp * 8, v[l]);
      }
    }
  }
}

// Eight output positions (their offsets into xb in base[]), L channels each:
// every tap is one FMA per position, eight independent chains.
template <class VT>
inline void outputs8(const Geometry& g, const float* xb, const float* wb, typename VT::V bias, const int64_t base[8],
                     typename VT::V acc[8]) {
  constexpr int64_t L = VT::L;
  for (int j = 0; j < 8; ++j) acc[j] = bias;
  for (int64_t a = 0; a < g.kh; ++a)
    for (int64_t e = 0; e < g.kw; ++e) {
      const typename VT::V wv = VT::load(wb + (a * g.kw + e) * L);
      const float* in = xb + (a * g.dh * g.Wp + e * g.dw) * L;
      for (int j = 0; j < 8; ++j) acc[j] = VT::fma(wv, VT::load(in + base[j]), acc[j]);
    }
}

// The plane's positions p = oh * Wo + ow eight at a time, across row ends, so a
// 7x7 map keeps all eight chains busy; the last block overlaps the one before it
// (same values rewritten) instead of running a narrower tail.
template <class VT>
void block_forward(const Geometry& g, const float* xb, const float* wb, typename VT::V bias, float* const* out,
                   int64_t nc) {
  constexpr int64_t L = VT::L;
  const int64_t P = g.Ho * g.Wo;
  for (int64_t p0 = 0; p0 < P; p0 += 8) {
    const int64_t start = p0 + 8 <= P || P < 8 ? p0 : P - 8;
    int64_t base[8];
    for (int j = 0; j < 8; ++j) {
      const int64_t p = start + j < P ? start + j : P - 1;  // P < 8: repeat the last position
      base[j] = ((p / g.Wo) * g.sh * g.Wp + (p % g.Wo) * g.sw) * L;
    }
    typename VT::V acc[8];
    outputs8<VT>(g, xb, wb, bias, base, acc);
    for (int64_t grp = 0; grp < L / 8 && grp * 8 < nc; ++grp) {
      __m256 t[8];
      for (int j = 0; j < 8; ++j) t[j] = VT::group(acc[j], grp);
      transpose8(t);  // t[c] = channel grp * 8 + c at the eight positions
      const int64_t cn = nc - grp * 8 < 8 ? nc - grp * 8 : 8;
      if (P >= 8) {
        for (int64_t c = 0; c < cn; ++c) _mm256_storeu_ps(out[grp * 8 + c] + start, t[c]);
      } else {
        alignas(32) float v[8];
        for (int64_t c = 0; c < cn; ++c) {
          _mm256_store_ps(v, t[c]);
          for (int64_t j = 0; j < P; ++j) out[grp * 8 + c][j] = v[j];
        }
      }
    }
  }
}

inline bool applicable(const ConvShape& s) {
  return s.in[0] == 1 && s.out[0] == 1 && s.k[0] == 1 && s.groups == s.C && s.K == s.C && s.pad0[1] >= 0 &&
         s.pad0[2] >= 0 && s.out[1] > 0 && s.out[2] > 0;
}

template <class VT>
int64_t scratch_floats(const ConvShape& s) {
  const Geometry g(s);
  return (g.Hp * g.Wp + s.k_size()) * VT::L;
}

// Channels [c0, c0 + L) of image n (fewer at the end): y = conv + bias.
template <class VT>
void block(const ConvShape& s, const float* x, const float* w, const float* bias, float* y, int64_t n, int64_t c0,
           float* scratch) {
  constexpr int64_t L = VT::L;
  const Geometry g(s);
  const int64_t P = s.out_size(), inS = s.in_size(), ks = s.k_size();
  const int64_t nc = s.C - c0 < L ? s.C - c0 : L;
  float* xb = scratch;
  float* wb = xb + g.Hp * g.Wp * L;
  const float* planes[L];
  float* out[L];
  alignas(64) float bv[L] = {};
  for (int64_t l = 0; l < L; ++l) {
    const int64_t c = c0 + (l < nc ? l : nc - 1);  // missing lanes read a real plane, never stored
    planes[l] = x + (n * s.C + c) * inS;
    out[l] = y + (n * s.C + c) * P;
    if (l < nc && bias) bv[l] = bias[c];
  }
  for (int64_t tap = 0; tap < ks; ++tap)
    for (int64_t l = 0; l < L; ++l) wb[tap * L + l] = l < nc ? w[(c0 + l) * ks + tap] : 0.0f;
  pack_input<VT>(g, planes, xb);
  block_forward<VT>(g, xb, wb, VT::load(bv), out, nc);
}

}  // namespace dw_blocked
}  // namespace cnnfast::cpu::CNNFAST_ISA_NS
