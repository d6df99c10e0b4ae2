// AVX2+FMA float32 kernels for activation_extra.h. Tails go through masked
// loads/stores so every element sees the same arithmetic as the body.
//
// erfc: the Chebyshev fit of Numerical Recipes' erfcc, t * exp(poly(t) - z^2) with
// t = 1 / (1 + z/2), fractional error < 1.2e-7 for every z >= 0, so GELU keeps its
// relative accuracy in the negative tail where 1 + erf would cancel. log1p on
// (0, 1]: 2 atanh(s), s = w / (2 + w) <= 1/3, as its odd series to s^15 (remainder
// < 2e-8 relative), so Softplus needs no general logarithm.
#include <immintrin.h>

#include <cstdint>

#include "cpu/activation_extra.h"
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

// erfc(z) for z >= 0 (see the file comment).
inline __m256 erfc_nonneg8(__m256 z) {
  const __m256 one = set1(1.0f);
  __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(set1(0.5f), z, one));
  __m256 p = set1(0.17087277f);
  p = _mm256_fmadd_ps(p, t, set1(-0.82215223f));
  p = _mm256_fmadd_ps(p, t, set1(1.48851587f));
  p = _mm256_fmadd_ps(p, t, set1(-1.13520398f));
  p = _mm256_fmadd_ps(p, t, set1(0.27886807f));
  p = _mm256_fmadd_ps(p, t, set1(-0.18628806f));
  p = _mm256_fmadd_ps(p, t, set1(0.09678418f));
  p = _mm256_fmadd_ps(p, t, set1(0.37409196f));
  p = _mm256_fmadd_ps(p, t, set1(1.00002368f));
  p = _mm256_fmadd_ps(p, t, set1(-1.26551223f));
  return _mm256_mul_ps(t, exp8(_mm256_fnmadd_ps(z, z, p)));
}

// Phi(x) = erfc(-x / sqrt 2) / 2, from erfc(|x| / sqrt 2) and its reflection.
inline __m256 normal_cdf8(__m256 x) {
  __m256 half_e = _mm256_mul_ps(set1(0.5f), erfc_nonneg8(_mm256_mul_ps(abs8(x), set1(0.70710678118654752f))));
  __m256 pos = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ);
  return _mm256_blendv_ps(half_e, _mm256_sub_ps(set1(1.0f), half_e), pos);
}

inline __m256 normal_pdf8(__m256 x) {
  return _mm256_mul_ps(set1(0.39894228040143268f), exp8(_mm256_mul_ps(set1(-0.5f), _mm256_mul_ps(x, x))));
}

// log(1 + w) for w in [0, 1].
inline __m256 log1p_unit8(__m256 w) {
  __m256 s = _mm256_div_ps(w, _mm256_add_ps(set1(2.0f), w));
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
  return _mm256_div_ps(n, _mm256_add_ps(n, set1(2.0f)));
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
  __m256 big = _mm256_sub_ps(set1(1.0f), erfc_nonneg8(ax));
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
      return map1(x, y, n, [&](__m256 v) { return _mm256_mul_ps(v, normal_cdf8(v)); });
    case ExtraActivation::GELUTanh:
      return map1(x, y, n, [&](__m256 v) { return _mm256_mul_ps(v, sigmoid8(gelu_tanh_arg8(v))); });
    case ExtraActivation::Hardswish:
      // max/min return their second operand for NaN, so NaN reaches the product.
      return map1(x, y, n, [&](__m256 v) {
        __m256 r = _mm256_min_ps(six, _mm256_max_ps(zero, _mm256_add_ps(v, three)));
        return _mm256_blendv_ps(_mm256_div_ps(_mm256_mul_ps(v, r), six), v, _mm256_cmp_ps(v, three, _CMP_GE_OQ));
      });
    case ExtraActivation::Hardsigmoid:
      return map1(x, y, n, [&](__m256 v) {
        return _mm256_min_ps(one, _mm256_max_ps(zero, _mm256_add_ps(_mm256_div_ps(v, six), set1(0.5f))));
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
      return map_grad(gy, x, gx, n, [&](__m256 v) { return _mm256_fmadd_ps(v, normal_pdf8(v), normal_cdf8(v)); });
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
        __m256 d = _mm256_blendv_ps(one, _mm256_add_ps(_mm256_div_ps(v, three), set1(0.5f)),
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
        return _mm256_mul_ps(set1(1.12837916709551257f), exp8(_mm256_mul_ps(set1(-1.0f), _mm256_mul_ps(v, v))));
      });
  }
}

}  // namespace cnnfast::cpu::avx2_impl
