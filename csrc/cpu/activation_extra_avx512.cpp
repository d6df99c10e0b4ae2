// AVX-512 float32 kernels for activation_extra.h: the AVX2 file's functions on 16
// lanes, with masked tails, VRCP14PS + Newton in place of VDIVPS (see
// simd_math_avx512.h), and a cheaper erfc.
//
// erfc(z), z >= 0, as exp(-z^2) * t * G(t) (activation_extra_erfc.h). exp(-z^2) is
// computed from the exact square (an FMA recovers the rounding of z*z), so the tail
// keeps its relative accuracy. Exact GELU's gradient Phi(x) + x phi(x) needs the same
// e^(-x^2/2) for Phi and for phi: one exponential.
#include <immintrin.h>

#include <cstdint>

#include "cpu/activation_extra.h"
#include "cpu/activation_extra_erfc.h"
#include "cpu/simd_math_avx512.h"

namespace cnnfast::cpu::avx512_impl {
namespace {

using namespace cnnfast::avx512;

inline __m512 set1(float v) { return _mm512_set1_ps(v); }

template <class F>
inline void map1(const float* x, float* y, int64_t n, F f, bool stream) {
  stream_map(y, n, f, stream, x);
}

// gx = gy * d(x)
template <class F>
inline void map_grad(const float* gy, const float* x, float* gx, int64_t n, F d, bool stream) {
  stream_map(gx, n, [&](__m512 g, __m512 v) { return _mm512_mul_ps(g, d(v)); }, stream, gy, x);
}

// n / d for a positive, normal, finite d (div_1to2's refinement holds for any such d).
inline __m512 div16(__m512 n, __m512 d) { return div_1to2(n, d); }

// e^(-s * x^2) for s in {0.5, 1}: x*x = h + l exactly (l by FMA), e^(-s h) (1 - s l).
// Without l the rounding of x*x, up to 2^-24 x^2, would be an error of that size
// relative to the result: 4e-6 at x = 8.
// Past |x| = 16 the result is 0 in float32 for both s; the clamp (which keeps NaN) keeps
// the FMA off inf * inf - inf.
inline __m512 exp_neg_sq(__m512 x, float s) {
  x = _mm512_max_ps(set1(-16.0f), _mm512_min_ps(set1(16.0f), x));
  __m512 h = _mm512_mul_ps(x, x);
  __m512 l = _mm512_fmsub_ps(x, x, h);
  __m512 e = exp16(_mm512_mul_ps(set1(-s), h));
  return _mm512_mul_ps(e, _mm512_fnmadd_ps(set1(s), l, set1(1.0f)));
}

// t * G(t) of the file comment, for z = |x| * k >= 0 (or NaN).
inline __m512 erfc_scaled(__m512 z) {
  const __m512 one = set1(1.0f);
  // Beyond z = 12 erfc is below the float range; the clamp keeps 1 + z/2 finite for
  // div16. The operand order keeps NaN.
  z = _mm512_min_ps(set1(12.0f), z);
  __m512 t = div16(one, _mm512_fmadd_ps(set1(0.5f), z, one));
  __m512 u = _mm512_fmsub_ps(set1(2.0f), t, one);
  __m512 p = set1(kErfcG[kErfcGDegree]);
  for (int i = kErfcGDegree - 1; i >= 0; --i) p = _mm512_fmadd_ps(p, u, set1(kErfcG[i]));
  return _mm512_mul_ps(t, p);
}

constexpr float kInvSqrt2 = 0.70710678118654752f;

// Exact GELU's Phi(x) = erfc(-x / sqrt 2) / 2 as e^(-x^2/2) t G(t) / 2 (the erfc form
// above), on GELU's own degree-8 G (activation_extra_erfc.h, fitted for |x| <= 14.4),
// with constants folded: 0.5 into the
// erfc polynomial, 1/sqrt 2 into t's FMA, the low part of x*x into exp's reduced
// argument, and 1/d as the reciprocal estimate plus one Newton step (error ~2^-28, no
// quotient correction needed for a numerator of 1). Past |x| = 14.4, e^(-x^2/2) < 2e-45
// is 0 or the last subnormal, so the clamp there keeps exp's argument in range without
// exp16's own clamp and leaves x * Phi(x) at 0 or x as before. NaN passes the clamp.
struct GeluParts {
  __m512 phi, e, ax;  // Phi(x), e^(-x^2/2), |x| clamped to 14.4
};

inline GeluParts gelu_parts16(__m512 x) {
  const __m512 one = set1(1.0f);
  const __m512 ax = _mm512_min_ps(set1(14.4f), _mm512_abs_ps(x));  // the operand order keeps NaN
  const __m512 sq = _mm512_mul_ps(ax, ax);
  const __m512 l = _mm512_fmsub_ps(ax, ax, sq);  // ax^2 = sq + l exactly
  const __m512 e = exp16_core_lo(_mm512_mul_ps(set1(-0.5f), sq), set1(-0.5f), l);
  // t = 1 / (1 + z/2) for z = |x| / sqrt 2, as erfc_scaled.
  const __m512 d = _mm512_fmadd_ps(ax, set1(0.5f * kInvSqrt2), one);
  __m512 t = _mm512_rcp14_ps(d);
  t = _mm512_fmadd_ps(t, _mm512_fnmadd_ps(d, t, one), t);
  const __m512 u = _mm512_fmadd_ps(set1(kGeluUA), t, set1(kGeluUB));
  __m512 p = set1(0.5f * kGeluG[kGeluGDegree]);
  for (int i = kGeluGDegree - 1; i >= 0; --i) p = _mm512_fmadd_ps(p, u, set1(0.5f * kGeluG[i]));
  // erfc(|x| / sqrt 2) / 2 is Phi(x) for x < 0 and 1 - Phi(x) beyond (x * (1 - that) in the
  // forward, not x minus x times it, so that +inf gives +inf).
  const __m512 h = _mm512_mul_ps(_mm512_mul_ps(t, p), e);
  const __mmask16 pos = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ);
  return {_mm512_mask_sub_ps(h, pos, one, h), e, ax};
}

inline __m512 gelu16(__m512 x) { return _mm512_mul_ps(x, gelu_parts16(x).phi); }

// Phi(x) + x phi(x). The x of the second term is the clamped one (sign from x): past
// |x| = 14.4 phi(x) is 0, and +-inf gets its limits 1 and 0 instead of inf * 0.
inline __m512 gelu_grad16(__m512 x) {
  const GeluParts g = gelu_parts16(x);
  const __m512 xc = _mm512_castsi512_ps(_mm512_ternarylogic_epi32(_mm512_castps_si512(g.ax), _mm512_castps_si512(x),
                                                                  _mm512_set1_epi32(0x7fffffff), 0xe4));
  return _mm512_fmadd_ps(xc, _mm512_mul_ps(set1(0.39894228040143268f), g.e), g.phi);
}

// log(1 + w) for w in [0, 1]: 2 atanh(s), s = w / (2 + w), as in the AVX2 file.
inline __m512 log1p_unit16(__m512 w) {
  __m512 s = div16(w, _mm512_add_ps(set1(2.0f), w));
  __m512 s2 = _mm512_mul_ps(s, s);
  __m512 p = set1(1.0f / 15);
  p = _mm512_fmadd_ps(p, s2, set1(1.0f / 13));
  p = _mm512_fmadd_ps(p, s2, set1(1.0f / 11));
  p = _mm512_fmadd_ps(p, s2, set1(1.0f / 9));
  p = _mm512_fmadd_ps(p, s2, set1(1.0f / 7));
  p = _mm512_fmadd_ps(p, s2, set1(1.0f / 5));
  p = _mm512_fmadd_ps(p, s2, set1(1.0f / 3));
  p = _mm512_fmadd_ps(p, s2, set1(1.0f));
  return _mm512_mul_ps(_mm512_add_ps(s, s), p);
}

// log(1 + e^z) = max(z, 0) + log1p(e^-|z|); -|z| is clamped where e^-|z| is 0 anyway.
inline __m512 softplus16(__m512 z) {
  __m512 e = exp16_core(_mm512_max_ps(set1(-104.0f), _mm512_or_ps(z, set1(-0.0f))));
  return _mm512_add_ps(_mm512_max_ps(z, _mm512_setzero_ps()), log1p_unit16(e));
}

// 2 * sqrt(2/pi) * (x + 0.044715 x^3): the sigmoid argument of GELU-tanh.
inline __m512 gelu_tanh_arg16(__m512 x) {
  __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
  return _mm512_mul_ps(set1(2.0f * 0.79788456080286536f), _mm512_fmadd_ps(set1(0.044715f), x3, x));
}

// tanh(softplus(x)) = n / (n + 2), n = e^x (e^x + 2); 1 in float32 beyond x = 20,
// where the clamp keeps n finite.
inline __m512 tanh_softplus16(__m512 x) {
  __m512 e = exp16(_mm512_min_ps(x, set1(20.0f)));
  __m512 n = _mm512_mul_ps(e, _mm512_add_ps(e, set1(2.0f)));
  return div16(n, _mm512_add_ps(n, set1(2.0f)));
}

// erf(x): odd Maclaurin series to x^13 below |x| = 0.5, 1 - erfc(|x|) with x's sign beyond.
inline __m512 erf16(__m512 x) {
  const __m512 ax = _mm512_abs_ps(x);
  __m512 z = _mm512_mul_ps(x, x);
  __m512 p = set1(-1.0f / 75600);
  p = _mm512_fmadd_ps(p, z, set1(1.0f / 9360));
  p = _mm512_fmadd_ps(p, z, set1(-1.0f / 1320));
  p = _mm512_fmadd_ps(p, z, set1(1.0f / 216));
  p = _mm512_fmadd_ps(p, z, set1(-1.0f / 42));
  p = _mm512_fmadd_ps(p, z, set1(1.0f / 10));
  p = _mm512_fmadd_ps(p, z, set1(-1.0f / 3));
  p = _mm512_fmadd_ps(p, z, set1(1.0f));
  __m512 small = _mm512_mul_ps(_mm512_mul_ps(set1(1.12837916709551257f), x), p);
  __m512 big = _mm512_fnmadd_ps(exp_neg_sq(ax, 1.0f), erfc_scaled(ax), set1(1.0f));
  // Sign bit from x, the rest from big (big >= 0); NaN takes this branch and stays NaN.
  big = _mm512_castsi512_ps(_mm512_ternarylogic_epi32(_mm512_castps_si512(big), _mm512_castps_si512(x),
                                                      _mm512_set1_epi32(0x7fffffff), 0xe4));
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(ax, set1(0.5f), _CMP_LT_OQ), big, small);
}

}  // namespace

