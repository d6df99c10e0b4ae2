// AVX-512 float32 activation kernels: the AVX2 kernels at 16 lanes, with loop
// tails as masked loads/stores so every element goes through the same vector
// arithmetic as the body.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "cpu/activation.h"
#include "cpu/simd_math_avx512.h"

namespace cnnfast::cpu::avx512_impl {
namespace {

using namespace cnnfast::avx512;

inline __mmask16 gt0(__m512 v) { return _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GT_OQ); }

}  // namespace

bool activation_forward(Activation act, const float* x, float* y, int64_t n, float param, bool stream) {
  const __m512 zero = _mm512_setzero_ps(), p = _mm512_set1_ps(param);
  switch (act) {
    case Activation::ReLU:
      // max(0, x) returns x when x is NaN, so NaN propagates.
      stream_map(y, n, [&](__m512 v) { return _mm512_max_ps(zero, v); }, stream, x);
      break;
    case Activation::LeakyReLU:
      stream_map(y, n, [&](__m512 v) {
        return _mm512_mask_mul_ps(v, _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), v, p);
      }, stream, x);
      break;
    case Activation::ELU:
      stream_map(y, n, [&](__m512 v) { return _mm512_mask_blend_ps(gt0(v), _mm512_mul_ps(p, expm1_16(v)), v); },
                 stream, x);
      break;
    case Activation::Sigmoid:
      stream_map(y, n, [&](__m512 v) { return sigmoid16(v); }, stream, x);
      break;
    case Activation::Tanh:
      stream_map(y, n, [&](__m512 v) { return tanh16(v); }, stream, x);
      break;
    case Activation::SiLU:
      stream_map(y, n, [&](__m512 v) { return _mm512_mul_ps(v, sigmoid16_flush(v)); }, stream, x);
      break;
    default:
      return false;  // an activation with no AVX-512 kernel: the caller takes the AVX2 one
  }
  return true;
}

bool activation_backward(Activation act, const float* gy, const float* s, float* gx, int64_t n, float param,
                         bool stream) {
  const __m512 one = _mm512_set1_ps(1.0f), p = _mm512_set1_ps(param);
  switch (act) {
    case Activation::ReLU:
      stream_map(gx, n, [&](__m512 g, __m512 v) { return _mm512_maskz_mov_ps(gt0(v), g); }, stream, gy, s);
      break;
    case Activation::LeakyReLU:
      stream_map(gx, n, [&](__m512 g, __m512 v) { return _mm512_mask_blend_ps(gt0(v), _mm512_mul_ps(g, p), g); },
                 stream, gy, s);
      break;
    case Activation::ELU:
      stream_map(gx, n, [&](__m512 g, __m512 v) {
        return _mm512_mask_blend_ps(gt0(v), _mm512_mul_ps(g, _mm512_mul_ps(p, exp16(v))), g);
      }, stream, gy, s);
      break;
    case Activation::Sigmoid:
      stream_map(gx, n, [&](__m512 g, __m512 v) { return _mm512_mul_ps(_mm512_mul_ps(g, v), _mm512_sub_ps(one, v)); },
                 stream, gy, s);
      break;
    case Activation::Tanh:
      stream_map(gx, n, [&](__m512 g, __m512 v) { return _mm512_mul_ps(g, _mm512_fnmadd_ps(v, v, one)); }, stream,
                 gy, s);
      break;
    case Activation::SiLU:
      stream_map(gx, n, [&](__m512 g, __m512 v) {
        __m512 sg = sigmoid16_flush(v);
        __m512 d = _mm512_mul_ps(sg, _mm512_fmadd_ps(v, _mm512_sub_ps(one, sg), one));
        return _mm512_mul_ps(g, d);
      }, stream, gy, s);
      break;
    default:
      return false;
  }
  return true;
}

// ---- softmax over contiguous rows (the reduced axis is the last one) ----------

void softmax_rows_forward(const float* x, float* y, int64_t rows, int64_t dim, bool log) {
  const __m512 ninf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    __m512 vmax = ninf;
    __mmask16 nan = 0;
    for (int64_t k = 0; k < dim; k += 16) {
      const __mmask16 m = tail_mask16(dim - k);
      __m512 v = _mm512_mask_loadu_ps(ninf, m, xr + k);
      vmax = _mm512_max_ps(vmax, v);
      nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    }
    float mx = _mm512_reduce_max_ps(vmax);
    // A line of all -inf has no finite maximum; shifting by 0 yields NaN (0/0) as PyTorch.
    if (std::isinf(mx) && mx < 0) mx = 0.0f;
    if (nan) mx = std::numeric_limits<float>::quiet_NaN();
    const __m512 vm = _mm512_set1_ps(mx);
    __m512 vsum = _mm512_setzero_ps();
    for (int64_t k = 0; k < dim; k += 16) {
      const __mmask16 m = tail_mask16(dim - k);
      __m512 e = _mm512_maskz_mov_ps(m, exp16(_mm512_sub_ps(load_lanes(m, xr + k), vm)));
      if (!log) store_lanes(yr + k, m, e);
      vsum = _mm512_add_ps(vsum, e);
    }
    const float sum = _mm512_reduce_add_ps(vsum);
    if (log) {
      const __m512 lse = _mm512_set1_ps(mx + std::log(sum));
      stream_map(yr, dim, [&](__m512 v) { return _mm512_sub_ps(v, lse); }, false, xr);
    } else {
      const __m512 inv = _mm512_set1_ps(1.0f / sum);
      stream_map(yr, dim, [&](__m512 v) { return _mm512_mul_ps(v, inv); }, false, static_cast<const float*>(yr));
    }
  }
}

