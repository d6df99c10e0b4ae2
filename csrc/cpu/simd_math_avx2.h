// Vectorised float32 transcendental functions for the *_avx2.cpp kernels.
// Include only from files compiled with -mavx2 -mfma.
//
// Accuracy (against float64 over [-88, 88] on a dense grid): exp8 <= 2 ULP, expm1_8 <= 3 ULP,
// tanh8 <= 3 ULP. NaN in gives NaN out; +-inf and overflow/underflow saturate
// as the C library does (exp(-inf)=0, exp(+inf)=inf). sigmoid8 has its own
// cheaper exponential (exp_nonpos8, below), bounded by
// tests/test_activation.py::test_sigmoid_silu_avx2_accuracy_dense_grid.
//
// exp: Cody-Waite range reduction x = n*ln2 + r, |r| <= ln2/2, then a degree-6
// minimax polynomial for e^r (the Cephes expf coefficients), scaled by 2^n built
// in the exponent field. tanh: odd minimax polynomial for |x| < 0.625 (where
// 1 - 2/(e^2x + 1) would cancel), the exp form beyond.
#pragma once
#include <immintrin.h>

namespace cnnfast::avx2 {

constexpr float kExp8Hi = 88.3762626647949f, kExp8Lo = -87.3365447504f;

// n = round(x log2 e) and r = x - n ln2 for x in exp8's range, ln2 split in two so n*C1
// is exact and the reduction loses no bits.
inline __m256 exp8_reduce(__m256 x, __m256* n) {
  *n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(*n, _mm256_set1_ps(0.693359375f), x);
  return _mm256_fnmadd_ps(*n, _mm256_set1_ps(-2.12194440e-4f), r);
}

// e^r * 2^n for 2^n a normal float.
inline __m256 exp8_scaled(__m256 n, __m256 r) {
  __m256 p = _mm256_set1_ps(1.9875691500E-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507E-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073E-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894E-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459E-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201E-1f));
  __m256 r2 = _mm256_mul_ps(r, r);
  p = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// e^r * 2^n, saturated to inf / 0 where the unclamped x was out of range.
inline __m256 exp8_finish(__m256 x, __m256 n, __m256 r) {
  __m256 y = exp8_scaled(n, r);
  // Outside the representable range the clamped value is replaced by inf / 0.
  y = _mm256_blendv_ps(y, _mm256_set1_ps(__builtin_inff()), _mm256_cmp_ps(x, _mm256_set1_ps(kExp8Hi), _CMP_GT_OQ));
  y = _mm256_blendv_ps(y, _mm256_setzero_ps(), _mm256_cmp_ps(x, _mm256_set1_ps(kExp8Lo), _CMP_LT_OQ));
  return y;
}

inline __m256 exp8(__m256 x) {
  // The operand order keeps NaN: MIN/MAX return the second operand on NaN.
  __m256 xc = _mm256_max_ps(_mm256_set1_ps(kExp8Lo), _mm256_min_ps(_mm256_set1_ps(kExp8Hi), x));
  __m256 n;
  __m256 r = exp8_reduce(xc, &n);
  return exp8_finish(x, n, r);
}

// e^(x + a*b) for x in [kExp8Lo, kExp8Hi] (no clamp, no saturation: the caller keeps x
// there) and a small a*b (|a*b| << 1): the low part joins the reduced argument, where it
// loses nothing, so a value known as a hi + lo pair keeps its low bits for one FMA.
inline __m256 exp8_inrange_lo(__m256 x, __m256 a, __m256 b) {
  __m256 n;
  __m256 r = exp8_reduce(x, &n);
  return exp8_scaled(n, _mm256_fmadd_ps(a, b, r));
}

// e^x - 1 without the cancellation of exp8(x) - 1 near zero.
inline __m256 expm1_8(__m256 x) {
  // Taylor series to x^9 / 9! : truncation error < 2e-9 relative for |x| < 0.5.
  __m256 p = _mm256_set1_ps(1.0f / 362880.0f);
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.0f / 40320.0f));
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.0f / 5040.0f));
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.0f / 720.0f));
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(0.5f));
  __m256 small = _mm256_fmadd_ps(_mm256_mul_ps(p, x), x, x);
  __m256 big = _mm256_sub_ps(exp8(x), _mm256_set1_ps(1.0f));
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 is_small = _mm256_cmp_ps(_mm256_and_ps(x, absmask), _mm256_set1_ps(0.5f), _CMP_LT_OQ);
  return _mm256_blendv_ps(big, small, is_small);
}