void extra_activation_forward(ExtraActivation act, const float* x, float* y, int64_t n, float beta, float threshold,
                              bool stream) {
  const __m512 zero = _mm512_setzero_ps(), one = set1(1.0f), three = set1(3.0f), six = set1(6.0f);
  switch (act) {
    case ExtraActivation::GELU:
      return map1(x, y, n, [&](__m512 v) { return gelu16(v); }, stream);
    case ExtraActivation::GELUTanh:
      return map1(x, y, n, [&](__m512 v) { return _mm512_mul_ps(v, sigmoid16(gelu_tanh_arg16(v))); }, stream);
    case ExtraActivation::Hardswish:
      // max/min return their second operand for NaN, so NaN reaches the product.
      return map1(x, y, n, [&](__m512 v) {
        __m512 r = _mm512_min_ps(six, _mm512_max_ps(zero, _mm512_add_ps(v, three)));
        return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, three, _CMP_GE_OQ),
                                    _mm512_mul_ps(_mm512_mul_ps(v, r), set1(1.0f / 6.0f)), v);
      }, stream);
    case ExtraActivation::Hardsigmoid:
      return map1(x, y, n, [&](__m512 v) {
        // (x + 3) / 6: x + 3 is exact near -3, where x / 6 + 1/2 would cancel.
        return _mm512_min_ps(one, _mm512_max_ps(zero, _mm512_mul_ps(_mm512_add_ps(v, three), set1(1.0f / 6.0f))));
      }, stream);
    case ExtraActivation::ReLU6:
      return map1(x, y, n, [&](__m512 v) { return _mm512_min_ps(six, _mm512_max_ps(zero, v)); }, stream);
    case ExtraActivation::Mish:
      return map1(x, y, n, [&](__m512 v) { return _mm512_mul_ps(v, tanh_softplus16(v)); }, stream);
    case ExtraActivation::Softplus: {
      const __m512 b = set1(beta), th = set1(threshold), inv_b = set1(1.0f / beta);
      return map1(x, y, n, [&](__m512 v) {
        __m512 z = _mm512_mul_ps(b, v);
        return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(z, th, _CMP_GT_OQ), _mm512_mul_ps(softplus16(z), inv_b), v);
      }, stream);
    }
    case ExtraActivation::Erf:
      return map1(x, y, n, [&](__m512 v) { return erf16(v); }, stream);
  }
}

