// Channel-blocked depthwise forward (inference): eight channels side by side in
// one AVX register, any kernel size, stride, dilation and padding. One call does
// one block of eight channels of one image; conv_fused.cpp threads the blocks and
// applies the inference epilogue to each block of y while it is in cache.
//
// Why: the plane kernels of conv_depthwise.h vectorise along a row, so a 7x7 or
// 14x14 map (MobileNet/EfficientNet's late stages) leaves most lanes on scalar
// edge code, and a stride-2 row gathers. Here one task takes a block of eight
// channels of one image, transposes them into a zero-padded (Hp, Wp, 8) buffer
// (NHWC8c, in registers, eight columns at a time), and every tap of every output
// is one full-width FMA whatever the map size; the outputs are transposed back
// eight columns at a time. The public layout stays NCHW.
#include <immintrin.h>

#include <cstring>

#include "cpu/conv.h"
#include "cpu/simd_transpose_x86.h"

namespace cnnfast::cpu::avx2_impl {
namespace {

constexpr int64_t kLanes = 8;

struct Geometry {
  int64_t H, W, Ho, Wo, kh, kw, sh, sw, dh, dw, ph, pw, Hp, Wp;
  explicit Geometry(const ConvShape& s)
      : H(s.in[1]), W(s.in[2]), Ho(s.out[1]), Wo(s.out[2]), kh(s.k[1]), kw(s.k[2]), sh(s.stride[1]),
        sw(s.stride[2]), dh(s.dil[1]), dw(s.dil[2]), ph(s.pad0[1]), pw(s.pad0[2]),
        Hp((s.out[1] - 1) * s.stride[1] + (s.k[1] - 1) * s.dil[1] + 1),
        Wp((s.out[2] - 1) * s.stride[2] + (s.k[2] - 1) * s.dil[2] + 1) {}
};

// xb (Hp, Wp, 8) = the padded window of the planes (H, W), zeros outside the input.
void pack_input(const Geometry& g, const float* const* planes, float* xb) {
  const __m256 zero = _mm256_setzero_ps();
  // Columns fed by the input.
  const int64_t c_lo = g.pw < g.Wp ? g.pw : g.Wp, c_hi = g.pw + g.W < g.Wp ? g.pw + g.W : g.Wp;
  for (int64_t r = 0; r < g.Hp; ++r) {
    float* dst = xb + r * g.Wp * kLanes;
    const int64_t ih = r - g.ph;
    if (ih < 0 || ih >= g.H || c_hi <= c_lo) {
      std::memset(dst, 0, sizeof(float) * g.Wp * kLanes);
      continue;
    }
    for (int64_t c = 0; c < c_lo; ++c) _mm256_storeu_ps(dst + c * kLanes, zero);
    for (int64_t c = c_hi; c < g.Wp; ++c) _mm256_storeu_ps(dst + c * kLanes, zero);
    const int64_t n = c_hi - c_lo;  // input columns 0..n
    // Eight columns at a time, the last group by masked loads: a 7- or 14-wide map
    // went element by element before. Lanes of missing channels (nc < 8) repeat a
    // real plane; they meet zero weights and are never stored.
    for (int64_t iw = 0; iw < n; iw += kLanes) {
      const int64_t m = n - iw < kLanes ? n - iw : kLanes;
      const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(m)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
      __m256 v[8];
      if (m == kLanes) {
        for (int l = 0; l < 8; ++l) v[l] = _mm256_loadu_ps(planes[l] + ih * g.W + iw);
      } else {
        for (int l = 0; l < 8; ++l) v[l] = _mm256_maskload_ps(planes[l] + ih * g.W + iw, mask);
      }
      CNNFAST_ISA_NS::transpose8(v);
      // A constant trip count with a test, not `l < m`: GCC turned that loop into a
      // memcpy from the stack (rep movsq), a fifth of the kernel's time at 14x14.
      for (int l = 0; l < 8; ++l)
        if (l < m) _mm256_storeu_ps(dst + (c_lo + iw + l) * kLanes, v[l]);
    }
  }
}

// Eight output positions (their offsets into xb in base[]), eight channels each:
// every tap is one FMA per position, eight independent chains.
inline void outputs8(const Geometry& g, const float* xb, const float* wb, __m256 bias, const int64_t base[8],
                     __m256 acc[8]) {
  for (int j = 0; j < 8; ++j) acc[j] = bias;
  for (int64_t a = 0; a < g.kh; ++a)
    for (int64_t e = 0; e < g.kw; ++e) {
      const __m256 wv = _mm256_loadu_ps(wb + (a * g.kw + e) * kLanes);
      const float* in = xb + (a * g.dh * g.Wp + e * g.dw) * kLanes;
      for (int j = 0; j < 8; ++j) acc[j] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(in + base[j]), acc[j]);
    }
}

// The plane's positions p = oh * Wo + ow eight at a time, across row ends, so a
// 7x7 map keeps all eight chains busy; the last block overlaps the one before it
// (same values rewritten) instead of running a narrower tail.
void block_forward(const Geometry& g, const float* xb, const float* wb, __m256 bias, float* const* out, int64_t nc) {
  const int64_t P = g.Ho * g.Wo;
  for (int64_t p0 = 0; p0 < P; p0 += 8) {
    const int64_t start = p0 + 8 <= P || P < 8 ? p0 : P - 8;
    int64_t base[8];
    for (int j = 0; j < 8; ++j) {
      const int64_t p = start + j < P ? start + j : P - 1;  // P < 8: repeat the last position
      base[j] = ((p / g.Wo) * g.sh * g.Wp + (p % g.Wo) * g.sw) * kLanes;
    }
    __m256 acc[8];
    outputs8(g, xb, wb, bias, base, acc);
    CNNFAST_ISA_NS::transpose8(acc);  // acc[c] = channel c at the eight positions
    if (P >= 8) {
      for (int64_t c = 0; c < nc; ++c) _mm256_storeu_ps(out[c] + start, acc[c]);
    } else {
      alignas(32) float v[8];
      for (int64_t c = 0; c < nc; ++c) {
        _mm256_store_ps(v, acc[c]);
        for (int64_t j = 0; j < P; ++j) out[c][j] = v[j];
      }
    }
  }
}

}  // namespace

