// Vectorised float32 transcendental functions and helpers for the *_avx512.cpp
// kernels. Include only from files compiled with the avx512 level's flags.
//
// Same reductions as simd_math_avx2.h, but 2^n is applied with VSCALEFPS, which
// rounds once and saturates to 0 / inf by itself: exp16 needs a clamp only to keep
// n finite, no blends, and reaches the subnormal range as the C library does
// (exp(-100) is 3.7e-44, not 0). Division is a 14-bit reciprocal refined by
// Newton steps to within 1 ULP of the quotient: VDIVPS on 16 lanes issues once
// per ~10 cycles on one port and would bound tanh and sigmoid.
//
// Accuracy against float64 (tests/test_activation.py, dense grids): exp16 <= 2 ULP,
// sigmoid16 < 2.5e-7 relative, tanh16 <= 3 ULP. NaN in gives NaN out.
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "core/simd.h"

// GCC 12's AVX-512 intrinsics fill unused lanes from _mm512_undefined_ps(), which
// -Wmaybe-uninitialized reports at every inlined max/roundscale: a false alarm in
// the system header, silenced for the files that include this one.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace cnnfast::avx512 {

// Lanes [0, n) enabled, n in 0..16, for masked loads and stores of tails.
inline __mmask16 tail_mask16(int64_t n) {
  return n >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << n) - 1u);
}

// Loads and stores through a lane mask that take the plain instruction when every lane
// is on. On Zen 5 a masked load that misses the cache costs several times a plain one
// (the depthwise row kernel ran at a third of its speed on planes from memory, the
// panel kernel's fused residual added 85% at ResNet-50's 256->1024 batch 1), so loops
// whose body is written once for full vectors and tails go through these.
inline __m512 load_lanes(__mmask16 m, const float* p) {
  return m == 0xffff ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(m, p);
}
inline void store_lanes(float* p, __mmask16 m, __m512 v) {
  if (m == 0xffff) _mm512_storeu_ps(p, v);
  else _mm512_mask_storeu_ps(p, m, v);
}

// Elements before y's first 64-byte boundary (at most 15, or n if fewer), so
// the streaming loop can use aligned non-temporal stores.
inline int64_t head_to_aligned(const float* y, int64_t n) {
  const int64_t past = static_cast<int64_t>((reinterpret_cast<std::uintptr_t>(y) & 63) / sizeof(float));
  const int64_t head = past ? 16 - past : 0;
  return head < n ? head : n;
}

// Float arrays that are not 4-byte aligned never reach a 64-byte boundary.
inline bool can_stream(const float* y) { return (reinterpret_cast<std::uintptr_t>(y) & (sizeof(float) - 1)) == 0; }

// y[i] = f(a[i], b[i]...) for one or two inputs (the elementwise kernels); stream:
// non-temporal stores for the aligned body. Two 16-lane steps per iteration keep two exp chains in flight.
template <class F, class... In>
inline void stream_map(float* y, int64_t n, F f, bool stream, const In*... in) {
  int64_t i = 0;
  if (stream && can_stream(y)) {
    if (const int64_t head = head_to_aligned(y, n)) {
      const __mmask16 m = tail_mask16(head);
      store_lanes(y, m, f(load_lanes(m, in)...));
      i = head;
    }
    for (; i + 16 <= n; i += 16) _mm512_stream_ps(y + i, f(_mm512_loadu_ps(in + i)...));
    // Orders the weakly-ordered streaming stores before whatever follows (the
    // thread pool's hand-back of this chunk).
    _mm_sfence();
  }
  for (; i + 32 <= n; i += 32) {
    __m512 v0 = f(_mm512_loadu_ps(in + i)...);
    __m512 v1 = f(_mm512_loadu_ps(in + i + 16)...);
    _mm512_storeu_ps(y + i, v0);
    _mm512_storeu_ps(y + i + 16, v1);
  }
  for (; i < n; i += 16) {
    const __mmask16 m = tail_mask16(n - i);
    store_lanes(y + i, m, f(load_lanes(m, in + i)...));
  }
}

