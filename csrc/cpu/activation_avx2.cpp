// AVX2+FMA float32 activation kernels. Loop tails use masked loads/stores so
// every element goes through the same vector arithmetic as the body.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "cpu/activation.h"
#include "cpu/simd_math_avx2.h"

namespace cnnfast::cpu::avx2_impl {
namespace {

using namespace cnnfast::avx2;

// Elements before y's first 32-byte boundary (at most 7, or n if fewer), so
// the streaming loop can use aligned non-temporal stores.
inline int64_t head_to_aligned(const float* y, int64_t n) {
  const int64_t past = static_cast<int64_t>((reinterpret_cast<std::uintptr_t>(y) & 31) / sizeof(float));
  const int64_t head = past ? 8 - past : 0;
  return head < n ? head : n;
}

// NumPy can hand over float arrays that are not even 4-byte aligned (views
// into byte buffers); no float of those ever reaches a 32-byte boundary.
inline bool can_stream(const float* y) { return (reinterpret_cast<std::uintptr_t>(y) & (sizeof(float) - 1)) == 0; }

// y[i] = f(x[i]); stream: non-temporal stores for the aligned body.
template <class F>
inline void map1(const float* x, float* y, int64_t n, F f, bool stream) {
  int64_t i = 0;
  if (stream && can_stream(y)) {
    if (const int64_t head = head_to_aligned(y, n)) {
      const __m256i m = tail_mask(static_cast<int>(head));
      _mm256_maskstore_ps(y, m, f(_mm256_maskload_ps(x, m)));
      i = head;
    }
    for (; i + 8 <= n; i += 8) _mm256_stream_ps(y + i, f(_mm256_loadu_ps(x + i)));
    // Orders the weakly-ordered streaming stores before whatever follows (the
    // thread pool's hand-back of this chunk).
    _mm_sfence();
  }
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, f(_mm256_loadu_ps(x + i)));
  if (i < n) {
    __m256i m = tail_mask(static_cast<int>(n - i));
    _mm256_maskstore_ps(y + i, m, f(_mm256_maskload_ps(x + i, m)));
  }
}

template <class F>
inline void map2(const float* a, const float* b, float* y, int64_t n, F f, bool stream) {
  int64_t i = 0;
  if (stream && can_stream(y)) {
    if (const int64_t head = head_to_aligned(y, n)) {
      const __m256i m = tail_mask(static_cast<int>(head));
      _mm256_maskstore_ps(y, m, f(_mm256_maskload_ps(a, m), _mm256_maskload_ps(b, m)));
      i = head;
    }
    for (; i + 8 <= n; i += 8) _mm256_stream_ps(y + i, f(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
    _mm_sfence();
  }
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, f(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
  if (i < n) {
    __m256i m = tail_mask(static_cast<int>(n - i));
    _mm256_maskstore_ps(y + i, m, f(_mm256_maskload_ps(a + i, m), _mm256_maskload_ps(b + i, m)));
  }
}

}  // namespace

void activation_forward(Activation act, const float* x, float* y, int64_t n, float param, bool stream) {
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f), p = _mm256_set1_ps(param);
  switch (act) {
    case Activation::ReLU:
      // max(0, x) returns x when x is NaN, so NaN propagates.
      return map1(x, y, n, [&](__m256 v) { return _mm256_max_ps(zero, v); }, stream);
    case Activation::LeakyReLU:
      return map1(x, y, n, [&](__m256 v) {
        return _mm256_blendv_ps(v, _mm256_mul_ps(v, p), _mm256_cmp_ps(v, zero, _CMP_LT_OQ));
      }, stream);
    case Activation::ELU:
      return map1(x, y, n, [&](__m256 v) {
        return _mm256_blendv_ps(_mm256_mul_ps(p, expm1_8(v)), v, _mm256_cmp_ps(v, zero, _CMP_GT_OQ));
      }, stream);
    case Activation::Sigmoid:
      return map1(x, y, n, [&](__m256 v) { return sigmoid8(v); }, stream);
    case Activation::Tanh:
      return map1(x, y, n, [&](__m256 v) { return tanh8(v); }, stream);
    case Activation::SiLU:
      return map1(x, y, n, [&](__m256 v) { return _mm256_mul_ps(v, sigmoid8_flush(v)); }, stream);
  }
  (void)one;
}

void activation_backward(Activation act, const float* gy, const float* s, float* gx, int64_t n, float param,
                         bool stream) {
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f), p = _mm256_set1_ps(param);
  switch (act) {
    case Activation::ReLU:
      return map2(gy, s, gx, n, [&](__m256 g, __m256 v) {
        return _mm256_and_ps(g, _mm256_cmp_ps(v, zero, _CMP_GT_OQ));
      }, stream);
    case Activation::LeakyReLU:
      return map2(gy, s, gx, n, [&](__m256 g, __m256 v) {
        return _mm256_blendv_ps(_mm256_mul_ps(g, p), g, _mm256_cmp_ps(v, zero, _CMP_GT_OQ));
      }, stream);
    case Activation::ELU:
      return map2(gy, s, gx, n, [&](__m256 g, __m256 v) {
        return _mm256_blendv_ps(_mm256_mul_ps(g, _mm256_mul_ps(p, exp8(v))), g, _mm256_cmp_ps(v, zero, _CMP_GT_OQ));
      }, stream);
    case Activation::Sigmoid:
      return map2(gy, s, gx, n, [&](__m256 g, __m256 v) {
        return _mm256_mul_ps(_mm256_mul_ps(g, v), _mm256_sub_ps(one, v));
      }, stream);
    case Activation::Tanh:
      return map2(gy, s, gx, n, [&](__m256 g, __m256 v) { return _mm256_mul_ps(g, _mm256_fnmadd_ps(v, v, one)); }, stream);
    case Activation::SiLU:
      return map2(gy, s, gx, n, [&](__m256 g, __m256 v) {
        __m256 sg = sigmoid8_flush(v);
        __m256 d = _mm256_mul_ps(sg, _mm256_fmadd_ps(v, _mm256_sub_ps(one, sg), one));
        return _mm256_mul_ps(g, d);
      }, stream);
  }
}

// ---- softmax over contiguous rows (the reduced axis is the last one) ----------

void softmax_rows_forward(const float* x, float* y, int64_t rows, int64_t dim, bool log) {
  const float ninf = -std::numeric_limits<float>::infinity();
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    __m256 vmax = _mm256_set1_ps(ninf);
    __m256 vnan = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= dim; k += 8) {
      __m256 v = _mm256_loadu_ps(xr + k);
      vmax = _mm256_max_ps(vmax, v);
      vnan = _mm256_or_ps(vnan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    }
    float mx = hmax8(vmax);
    bool has_nan = _mm256_movemask_ps(vnan) != 0;
    for (; k < dim; ++k) {
      has_nan |= std::isnan(xr[k]);
      mx = xr[k] > mx ? xr[k] : mx;
    }
    if (std::isinf(mx) && mx < 0) mx = 0.0f;
    if (has_nan) mx = std::numeric_limits<float>::quiet_NaN();
    const __m256 vm = _mm256_set1_ps(mx);
    __m256 vsum = _mm256_setzero_ps();
    k = 0;
    for (; k + 8 <= dim; k += 8) {
      __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(xr + k), vm));
      if (!log) _mm256_storeu_ps(yr + k, e);
      vsum = _mm256_add_ps(vsum, e);
    }
    if (k < dim) {
      __m256i m = tail_mask(static_cast<int>(dim - k));
      __m256 e = exp8(_mm256_sub_ps(_mm256_maskload_ps(xr + k, m), vm));
      e = _mm256_and_ps(e, _mm256_castsi256_ps(m));
      if (!log) _mm256_maskstore_ps(yr + k, m, e);
      vsum = _mm256_add_ps(vsum, e);
    }
    const float sum = hsum8(vsum);
    if (log) {
      const __m256 lse = _mm256_set1_ps(mx + std::log(sum));
      map1(xr, yr, dim, [&](__m256 v) { return _mm256_sub_ps(v, lse); }, false);
    } else {
      const __m256 inv = _mm256_set1_ps(1.0f / sum);
      map1(yr, yr, dim, [&](__m256 v) { return _mm256_mul_ps(v, inv); }, false);
    }
  }
}