// e^z for z in [-87, 0] only (callers clamp): the cheaper exponential behind
// sigmoid8. No overflow or underflow is possible there, so it needs no clamps or
// blends, and 2^n goes straight into the exponent bits with an integer add:
// n >= -126 and e^r >= 1 whenever n = -126, so the result stays a normal float.
// n = round(z*log2(e)) comes from the 1.5*2^23 shifter, whose low mantissa bits
// are n itself. e^r = 1 + r*q(r), q of degree 5 fitted for minimal relative error
// on |r| <= ln2/2 (2e-9), evaluated in Estrin's scheme for a short dependency
// chain; with float32 rounding the result is within 7.5e-8 relative.
inline __m256 exp_nonpos8(__m256 z) {
  const __m256 shifter = _mm256_set1_ps(12582912.0f);
  __m256 t = _mm256_fmadd_ps(z, _mm256_set1_ps(1.44269504088896341f), shifter);
  __m256 n = _mm256_sub_ps(t, shifter);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), z);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 r2 = _mm256_mul_ps(r, r);
  __m256 a = _mm256_fmadd_ps(_mm256_set1_ps(0.49999994f), r, _mm256_set1_ps(1.0f));
  __m256 b = _mm256_fmadd_ps(_mm256_set1_ps(4.1668002e-2f), r, _mm256_set1_ps(1.6666432e-1f));
  __m256 c = _mm256_fmadd_ps(_mm256_set1_ps(1.3843642e-3f), r, _mm256_set1_ps(8.3741527e-3f));
  __m256 q = _mm256_fmadd_ps(_mm256_fmadd_ps(c, r2, b), r2, a);
  __m256 p = _mm256_fmadd_ps(q, r, _mm256_set1_ps(1.0f));
  return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), _mm256_slli_epi32(_mm256_castps_si256(t), 23)));
}

// 1 / (1 + e^-x) from e = e^-|x| <= 1: 1 / (1 + e) for x >= 0, e / (1 + e) for
// x < 0, so one exponential that can neither overflow nor lose the small tail.
// Below x = -87 the result stays at e^-87 / (1 + e^-87) ~ 1.6e-38 (the smallest
// normal floats) where the exact value is smaller; sigmoid8_flush makes it 0.
// NaN stays NaN (the max keeps its second operand).
inline __m256 sigmoid8(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.0f);
  __m256 z = _mm256_max_ps(_mm256_set1_ps(-87.0f), _mm256_or_ps(x, _mm256_set1_ps(-0.0f)));
  __m256 e = exp_nonpos8(z);
  // blendv selects on the sign bit of x.
  return _mm256_div_ps(_mm256_blendv_ps(one, e, x), _mm256_add_ps(one, e));
}

// sigmoid8 with exact zeros below x = -87, for SiLU: x * sigmoid(x) must be
// NaN at x = -inf and -0 for very negative x, as in PyTorch.
inline __m256 sigmoid8_flush(__m256 x) {
  return _mm256_andnot_ps(_mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_LT_OQ), sigmoid8(x));
}

inline __m256 tanh8(__m256 x) {
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 signmask = _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(0x80000000u)));
  __m256 ax = _mm256_and_ps(x, absmask);
  __m256 z = _mm256_mul_ps(x, x);
  __m256 p = _mm256_set1_ps(-5.70498872745E-3f);
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(2.06390887954E-2f));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-5.37397155531E-2f));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(1.33314422036E-1f));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-3.33332819422E-1f));
  __m256 small = _mm256_fmadd_ps(_mm256_mul_ps(p, z), x, x);
  // |x| >= 0.625: tanh|x| = 1 - 2 / (e^{2|x|} + 1), sign restored afterwards.
  const __m256 one = _mm256_set1_ps(1.0f);
  __m256 e = exp8(_mm256_add_ps(ax, ax));
  __m256 big = _mm256_sub_ps(one, _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, one)));
  big = _mm256_or_ps(big, _mm256_and_ps(x, signmask));
  __m256 is_small = _mm256_cmp_ps(ax, _mm256_set1_ps(0.625f), _CMP_LT_OQ);
  __m256 y = _mm256_blendv_ps(big, small, is_small);
  // NaN compares false above and would take the exp branch, which keeps NaN.
  // x + x^3 p(x^2) is +0 at x = -0; tanh is odd, so x's sign bit fixes that.
  return _mm256_or_ps(y, _mm256_and_ps(x, signmask));
}

// Horizontal reductions of one register.
inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float hmax8(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Mask that enables the first n (0..8) lanes, for loads/stores of loop tails.
inline __m256i tail_mask(int n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
}

// The vector operations that epilogue_vec.h's activate_vec takes, for the AVX2 kernels
// that apply the epilogue to their accumulators (conv_panels_avx2.cpp); the AVX-512
// kernels' are simd_math_avx512.h's EpilogueOps.
struct EpilogueOps {
  using V = __m256;
  static V zero() { return _mm256_setzero_ps(); }
  static V one() { return _mm256_set1_ps(1.0f); }
  static V set1(float f) { return _mm256_set1_ps(f); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V min(V a, V b) { return _mm256_min_ps(a, b); }
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static V leaky(V v, V alpha) {
    return _mm256_blendv_ps(v, _mm256_mul_ps(v, alpha), _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_NGT_UQ));
  }
  static V sigmoid(V v) { return sigmoid8(v); }
  static V sigmoid_flush(V v) { return sigmoid8_flush(v); }
};

}  // namespace cnnfast::avx2