bool dw_blocked_applicable(const ConvShape& s) {
  return s.in[0] == 1 && s.out[0] == 1 && s.k[0] == 1 && s.groups == s.C && s.K == s.C && s.pad0[1] >= 0 &&
         s.pad0[2] >= 0 && s.out[1] > 0 && s.out[2] > 0;
}

int64_t dw_blocked_scratch(const ConvShape& s) {
  const Geometry g(s);
  return (g.Hp * g.Wp + s.k_size()) * kLanes;
}

void dw_blocked_block(const ConvShape& s, const float* x, const float* w, const float* bias, float* y, int64_t n,
                      int64_t c0, float* scratch) {
  const Geometry g(s);
  const int64_t P = s.out_size(), inS = s.in_size(), ks = s.k_size();
  const int64_t nc = s.C - c0 < kLanes ? s.C - c0 : kLanes;
  float* xb = scratch;
  float* wb = xb + g.Hp * g.Wp * kLanes;
  const float* planes[kLanes];
  float* out[kLanes];
  alignas(32) float bv[kLanes] = {};
  for (int64_t l = 0; l < kLanes; ++l) {
    const int64_t c = c0 + (l < nc ? l : nc - 1);  // missing lanes read a real plane, never stored
    planes[l] = x + (n * s.C + c) * inS;
    out[l] = y + (n * s.C + c) * P;
    if (l < nc && bias) bv[l] = bias[c];
  }
  for (int64_t tap = 0; tap < ks; ++tap)
    for (int64_t l = 0; l < kLanes; ++l) wb[tap * kLanes + l] = l < nc ? w[(c0 + l) * ks + tap] : 0.0f;
  pack_input(g, planes, xb);
  block_forward(g, xb, wb, _mm256_load_ps(bv), out, nc);
}

}  // namespace cnnfast::cpu::avx2_impl