void softmax_rows_backward(const float* gy, const float* y, float* gx, int64_t rows, int64_t dim, bool log) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = gy + r * dim;
    const float* yr = y + r * dim;
    float* out = gx + r * dim;
    __m512 vacc = _mm512_setzero_ps();
    for (int64_t k = 0; k < dim; k += 16) {
      const __mmask16 m = tail_mask16(dim - k);
      __m512 gv = load_lanes(m, g + k);
      vacc = log ? _mm512_add_ps(vacc, gv) : _mm512_fmadd_ps(gv, load_lanes(m, yr + k), vacc);
    }
    const __m512 va = _mm512_set1_ps(_mm512_reduce_add_ps(vacc));
    if (log) {
      stream_map(out, dim, [&](__m512 gv, __m512 yv) { return _mm512_fnmadd_ps(exp16(yv), va, gv); }, false, g, yr);
    } else {
      stream_map(out, dim, [&](__m512 gv, __m512 yv) { return _mm512_mul_ps(yv, _mm512_sub_ps(gv, va)); }, false, g, yr);
    }
  }
}

// ---- softmax over a strided axis: vectorise across the inner positions --------

void softmax_inner_forward(const float* x, float* y, int64_t dim, int64_t inner, bool log) {
  const __m512 ninf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t i = 0; i < inner; i += 16) {
    const __mmask16 m = tail_mask16(inner - i);
    __m512 vmax = ninf;
    __mmask16 nan = 0;
    for (int64_t k = 0; k < dim; ++k) {
      __m512 v = load_lanes(m, x + k * inner + i);
      vmax = _mm512_max_ps(vmax, v);
      nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    }
    // All -inf lines shift by 0 (result NaN, as PyTorch); NaN lines shift by NaN.
    vmax = _mm512_mask_mov_ps(vmax, _mm512_cmp_ps_mask(vmax, ninf, _CMP_EQ_OQ), _mm512_setzero_ps());
    vmax = _mm512_mask_mov_ps(vmax, nan, _mm512_set1_ps(std::numeric_limits<float>::quiet_NaN()));
    __m512 vsum = _mm512_setzero_ps();
    for (int64_t k = 0; k < dim; ++k) {
      __m512 e = exp16(_mm512_sub_ps(load_lanes(m, x + k * inner + i), vmax));
      if (!log) store_lanes(y + k * inner + i, m, e);
      vsum = _mm512_add_ps(vsum, e);
    }
    if (log) {
      alignas(64) float s[16], mx[16];
      _mm512_store_ps(s, vsum);
      _mm512_store_ps(mx, vmax);
      for (int l = 0; l < 16; ++l) s[l] = mx[l] + std::log(s[l]);
      const __m512 lse = _mm512_load_ps(s);
      for (int64_t k = 0; k < dim; ++k)
        store_lanes(y + k * inner + i, m, _mm512_sub_ps(load_lanes(m, x + k * inner + i), lse));
    } else {
      // Masked-off lanes summed e^0 = 1, so the division never sees 0 there.
      const __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.0f), vsum);
      for (int64_t k = 0; k < dim; ++k)
        store_lanes(y + k * inner + i, m, _mm512_mul_ps(load_lanes(m, y + k * inner + i), inv));
    }
  }
}

void softmax_inner_backward(const float* gy, const float* y, float* gx, int64_t dim, int64_t inner, bool log) {
  for (int64_t i = 0; i < inner; i += 16) {
    const __mmask16 m = tail_mask16(inner - i);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t k = 0; k < dim; ++k) {
      __m512 g = load_lanes(m, gy + k * inner + i);
      acc = log ? _mm512_add_ps(acc, g) : _mm512_fmadd_ps(g, load_lanes(m, y + k * inner + i), acc);
    }
    for (int64_t k = 0; k < dim; ++k) {
      __m512 g = load_lanes(m, gy + k * inner + i), yv = load_lanes(m, y + k * inner + i);
      store_lanes(gx + k * inner + i, m,
                            log ? _mm512_fnmadd_ps(exp16(yv), acc, g) : _mm512_mul_ps(yv, _mm512_sub_ps(g, acc)));
    }
  }
}

}  // namespace cnnfast::cpu::avx512_impl