// e^x for x already within [-104, 89] (or NaN): n = round(x*log2 e), e^r by the
// Cephes degree-6 polynomial on |r| <= ln2/2, then scalef. Below -104 the exact
// result rounds to 0 and above 89 to inf, which scalef produces from these ends.
// e^r * 2^n for a reduced argument |r| <= ~ln2/2: the polynomial half of exp16_core.
inline __m512 exp16_reduced(__m512 r, __m512 n) {
  __m512 r2 = _mm512_mul_ps(r, r);
  // Estrin's scheme: three independent pairs, then two levels.
  __m512 a = _mm512_fmadd_ps(_mm512_set1_ps(1.9875691500E-4f), r, _mm512_set1_ps(1.3981999507E-3f));
  __m512 b = _mm512_fmadd_ps(_mm512_set1_ps(8.3334519073E-3f), r, _mm512_set1_ps(4.1665795894E-2f));
  __m512 c = _mm512_fmadd_ps(_mm512_set1_ps(1.6666665459E-1f), r, _mm512_set1_ps(5.0000001201E-1f));
  __m512 p = _mm512_fmadd_ps(_mm512_fmadd_ps(a, r2, b), r2, c);
  p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

// n = round(x log2 e) and x - n ln2, ln2 split in two so n*C1 is exact and the
// reduction loses no bits.
inline __m512 exp16_reduce(__m512 x, __m512* n) {
  *n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(*n, _mm512_set1_ps(0.693359375f), x);
  return _mm512_fnmadd_ps(*n, _mm512_set1_ps(-2.12194440e-4f), r);
}

inline __m512 exp16_core(__m512 x) {
  __m512 n;
  __m512 r = exp16_reduce(x, &n);
  return exp16_reduced(r, n);
}

// e^(x + a*b) for x as in exp16_core and a small a*b (|a*b| << 1): the low part joins
// the reduced argument, where it loses nothing, so a value known as a hi + lo pair keeps
// its low bits for the price of one FMA.
inline __m512 exp16_core_lo(__m512 x, __m512 a, __m512 b) {
  __m512 n;
  __m512 r = exp16_reduce(x, &n);
  return exp16_reduced(_mm512_fmadd_ps(a, b, r), n);
}

inline __m512 exp16(__m512 x) {
  // The operand order keeps NaN: MIN/MAX return the second operand on NaN.
  __m512 xc = _mm512_max_ps(_mm512_set1_ps(-104.0f), _mm512_min_ps(_mm512_set1_ps(89.0f), x));
  return exp16_core(xc);
}

// e^x - 1 without the cancellation of exp16(x) - 1 near zero.
inline __m512 expm1_16(__m512 x) {
  // Taylor series to x^9 / 9! : truncation error < 2e-9 relative for |x| < 0.5.
  __m512 p = _mm512_set1_ps(1.0f / 362880.0f);
  p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(1.0f / 40320.0f));
  p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(1.0f / 5040.0f));
  p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(1.0f / 720.0f));
  p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(0.5f));
  __m512 small = _mm512_fmadd_ps(_mm512_mul_ps(p, x), x, x);
  __m512 big = _mm512_sub_ps(exp16(x), _mm512_set1_ps(1.0f));
  __mmask16 is_small = _mm512_cmp_ps_mask(_mm512_abs_ps(x), _mm512_set1_ps(0.5f), _CMP_LT_OQ);
  return _mm512_mask_blend_ps(is_small, big, small);
}

// n / d for d in [1, 2] (no zero, subnormal or infinite divisor): reciprocal
// estimate (2^-14), one Newton step (~2^-28), quotient, one residual correction.
inline __m512 div_1to2(__m512 n, __m512 d) {
  const __m512 one = _mm512_set1_ps(1.0f);
  __m512 r = _mm512_rcp14_ps(d);
  r = _mm512_fmadd_ps(r, _mm512_fnmadd_ps(d, r, one), r);
  __m512 q = _mm512_mul_ps(n, r);
  return _mm512_fmadd_ps(r, _mm512_fnmadd_ps(d, q, n), q);
}

