// AVX2+FMA float32 loss kernels: the pointwise regression losses over one block
// and the cross-entropy row loops over classes (max, exp-sum, gradient). Sums
// accumulate in float lanes over at most one block (loss.cpp hands out blocks of
// 2^14 elements) and return as double; tails use masked loads.
#include <immintrin.h>

#include <cmath>
#include <limits>

#include "cpu/loss.h"
#include "cpu/simd_math_avx2.h"

namespace cnnfast::cpu::avx2_impl {
namespace {

using namespace cnnfast::avx2;

inline __m256 abs8(__m256 v) { return _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff))); }

// The loss of d = x - t in 8 lanes.
inline __m256 value8(Pointwise kind, __m256 d, __m256 p) {
  const __m256 half = _mm256_set1_ps(0.5f);
  const __m256 a = abs8(d);
  switch (kind) {
    case Pointwise::L1:
      return a;
    case Pointwise::MSE:
      return _mm256_mul_ps(d, d);
    case Pointwise::Huber: {
      __m256 quad = _mm256_mul_ps(_mm256_mul_ps(half, d), d);
      __m256 lin = _mm256_mul_ps(p, _mm256_fnmadd_ps(half, p, a));
      return _mm256_blendv_ps(lin, quad, _mm256_cmp_ps(a, p, _CMP_LT_OQ));
    }
    case Pointwise::SmoothL1: {
      __m256 quad = _mm256_div_ps(_mm256_mul_ps(_mm256_mul_ps(half, d), d), p);
      __m256 lin = _mm256_fnmadd_ps(half, p, a);
      return _mm256_blendv_ps(lin, quad, _mm256_cmp_ps(a, p, _CMP_LT_OQ));
    }
  }
  return d;
}

// sign(d) with sign(0) = 0 and sign(NaN) = 0 (ordered compares are false), as torch.sign.
inline __m256 sign8(__m256 d) {
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
  __m256 pos = _mm256_and_ps(_mm256_cmp_ps(d, zero, _CMP_GT_OQ), one);
  __m256 neg = _mm256_and_ps(_mm256_cmp_ps(d, zero, _CMP_LT_OQ), one);
  return _mm256_sub_ps(pos, neg);
}

inline __m256 deriv8(Pointwise kind, __m256 d, __m256 p) {
  switch (kind) {
    case Pointwise::L1:
      return sign8(d);
    case Pointwise::MSE:
      return _mm256_add_ps(d, d);
    case Pointwise::Huber: {
      // clamp(d, -p, p); MIN/MAX take the second operand on NaN, so NaN stays.
      __m256 np = _mm256_sub_ps(_mm256_setzero_ps(), p);
      return _mm256_max_ps(np, _mm256_min_ps(p, d));
    }
    case Pointwise::SmoothL1: {
      const __m256 one = _mm256_set1_ps(1.0f), mone = _mm256_set1_ps(-1.0f);
      return _mm256_max_ps(mone, _mm256_min_ps(one, _mm256_div_ps(d, p)));
    }
  }
  return d;
}

}  // namespace

double pointwise_forward(Pointwise kind, const float* x, const float* t, float* elem, int64_t n, float param) {
  if (kind == Pointwise::SmoothL1 && param == 0.0f) kind = Pointwise::L1;
  const __m256 p = _mm256_set1_ps(param);
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256 v0 = value8(kind, _mm256_sub_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(t + i)), p);
    __m256 v1 = value8(kind, _mm256_sub_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(t + i + 8)), p);
    if (elem) {
      _mm256_storeu_ps(elem + i, v0);
      _mm256_storeu_ps(elem + i + 8, v1);
    }
    s0 = _mm256_add_ps(s0, v0);
    s1 = _mm256_add_ps(s1, v1);
  }
  for (; i < n; i += 8) {
    const int w = static_cast<int>(n - i < 8 ? n - i : 8);
    const __m256i m = tail_mask(w);
    __m256 v = value8(kind, _mm256_sub_ps(_mm256_maskload_ps(x + i, m), _mm256_maskload_ps(t + i, m)), p);
    v = _mm256_and_ps(v, _mm256_castsi256_ps(m));
    if (elem) _mm256_maskstore_ps(elem + i, m, v);
    s0 = _mm256_add_ps(s0, v);
  }
  return double(hsum8(_mm256_add_ps(s0, s1)));
}

