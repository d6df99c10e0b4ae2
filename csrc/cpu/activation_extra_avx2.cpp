// AVX2+FMA float32 kernels for activation_extra.h. Tails go through masked
// loads/stores so every element sees the same arithmetic as the body.
//
// erfc(z), z >= 0, as e^(-z^2) * t * G(t) (activation_extra_erfc.h), e^(-z^2) from the
// exact square (an FMA recovers the rounding of z*z), so GELU keeps its relative
// accuracy in the negative tail where 1 + erf would cancel, and exact GELU's gradient
// Phi(x) + x phi(x) shares one e^(-x^2/2) between Phi and phi. Quotients use VRCPPS
// refined by a Newton step and a residual correction (within 1 ULP) instead of VDIVPS,
// which bounds these loops on Zen 4. log1p on (0, 1]: 2 atanh(s), s = w / (2 + w) <= 1/3,
// as its odd series to s^15 (remainder < 2e-8 relative), so Softplus needs no general
// logarithm.
#include <immintrin.h>

#include <cstdint>

#include "cpu/activation_extra.h"
#include "cpu/activation_extra_erfc.h"
#include "cpu/simd_math_avx2.h"

namespace cnnfast::cpu::avx2_impl {
namespace {

using namespace cnnfast::avx2;

template <class F>
inline void map1(const float* x, float* y, int64_t n, F f) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, f(_mm256_loadu_ps(x + i)));
  if (i < n) {
    __m256i m = tail_mask(static_cast<int>(n - i));
    _mm256_maskstore_ps(y + i, m, f(_mm256_maskload_ps(x + i, m)));
  }
}

// gx = gy * d(x)
template <class F>
inline void map_grad(const float* gy, const float* x, float* gx, int64_t n, F d) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(gx + i, _mm256_mul_ps(_mm256_loadu_ps(gy + i), d(_mm256_loadu_ps(x + i))));
  if (i < n) {
    __m256i m = tail_mask(static_cast<int>(n - i));
    _mm256_maskstore_ps(gx + i, m, _mm256_mul_ps(_mm256_maskload_ps(gy + i, m), d(_mm256_maskload_ps(x + i, m))));
  }
}

inline __m256 set1(float v) { return _mm256_set1_ps(v); }

inline __m256 abs8(__m256 x) { return _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff))); }

// n / d for a positive, normal, finite d: 12-bit reciprocal, one Newton step, the
// quotient, one residual correction.
inline __m256 div8(__m256 n, __m256 d) {
  const __m256 one = set1(1.0f);
  __m256 r = _mm256_rcp_ps(d);
  r = _mm256_fmadd_ps(r, _mm256_fnmadd_ps(d, r, one), r);
  __m256 q = _mm256_mul_ps(n, r);
  return _mm256_fmadd_ps(r, _mm256_fnmadd_ps(d, q, n), q);
}

// e^(-s * x^2) for s in {0.5, 1}: x*x = h + l exactly (l by FMA), e^(-s h) (1 - s l).
// Past |x| = 16 the result is 0 in float32; the clamp (which keeps NaN) keeps the FMA
// off inf * inf - inf.
inline __m256 exp_neg_sq8(__m256 x, float s) {
  x = _mm256_max_ps(set1(-16.0f), _mm256_min_ps(set1(16.0f), x));
  __m256 h = _mm256_mul_ps(x, x);
  __m256 l = _mm256_fmsub_ps(x, x, h);
  __m256 e = exp8(_mm256_mul_ps(set1(-s), h));
  return _mm256_mul_ps(e, _mm256_fnmadd_ps(set1(s), l, set1(1.0f)));
}

// t * G(t) of activation_extra_erfc.h for z >= 0 (or NaN); erfc(z) = e^(-z^2) times this.
inline __m256 erfc_scaled8(__m256 z) {
  const __m256 one = set1(1.0f);
  // Beyond z = 12 erfc is below the float range; the clamp keeps 1 + z/2 finite for div8.
  z = _mm256_min_ps(set1(12.0f), z);
  __m256 t = div8(one, _mm256_fmadd_ps(set1(0.5f), z, one));
  __m256 u = _mm256_fmsub_ps(set1(2.0f), t, one);
  __m256 p = set1(kErfcG[kErfcGDegree]);
  for (int i = kErfcGDegree - 1; i >= 0; --i) p = _mm256_fmadd_ps(p, u, set1(kErfcG[i]));
  return _mm256_mul_ps(t, p);
}