// 1 / (1 + e^-x) from e = e^-|x| <= 1: 1 / (1 + e) for x >= 0, e / (1 + e) for
// x < 0, so one exponential that can neither overflow nor lose the small tail,
// and a divisor in [1, 2]. NaN stays NaN (the max keeps its second operand).
inline __m512 sigmoid16(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f);
  __m512 z = _mm512_max_ps(_mm512_set1_ps(-104.0f), _mm512_or_ps(x, _mm512_set1_ps(-0.0f)));
  __m512 e = exp16_core(z);
  __mmask16 neg = _mm512_movepi32_mask(_mm512_castps_si512(x));
  return div_1to2(_mm512_mask_blend_ps(neg, one, e), _mm512_add_ps(one, e));
}

// sigmoid16 with exact zeros below x = -104 (where it stays at the last
// subnormals), so x * sigmoid(x) is NaN at x = -inf and -0 beyond, as PyTorch.
inline __m512 sigmoid16_flush(__m512 x) {
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-104.0f), _CMP_NLT_UQ), sigmoid16(x));
}

// tanh: odd polynomial for |x| < 0.625 (where 1 - 2/(e^2x + 1) would cancel);
// beyond, tanh|x| = (1 - e) / (1 + e) with e = e^-2|x| in (0, 0.29], sign restored.
// From |x| = 52 on e is 0 and the result exactly +-1; +-inf gives +-1, NaN NaN.
inline __m512 tanh16(__m512 x) {
  __m512 ax = _mm512_abs_ps(x);
  __m512 z = _mm512_mul_ps(x, x);
  __m512 p = _mm512_set1_ps(-5.70498872745E-3f);
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(2.06390887954E-2f));
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(-5.37397155531E-2f));
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(1.33314422036E-1f));
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(-3.33332819422E-1f));
  __m512 small = _mm512_fmadd_ps(_mm512_mul_ps(p, z), x, x);
  const __m512 one = _mm512_set1_ps(1.0f);
  __m512 e = exp16_core(_mm512_max_ps(_mm512_set1_ps(-104.0f), _mm512_mul_ps(ax, _mm512_set1_ps(-2.0f))));
  __m512 big = div_1to2(_mm512_sub_ps(one, e), _mm512_add_ps(one, e));
  // NaN compares false and takes the exp branch, which keeps NaN.
  __mmask16 is_small = _mm512_cmp_ps_mask(ax, _mm512_set1_ps(0.625f), _CMP_LT_OQ);
  __m512 y = _mm512_mask_blend_ps(is_small, big, small);
  // Copy x's sign onto y (ternary logic: sign bit from x, the rest from y): big
  // is |tanh|, and x + x^3 p(x^2) is +0 at x = -0.
  return _mm512_castsi512_ps(_mm512_ternarylogic_epi32(_mm512_castps_si512(y), _mm512_castps_si512(x),
                                                       _mm512_set1_epi32(0x7fffffff), 0xe4));
}

// acc[r][v] += w[r] * x[v]: the broadcast-weight rank-1 update of the panel and stem
// kernels' register tiles (R rows of weights by V vectors of positions). Always inlined and
// fully unrolled, so that acc stays in registers.
template <int R, int V>
[[gnu::always_inline]] inline void fma_rows(__m512 (&acc)[R][V], const float* w, const __m512 (&x)[V]) {
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    const __m512 b = _mm512_set1_ps(w[r]);
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(b, x[v], acc[r][v]);
  }
}

// The vector operations that epilogue_vec.h's activate_vec takes (the AVX-512 kernels
// that apply the epilogue to their accumulators: conv_panels_avx512.cpp,
// conv_kvec_avx512.cpp, conv_stem_avx512.cpp); simd_math_avx2.h has the AVX2 set.
struct EpilogueOps {
  using V = __m512;
  using M = __mmask16;
  static V load(M m, const float* p) { return load_lanes(m, p); }
  static void store(float* p, M m, V v) { store_lanes(p, m, v); }
  static V zero() { return _mm512_setzero_ps(); }
  static V one() { return _mm512_set1_ps(1.0f); }
  static V set1(float f) { return _mm512_set1_ps(f); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V min(V a, V b) { return _mm512_min_ps(a, b); }
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static V leaky(V v, V alpha) {
    return _mm512_mask_mul_ps(v, _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NGT_UQ), v, alpha);
  }
  static V sigmoid(V v) { return sigmoid16(v); }
  static V sigmoid_flush(V v) { return sigmoid16_flush(v); }
};

}  // namespace cnnfast::avx512