void softmax_rows_backward(const float* gy, const float* y, float* gx, int64_t rows, int64_t dim, bool log) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = gy + r * dim;
    const float* yr = y + r * dim;
    float* out = gx + r * dim;
    __m256 vacc = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= dim; k += 8) {
      __m256 gv = _mm256_loadu_ps(g + k);
      vacc = log ? _mm256_add_ps(vacc, gv) : _mm256_fmadd_ps(gv, _mm256_loadu_ps(yr + k), vacc);
    }
    float acc = hsum8(vacc);
    for (; k < dim; ++k) acc += log ? g[k] : g[k] * yr[k];
    const __m256 va = _mm256_set1_ps(acc);
    if (log) {
      map2(g, yr, out, dim, [&](__m256 gv, __m256 yv) { return _mm256_fnmadd_ps(exp8(yv), va, gv); }, false);
    } else {
      map2(g, yr, out, dim, [&](__m256 gv, __m256 yv) { return _mm256_mul_ps(yv, _mm256_sub_ps(gv, va)); }, false);
    }
  }
}

// ---- softmax over a strided axis: vectorise across the inner positions --------

void softmax_inner_forward(const float* x, float* y, int64_t dim, int64_t inner, bool log) {
  const __m256 ninf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t i = 0; i < inner; i += 8) {
    const int lanes = static_cast<int>(inner - i < 8 ? inner - i : 8);
    const __m256i m = tail_mask(lanes);
    auto load = [&](const float* p) { return lanes == 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, m); };
    auto store = [&](float* p, __m256 v) {
      if (lanes == 8) _mm256_storeu_ps(p, v); else _mm256_maskstore_ps(p, m, v);
    };
    __m256 vmax = ninf, vnan = _mm256_setzero_ps();
    for (int64_t k = 0; k < dim; ++k) {
      __m256 v = load(x + k * inner + i);
      vmax = _mm256_max_ps(vmax, v);
      vnan = _mm256_or_ps(vnan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    }
    // All -inf lines shift by 0 (result NaN, as PyTorch); NaN lines shift by NaN.
    vmax = _mm256_blendv_ps(vmax, _mm256_setzero_ps(), _mm256_cmp_ps(vmax, ninf, _CMP_EQ_OQ));
    vmax = _mm256_blendv_ps(vmax, _mm256_set1_ps(std::numeric_limits<float>::quiet_NaN()), vnan);
    __m256 vsum = _mm256_setzero_ps();
    for (int64_t k = 0; k < dim; ++k) {
      __m256 e = exp8(_mm256_sub_ps(load(x + k * inner + i), vmax));
      if (!log) store(y + k * inner + i, e);
      vsum = _mm256_add_ps(vsum, e);
    }
    if (log) {
      alignas(32) float s[8], mx[8];
      _mm256_store_ps(s, vsum);
      _mm256_store_ps(mx, vmax);
      for (int l = 0; l < 8; ++l) s[l] = mx[l] + std::log(s[l]);
      const __m256 lse = _mm256_load_ps(s);
      for (int64_t k = 0; k < dim; ++k) store(y + k * inner + i, _mm256_sub_ps(load(x + k * inner + i), lse));
    } else {
      const __m256 inv = _mm256_div_ps(_mm256_set1_ps(1.0f), vsum);
      for (int64_t k = 0; k < dim; ++k) store(y + k * inner + i, _mm256_mul_ps(load(y + k * inner + i), inv));
    }
  }
}

void softmax_inner_backward(const float* gy, const float* y, float* gx, int64_t dim, int64_t inner, bool log) {
  for (int64_t i = 0; i < inner; i += 8) {
    const int lanes = static_cast<int>(inner - i < 8 ? inner - i : 8);
    const __m256i m = tail_mask(lanes);
    auto load = [&](const float* p) { return lanes == 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, m); };
    auto store = [&](float* p, __m256 v) {
      if (lanes == 8) _mm256_storeu_ps(p, v); else _mm256_maskstore_ps(p, m, v);
    };
    __m256 acc = _mm256_setzero_ps();
    for (int64_t k = 0; k < dim; ++k) {
      __m256 g = load(gy + k * inner + i);
      acc = log ? _mm256_add_ps(acc, g) : _mm256_fmadd_ps(g, load(y + k * inner + i), acc);
    }
    for (int64_t k = 0; k < dim; ++k) {
      __m256 g = load(gy + k * inner + i), yv = load(y + k * inner + i);
      store(gx + k * inner + i, log ? _mm256_fnmadd_ps(exp8(yv), acc, g) : _mm256_mul_ps(yv, _mm256_sub_ps(g, acc)));
    }
  }
}

}  // namespace cnnfast::cpu::avx2_impl