// Exact GELU's Phi(x) as e^(-x^2/2) t G(t) / 2 (the erfc form above) on GELU's own
// degree-8 G (activation_extra_erfc.h), constants folded as in the AVX-512 file:
// 0.5 into the erfc polynomial, 1/sqrt 2 into t's FMA, the low part
// of x*x into exp's reduced argument, and 1/d as the reciprocal estimate plus one Newton
// step (error ~2^-23 for VRCPPS's 12 bits, well inside GELU's bound).
struct GeluParts {
  __m256 phi, e, ax;  // Phi(x), e^(-x^2/2), |x| clamped to 13.1
};

inline GeluParts gelu_parts8(__m256 x) {
  const __m256 one = set1(1.0f);
  // e^(-x^2/2) is computed for |x| clamped to 13.1, where the exponent -85.8 needs none
  // of exp8's range handling, and set to 0 beyond (where it is below 2^-124, and Phi(-|x|)
  // and x phi(x) round to 0 or a subnormal). The clamp keeps the FMA off inf * inf - inf;
  // NaN fails the comparison and ends as NaN through x.
  const __m256 ax = _mm256_min_ps(set1(13.1f), abs8(x));
  const __m256 sq = _mm256_mul_ps(ax, ax);
  const __m256 l = _mm256_fmsub_ps(ax, ax, sq);  // ax^2 = sq + l exactly
  const __m256 e = _mm256_and_ps(_mm256_cmp_ps(abs8(x), set1(13.1f), _CMP_LE_OQ),
                                 exp8_inrange_lo(_mm256_mul_ps(set1(-0.5f), sq), set1(-0.5f), l));
  const __m256 d = _mm256_fmadd_ps(ax, set1(0.5f * 0.70710678118654752f), one);
  __m256 t = _mm256_rcp_ps(d);
  t = _mm256_fmadd_ps(t, _mm256_fnmadd_ps(d, t, one), t);
  const __m256 u = _mm256_fmadd_ps(set1(kGeluUA), t, set1(kGeluUB));
  __m256 p = set1(0.5f * kGeluG[kGeluGDegree]);
  for (int i = kGeluGDegree - 1; i >= 0; --i) p = _mm256_fmadd_ps(p, u, set1(0.5f * kGeluG[i]));
  // erfc(|x| / sqrt 2) / 2 is Phi(x) for x < 0 and 1 - Phi(x) beyond.
  const __m256 h = _mm256_mul_ps(_mm256_mul_ps(t, p), e);
  return {_mm256_blendv_ps(h, _mm256_sub_ps(one, h), _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ)), e, ax};
}

inline __m256 gelu8(__m256 x) { return _mm256_mul_ps(x, gelu_parts8(x).phi); }

// Phi(x) + x phi(x), the x of the second term clamped (sign from x), as gelu_grad16.
inline __m256 gelu_grad8(__m256 x) {
  const GeluParts g = gelu_parts8(x);
  const __m256 sign = _mm256_and_ps(x, set1(-0.0f));
  return _mm256_fmadd_ps(_mm256_or_ps(g.ax, sign), _mm256_mul_ps(set1(0.39894228040143268f), g.e), g.phi);
}

// log(1 + w) for w in [0, 1].
inline __m256 log1p_unit8(__m256 w) {
  __m256 s = div8(w, _mm256_add_ps(set1(2.0f), w));
  __m256 s2 = _mm256_mul_ps(s, s);
  __m256 p = set1(1.0f / 15);
  p = _mm256_fmadd_ps(p, s2, set1(1.0f / 13));
  p = _mm256_fmadd_ps(p, s2, set1(1.0f / 11));
  p = _mm256_fmadd_ps(p, s2, set1(1.0f / 9));
  p = _mm256_fmadd_ps(p, s2, set1(1.0f / 7));
  p = _mm256_fmadd_ps(p, s2, set1(1.0f / 5));
  p = _mm256_fmadd_ps(p, s2, set1(1.0f / 3));
  p = _mm256_fmadd_ps(p, s2, set1(1.0f));
  return _mm256_mul_ps(_mm256_add_ps(s, s), p);
}