void extra_activation_backward(ExtraActivation act, const float* gy, const float* x, float* gx, int64_t n, float beta,
                               float threshold, bool stream) {
  const __m512 zero = _mm512_setzero_ps(), one = set1(1.0f), three = set1(3.0f), six = set1(6.0f);
  switch (act) {
    case ExtraActivation::GELU:
      return map_grad(gy, x, gx, n, [&](__m512 v) { return gelu_grad16(v); }, stream);
    case ExtraActivation::GELUTanh:
      return map_grad(gy, x, gx, n, [&](__m512 v) {
        __m512 s = sigmoid16(gelu_tanh_arg16(v));
        // d(2u)/dx = 2 sqrt(2/pi) (1 + 3 * 0.044715 x^2)
        __m512 du2 = _mm512_mul_ps(set1(2.0f * 0.79788456080286536f),
                                   _mm512_fmadd_ps(set1(3.0f * 0.044715f), _mm512_mul_ps(v, v), one));
        __m512 ds = _mm512_mul_ps(_mm512_mul_ps(s, _mm512_sub_ps(one, s)), du2);
        return _mm512_fmadd_ps(v, ds, s);
      }, stream);
    case ExtraActivation::Hardswish:
      return map_grad(gy, x, gx, n, [&](__m512 v) {
        // Multiply, then add (no FMA): the rounded product makes the slope exactly 0 at -1.5.
        __m512 d = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, three, _CMP_LT_OQ), one,
                                        _mm512_add_ps(_mm512_mul_ps(v, set1(1.0f / 3.0f)), set1(0.5f)));
        return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, set1(-3.0f), _CMP_LE_OQ), d, zero);
      }, stream);
    case ExtraActivation::Hardsigmoid:
      return map_grad(gy, x, gx, n, [&](__m512 v) {
        const __mmask16 inside = _mm512_cmp_ps_mask(v, set1(-3.0f), _CMP_GT_OQ) & _mm512_cmp_ps_mask(v, three, _CMP_LT_OQ);
        return _mm512_maskz_mov_ps(inside, set1(1.0f / 6.0f));
      }, stream);
    case ExtraActivation::ReLU6:
      return map_grad(gy, x, gx, n, [&](__m512 v) {
        const __mmask16 outside = _mm512_cmp_ps_mask(v, zero, _CMP_LE_OQ) | _mm512_cmp_ps_mask(v, six, _CMP_GE_OQ);
        return _mm512_maskz_mov_ps(static_cast<__mmask16>(~outside), one);
      }, stream);
    case ExtraActivation::Mish:
      return map_grad(gy, x, gx, n, [&](__m512 v) {
        __m512 t = tanh_softplus16(v);
        return _mm512_fmadd_ps(_mm512_mul_ps(v, _mm512_fnmadd_ps(t, t, one)), sigmoid16(v), t);
      }, stream);
    case ExtraActivation::Softplus: {
      const __m512 b = set1(beta), th = set1(threshold);
      return map_grad(gy, x, gx, n, [&](__m512 v) {
        __m512 z = _mm512_mul_ps(b, v);
        return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(z, th, _CMP_GT_OQ), sigmoid16(z), one);
      }, stream);
    }
    case ExtraActivation::Erf:
      return map_grad(gy, x, gx, n, [&](__m512 v) {
        return _mm512_mul_ps(set1(1.12837916709551257f), exp_neg_sq(v, 1.0f));
      }, stream);
  }
}

}  // namespace cnnfast::cpu::avx512_impl
