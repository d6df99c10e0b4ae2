// AVX-512 float32 loss kernels: loss_avx2.cpp's loops at 16 lanes, with the
// selects as mask registers and every tail one masked load/store. Sums accumulate
// in float lanes over at most one block (loss.cpp hands out blocks of 2^14
// elements) and return as double.
#include <immintrin.h>

#include <cmath>
#include <limits>

#include "cpu/loss.h"
#include "cpu/simd_math_avx512.h"

namespace cnnfast::cpu::avx512_impl {
namespace {

using namespace cnnfast::avx512;

// The loss of d = x - t in 16 lanes.
inline __m512 value16(Pointwise kind, __m512 d, __m512 p) {
  const __m512 half = _mm512_set1_ps(0.5f);
  const __m512 a = _mm512_abs_ps(d);
  const __mmask16 inside = _mm512_cmp_ps_mask(a, p, _CMP_LT_OQ);
  switch (kind) {
    case Pointwise::L1:
      return a;
    case Pointwise::MSE:
      return _mm512_mul_ps(d, d);
    case Pointwise::Huber:
      return _mm512_mask_blend_ps(inside, _mm512_mul_ps(p, _mm512_fnmadd_ps(half, p, a)),
                                  _mm512_mul_ps(_mm512_mul_ps(half, d), d));
    case Pointwise::SmoothL1:
      return _mm512_mask_blend_ps(inside, _mm512_fnmadd_ps(half, p, a),
                                  _mm512_div_ps(_mm512_mul_ps(_mm512_mul_ps(half, d), d), p));
  }
  return d;
}

inline __m512 deriv16(Pointwise kind, __m512 d, __m512 p) {
  const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
  switch (kind) {
    case Pointwise::L1: {
      // sign(d) with sign(0) = sign(NaN) = 0 (ordered compares are false), as torch.sign.
      __m512 s = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(d, zero, _CMP_GT_OQ), one);
      return _mm512_mask_mov_ps(s, _mm512_cmp_ps_mask(d, zero, _CMP_LT_OQ), _mm512_set1_ps(-1.0f));
    }
    case Pointwise::MSE:
      return _mm512_add_ps(d, d);
    case Pointwise::Huber:
      // clamp(d, -p, p); MIN/MAX take the second operand on NaN, so NaN stays.
      return _mm512_max_ps(_mm512_sub_ps(zero, p), _mm512_min_ps(p, d));
    case Pointwise::SmoothL1:
      return _mm512_max_ps(_mm512_set1_ps(-1.0f), _mm512_min_ps(one, _mm512_div_ps(d, p)));
  }
  return d;
}

}  // namespace

double pointwise_forward(Pointwise kind, const float* x, const float* t, float* elem, int64_t n, float param) {
  if (kind == Pointwise::SmoothL1 && param == 0.0f) kind = Pointwise::L1;
  const __m512 p = _mm512_set1_ps(param);
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m512 v0 = value16(kind, _mm512_sub_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(t + i)), p);
    __m512 v1 = value16(kind, _mm512_sub_ps(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(t + i + 16)), p);
    if (elem) {
      _mm512_storeu_ps(elem + i, v0);
      _mm512_storeu_ps(elem + i + 16, v1);
    }
    s0 = _mm512_add_ps(s0, v0);
    s1 = _mm512_add_ps(s1, v1);
  }
  for (; i < n; i += 16) {
    const __mmask16 m = tail_mask16(n - i);
    __m512 v = value16(kind, _mm512_sub_ps(load_lanes(m, x + i), load_lanes(m, t + i)), p);
    v = _mm512_maskz_mov_ps(m, v);
    if (elem) store_lanes(elem + i, m, v);
    s0 = _mm512_add_ps(s0, v);
  }
  return double(_mm512_reduce_add_ps(_mm512_add_ps(s0, s1)));
}

void pointwise_backward(Pointwise kind, const float* ge, float gs, const float* x, const float* t, float* gx,
                        int64_t n, float param) {
  if (kind == Pointwise::SmoothL1 && param == 0.0f) kind = Pointwise::L1;
  const __m512 p = _mm512_set1_ps(param), g = _mm512_set1_ps(gs);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask16(n - i);
    __m512 d = deriv16(kind, _mm512_sub_ps(load_lanes(m, x + i), load_lanes(m, t + i)), p);
    store_lanes(gx + i, m, _mm512_mul_ps(ge ? load_lanes(m, ge + i) : g, d));
  }
}

float row_logsumexp(const float* x, int64_t n) {
  const __m512 ninf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __m512 vmax = ninf;
  __mmask16 nan = 0;
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask16(n - i);
    __m512 v = _mm512_mask_loadu_ps(ninf, m, x + i);
    vmax = _mm512_max_ps(vmax, v);
    nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  }
  if (nan) return std::numeric_limits<float>::quiet_NaN();
  const float mx = _mm512_reduce_max_ps(vmax);
  if (std::isinf(mx)) return mx;  // all -inf: -inf; any +inf: +inf
  const __m512 vm = _mm512_set1_ps(mx);
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm512_add_ps(s0, exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), vm)));
    s1 = _mm512_add_ps(s1, exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i + 16), vm)));
  }
  for (; i < n; i += 16) {
    const __mmask16 m = tail_mask16(n - i);
    s0 = _mm512_add_ps(s0, _mm512_maskz_mov_ps(m, exp16(_mm512_sub_ps(load_lanes(m, x + i), vm))));
  }
  return mx + std::log(_mm512_reduce_add_ps(_mm512_add_ps(s0, s1)));
}

void row_sums(const float* x, const float* w, int64_t n, double* plain, double* weighted) {
  __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps();
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask16(n - i);
    // Masked lanes load 0 for x, so they add nothing to either sum.
    __m512 v = load_lanes(m, x + i);
    a = _mm512_add_ps(a, v);
    b = _mm512_fmadd_ps(w ? load_lanes(m, w + i) : one, v, b);
  }
  *plain = double(_mm512_reduce_add_ps(a));
  *weighted = double(_mm512_reduce_add_ps(b));
}

void ce_row_grad(const float* x, const float* w, float* grad, int64_t n, float lse, float scale, float off) {
  const __m512 vl = _mm512_set1_ps(lse), vs = _mm512_set1_ps(scale), vo = _mm512_set1_ps(off),
               one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask16(n - i);
    __m512 p = exp16(_mm512_sub_ps(load_lanes(m, x + i), vl));
    __m512 wv = w ? load_lanes(m, w + i) : one;
    store_lanes(grad + i, m, _mm512_fnmadd_ps(wv, vo, _mm512_mul_ps(vs, p)));
  }
}

}  // namespace cnnfast::cpu::avx512_impl