// log(1 + e^z) = max(z, 0) + log1p(e^-|z|); NaN stays NaN through exp8.
inline __m256 softplus8(__m256 z) {
  return _mm256_add_ps(_mm256_max_ps(z, _mm256_setzero_ps()), log1p_unit8(exp8(_mm256_sub_ps(_mm256_setzero_ps(), abs8(z)))));
}

// 2 * sqrt(2/pi) * (x + 0.044715 x^3): the sigmoid argument of GELU-tanh.
inline __m256 gelu_tanh_arg8(__m256 x) {
  __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
  return _mm256_mul_ps(set1(2.0f * 0.79788456080286536f), _mm256_fmadd_ps(set1(0.044715f), x3, x));
}

// tanh(softplus(x)) = n / (n + 2) with n = e^x (e^x + 2); beyond x = 20 it is 1
// in float32, and clamping there keeps e^2x finite.
inline __m256 tanh_softplus8(__m256 x) {
  __m256 e = exp8(_mm256_min_ps(x, set1(20.0f)));
  __m256 n = _mm256_mul_ps(e, _mm256_add_ps(e, set1(2.0f)));
  return div8(n, _mm256_add_ps(n, set1(2.0f)));
}

// erf(x): odd Maclaurin series to x^13 for |x| < 0.5 (remainder < 1e-8 relative, where
// 1 - erfc would lose the small values' digits), 1 - erfc(|x|) with the sign beyond.
inline __m256 erf8(__m256 x) {
  const __m256 ax = abs8(x);
  __m256 z = _mm256_mul_ps(x, x);
  __m256 p = set1(-1.0f / 75600);
  p = _mm256_fmadd_ps(p, z, set1(1.0f / 9360));
  p = _mm256_fmadd_ps(p, z, set1(-1.0f / 1320));
  p = _mm256_fmadd_ps(p, z, set1(1.0f / 216));
  p = _mm256_fmadd_ps(p, z, set1(-1.0f / 42));
  p = _mm256_fmadd_ps(p, z, set1(1.0f / 10));
  p = _mm256_fmadd_ps(p, z, set1(-1.0f / 3));
  p = _mm256_fmadd_ps(p, z, set1(1.0f));
  __m256 small = _mm256_mul_ps(_mm256_mul_ps(set1(1.12837916709551257f), x), p);
  __m256 big = _mm256_fnmadd_ps(exp_neg_sq8(ax, 1.0f), erfc_scaled8(ax), set1(1.0f));
  const __m256 signmask = _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(0x80000000u)));
  big = _mm256_or_ps(big, _mm256_and_ps(x, signmask));
  // NaN fails the compare and takes the erfc branch, which keeps it NaN.
  return _mm256_blendv_ps(big, small, _mm256_cmp_ps(ax, set1(0.5f), _CMP_LT_OQ));
}

}  // namespace

void extra_activation_forward(ExtraActivation act, const float* x, float* y, int64_t n, float beta, float threshold) {
  const __m256 zero = _mm256_setzero_ps(), one = set1(1.0f), three = set1(3.0f), six = set1(6.0f);
  switch (act) {
    case ExtraActivation::GELU:
      return map1(x, y, n, [&](__m256 v) { return gelu8(v); });
    case ExtraActivation::GELUTanh:
      return map1(x, y, n, [&](__m256 v) { return _mm256_mul_ps(v, sigmoid8(gelu_tanh_arg8(v))); });
    case ExtraActivation::Hardswish:
      // max/min return their second operand for NaN, so NaN reaches the product.
      return map1(x, y, n, [&](__m256 v) {
        __m256 r = _mm256_min_ps(six, _mm256_max_ps(zero, _mm256_add_ps(v, three)));
        return _mm256_blendv_ps(_mm256_mul_ps(_mm256_mul_ps(v, r), set1(1.0f / 6.0f)), v,
                                _mm256_cmp_ps(v, three, _CMP_GE_OQ));
      });
    case ExtraActivation::Hardsigmoid:
      return map1(x, y, n, [&](__m256 v) {
        // (x + 3) / 6: x + 3 is exact near -3, where x / 6 + 1/2 would cancel.
        return _mm256_min_ps(one, _mm256_max_ps(zero, _mm256_mul_ps(_mm256_add_ps(v, three), set1(1.0f / 6.0f))));
      });
    case ExtraActivation::ReLU6:
      return map1(x, y, n, [&](__m256 v) { return _mm256_min_ps(six, _mm256_max_ps(zero, v)); });
    case ExtraActivation::Mish:
      return map1(x, y, n, [&](__m256 v) { return _mm256_mul_ps(v, tanh_softplus8(v)); });
    case ExtraActivation::Softplus: {
      const __m256 b = set1(beta), th = set1(threshold), inv_b = set1(1.0f / beta);
      return map1(x, y, n, [&](__m256 v) {
        __m256 z = _mm256_mul_ps(b, v);
        return _mm256_blendv_ps(_mm256_mul_ps(softplus8(z), inv_b), v, _mm256_cmp_ps(z, th, _CMP_GT_OQ));
      });
    }
    case ExtraActivation::Erf:
      return map1(x, y, n, [&](__m256 v) { return erf8(v); });
  }
}