void pointwise_backward(Pointwise kind, const float* ge, float gs, const float* x, const float* t, float* gx,
                        int64_t n, float param) {
  if (kind == Pointwise::SmoothL1 && param == 0.0f) kind = Pointwise::L1;
  const __m256 p = _mm256_set1_ps(param), g = _mm256_set1_ps(gs);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 d = deriv8(kind, _mm256_sub_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(t + i)), p);
    _mm256_storeu_ps(gx + i, _mm256_mul_ps(ge ? _mm256_loadu_ps(ge + i) : g, d));
  }
  if (i < n) {
    const __m256i m = tail_mask(static_cast<int>(n - i));
    __m256 d = deriv8(kind, _mm256_sub_ps(_mm256_maskload_ps(x + i, m), _mm256_maskload_ps(t + i, m)), p);
    _mm256_maskstore_ps(gx + i, m, _mm256_mul_ps(ge ? _mm256_maskload_ps(ge + i, m) : g, d));
  }
}

float row_logsumexp(const float* x, int64_t n) {
  const float ninf = -std::numeric_limits<float>::infinity();
  __m256 vmax = _mm256_set1_ps(ninf), vnan = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    vmax = _mm256_max_ps(vmax, v);
    vnan = _mm256_or_ps(vnan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  }
  float mx = hmax8(vmax);
  bool nan = _mm256_movemask_ps(vnan) != 0;
  for (; i < n; ++i) {
    nan |= std::isnan(x[i]);
    mx = x[i] > mx ? x[i] : mx;
  }
  if (nan) return std::numeric_limits<float>::quiet_NaN();
  if (std::isinf(mx)) return mx;  // all -inf: -inf; any +inf: +inf
  const __m256 vm = _mm256_set1_ps(mx);
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_add_ps(s0, exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm)));
    s1 = _mm256_add_ps(s1, exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), vm)));
  }
  for (; i < n; i += 8) {
    const __m256i m = tail_mask(static_cast<int>(n - i < 8 ? n - i : 8));
    __m256 e = exp8(_mm256_sub_ps(_mm256_maskload_ps(x + i, m), vm));
    s0 = _mm256_add_ps(s0, _mm256_and_ps(e, _mm256_castsi256_ps(m)));
  }
  return mx + std::log(hsum8(_mm256_add_ps(s0, s1)));
}

void row_sums(const float* x, const float* w, int64_t n, double* plain, double* weighted) {
  __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
  const __m256 one = _mm256_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 8) {
    const int k = static_cast<int>(n - i < 8 ? n - i : 8);
    const __m256i m = tail_mask(k);
    // Masked lanes load 0 for both x and w, so they add nothing.
    __m256 v = _mm256_maskload_ps(x + i, m);
    a = _mm256_add_ps(a, v);
    b = _mm256_fmadd_ps(w ? _mm256_maskload_ps(w + i, m) : one, v, b);
  }
  *plain = double(hsum8(a));
  *weighted = double(hsum8(b));
}

void ce_row_grad(const float* x, const float* w, float* grad, int64_t n, float lse, float scale, float off) {
  const __m256 vl = _mm256_set1_ps(lse), vs = _mm256_set1_ps(scale), vo = _mm256_set1_ps(off),
               one = _mm256_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 p = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vl));
    __m256 wv = w ? _mm256_loadu_ps(w + i) : one;
    _mm256_storeu_ps(grad + i, _mm256_fnmadd_ps(wv, vo, _mm256_mul_ps(vs, p)));
  }
  if (i < n) {
    const __m256i m = tail_mask(static_cast<int>(n - i));
    __m256 p = exp8(_mm256_sub_ps(_mm256_maskload_ps(x + i, m), vl));
    __m256 wv = w ? _mm256_maskload_ps(w + i, m) : one;
    _mm256_maskstore_ps(grad + i, m, _mm256_fnmadd_ps(wv, vo, _mm256_mul_ps(vs, p)));
  }
}

}  // namespace cnnfast::cpu::avx2_impl