void extra_activation_backward(ExtraActivation act, const float* gy, const float* x, float* gx, int64_t n, float beta,
                               float threshold) {
  const __m256 zero = _mm256_setzero_ps(), one = set1(1.0f), three = set1(3.0f), six = set1(6.0f);
  switch (act) {
    case ExtraActivation::GELU:
      return map_grad(gy, x, gx, n, [&](__m256 v) { return gelu_grad8(v); });
    case ExtraActivation::GELUTanh:
      return map_grad(gy, x, gx, n, [&](__m256 v) {
        __m256 s = sigmoid8(gelu_tanh_arg8(v));
        // d(2u)/dx = 2 sqrt(2/pi) (1 + 3 * 0.044715 x^2)
        __m256 du2 = _mm256_mul_ps(set1(2.0f * 0.79788456080286536f),
                                   _mm256_fmadd_ps(set1(3.0f * 0.044715f), _mm256_mul_ps(v, v), one));
        __m256 ds = _mm256_mul_ps(_mm256_mul_ps(s, _mm256_sub_ps(one, s)), du2);
        return _mm256_fmadd_ps(v, ds, s);
      });
    case ExtraActivation::Hardswish:
      return map_grad(gy, x, gx, n, [&](__m256 v) {
        // Multiply, then add (no FMA): the rounded product makes the slope exactly 0 at -1.5.
        __m256 d = _mm256_blendv_ps(one, _mm256_add_ps(_mm256_mul_ps(v, set1(1.0f / 3.0f)), set1(0.5f)),
                                    _mm256_cmp_ps(v, three, _CMP_LT_OQ));
        return _mm256_blendv_ps(d, zero, _mm256_cmp_ps(v, set1(-3.0f), _CMP_LE_OQ));
      });
    case ExtraActivation::Hardsigmoid:
      return map_grad(gy, x, gx, n, [&](__m256 v) {
        __m256 inside = _mm256_and_ps(_mm256_cmp_ps(v, set1(-3.0f), _CMP_GT_OQ), _mm256_cmp_ps(v, three, _CMP_LT_OQ));
        return _mm256_and_ps(inside, set1(1.0f / 6.0f));
      });
    case ExtraActivation::ReLU6:
      return map_grad(gy, x, gx, n, [&](__m256 v) {
        __m256 outside = _mm256_or_ps(_mm256_cmp_ps(v, zero, _CMP_LE_OQ), _mm256_cmp_ps(v, six, _CMP_GE_OQ));
        return _mm256_andnot_ps(outside, one);
      });
    case ExtraActivation::Mish:
      return map_grad(gy, x, gx, n, [&](__m256 v) {
        __m256 t = tanh_softplus8(v);
        return _mm256_fmadd_ps(_mm256_mul_ps(v, _mm256_fnmadd_ps(t, t, one)), sigmoid8(v), t);
      });
    case ExtraActivation::Softplus: {
      const __m256 b = set1(beta), th = set1(threshold);
      return map_grad(gy, x, gx, n, [&](__m256 v) {
        __m256 z = _mm256_mul_ps(b, v);
        return _mm256_blendv_ps(sigmoid8(z), one, _mm256_cmp_ps(z, th, _CMP_GT_OQ));
      });
    }
    case ExtraActivation::Erf:
      return map_grad(gy, x, gx, n, [&](__m256 v) {
        return _mm256_mul_ps(set1(1.12837916709551257f), exp_neg_sq8(v, 1.0f));
      });
  }
}

}  // namespace cnnfast::cpu::avx2_impl
