// AVX2+FMA float32 row primitives for the normalisation kernels (norm.cpp holds
// the algorithms and the scalar reference). Reductions add float lanes over
// blocks of kBlock elements and fold each block into a double, so a 10^6-element
// channel sums as accurately as the double scalar reference to within rounding
// of one block. Tails use masked loads so every element takes the same path.
#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "cpu/norm.h"
#include "cpu/simd_math_avx2.h"

namespace cnnfast::cpu::avx2_impl {
namespace {

using namespace cnnfast::avx2;

constexpr int64_t kBlock = 512;

inline __m256 load_tail(const float* p, int64_t rem) {
  return _mm256_maskload_ps(p, tail_mask(static_cast<int>(rem)));
}
inline void store_tail(float* p, int64_t rem, __m256 v) {
  _mm256_maskstore_ps(p, tail_mask(static_cast<int>(rem)), v);
}

// y[i .. i+w) = f(i, w) over [0, n) in 8-lane steps (w < 8 only at the ends).
// stream: the body goes out with aligned non-temporal stores after up to 7
// elements that bring y to a 32-byte boundary (never for a y that is not even
// 4-byte aligned, which NumPy allows and which no float of reaches one).
template <class F>
inline void write_row(float* y, int64_t n, bool stream, F f) {
  int64_t i = 0;
  if (stream && (reinterpret_cast<std::uintptr_t>(y) & (sizeof(float) - 1)) == 0) {
    const int64_t past = static_cast<int64_t>((reinterpret_cast<std::uintptr_t>(y) & 31) / sizeof(float));
    const int64_t head = past == 0 ? 0 : (8 - past < n ? 8 - past : n);
    if (head) store_tail(y, head, f(0, head));
    for (i = head; i + 8 <= n; i += 8) _mm256_stream_ps(y + i, f(i, 8));
    // Orders the weakly-ordered streaming stores before whatever follows.
    _mm_sfence();
  }
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, f(i, 8));
  if (i < n) store_tail(y + i, n - i, f(i, n - i));
}

// Sums f(i) (an __m256 of 8 lanes at offset i, masked tails zeroed) over n.
template <class F>
inline double blocked_sum(int64_t n, F f) {
  double total = 0;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = b + kBlock < n ? b + kBlock : n;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t i = b;
    for (; i + 16 <= e; i += 16) {
      a0 = _mm256_add_ps(a0, f(i, 8));
      a1 = _mm256_add_ps(a1, f(i + 8, 8));
    }
    for (; i < e; i += 8) a0 = _mm256_add_ps(a0, f(i, e - i < 8 ? e - i : 8));
    total += double(hsum8(_mm256_add_ps(a0, a1)));
  }
  return total;
}

}  // namespace

double norm_sum(const float* x, int64_t n, float pivot) {
  const __m256 p = _mm256_set1_ps(pivot);
  return blocked_sum(n, [&](int64_t i, int64_t w) {
    if (w == 8) return _mm256_sub_ps(_mm256_loadu_ps(x + i), p);
    __m256i mk = tail_mask(static_cast<int>(w));
    return _mm256_and_ps(_mm256_sub_ps(_mm256_maskload_ps(x + i, mk), p), _mm256_castsi256_ps(mk));
  });
}

double norm_sqdev(const float* x, int64_t n, double mean) {
  const __m256 m = _mm256_set1_ps(static_cast<float>(mean));
  // The float mean differs from the double one by < 1 ulp; the missing part is
  // added back exactly: sum((x-m')^2) - n*(m - m')^2 equals sum((x-m)^2) when m is the mean.
  const double dm = mean - double(static_cast<float>(mean));
  double s = blocked_sum(n, [&](int64_t i, int64_t w) {
    if (w == 8) {
      __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + i), m);
      return _mm256_mul_ps(d, d);
    }
    __m256i mk = tail_mask(static_cast<int>(w));
    __m256 d = _mm256_and_ps(_mm256_sub_ps(_mm256_maskload_ps(x + i, mk), m), _mm256_castsi256_ps(mk));
    return _mm256_mul_ps(d, d);
  });
  s -= double(n) * dm * dm;
  return s > 0 ? s : 0.0;
}

void norm_affine(const float* x, float* y, int64_t n, float mean, float scale, float shift, bool stream) {
  const __m256 m = _mm256_set1_ps(mean), a = _mm256_set1_ps(scale), b = _mm256_set1_ps(shift);
  write_row(y, n, stream, [&](int64_t i, int64_t w) {
    return _mm256_fmadd_ps(_mm256_sub_ps(w == 8 ? _mm256_loadu_ps(x + i) : load_tail(x + i, w), m), a, b);
  });
}

void norm_dy_sums(const float* dy, const float* x, int64_t n, double mean, double* sum_dy, double* sum_dy_xc) {
  const __m256 m = _mm256_set1_ps(static_cast<float>(mean));
  double ta = 0, tb = 0;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = b + kBlock < n ? b + kBlock : n;
    __m256 a0 = _mm256_setzero_ps(), b0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
    int64_t i = b;
    for (; i + 16 <= e; i += 16) {
      __m256 g0 = _mm256_loadu_ps(dy + i), g1 = _mm256_loadu_ps(dy + i + 8);
      a0 = _mm256_add_ps(a0, g0);
      a1 = _mm256_add_ps(a1, g1);
      b0 = _mm256_fmadd_ps(g0, _mm256_sub_ps(_mm256_loadu_ps(x + i), m), b0);
      b1 = _mm256_fmadd_ps(g1, _mm256_sub_ps(_mm256_loadu_ps(x + i + 8), m), b1);
    }
    for (; i < e; i += 8) {
      // Masked-off lanes load 0 for dy, so they add nothing to either sum.
      const int64_t w = e - i < 8 ? e - i : 8;
      __m256 g = load_tail(dy + i, w), xv = load_tail(x + i, w);
      a0 = _mm256_add_ps(a0, g);
      b0 = _mm256_fmadd_ps(g, _mm256_sub_ps(xv, m), b0);
    }
    ta += double(hsum8(_mm256_add_ps(a0, a1)));
    tb += double(hsum8(_mm256_add_ps(b0, b1)));
  }
  *sum_dy = ta;
  *sum_dy_xc = tb;
}

void norm_axpbypc(const float* dy, const float* x, float* dx, int64_t n, float a, float mean, float b, float c,
                  bool stream) {
  const __m256 va = _mm256_set1_ps(a), vm = _mm256_set1_ps(mean), vb = _mm256_set1_ps(b), vc = _mm256_set1_ps(c);
  write_row(dx, n, stream, [&](int64_t i, int64_t w) {
    const __m256 g = w == 8 ? _mm256_loadu_ps(dy + i) : load_tail(dy + i, w);
    const __m256 xv = w == 8 ? _mm256_loadu_ps(x + i) : load_tail(x + i, w);
    return _mm256_fmadd_ps(g, va, _mm256_fmadd_ps(_mm256_sub_ps(xv, vm), vb, vc));
  });
}

void ln_row_forward(const float* x, float* y, int64_t n, float mean, float rstd, float c0, const float* w,
                    const float* b, bool stream) {
  const __m256 vm = _mm256_set1_ps(mean), vs = _mm256_set1_ps(rstd), v0 = _mm256_set1_ps(c0);
  const __m256 one = _mm256_set1_ps(1.0f);
  write_row(y, n, stream, [&](int64_t i, int64_t wdt) {
    __m256 xv = wdt == 8 ? _mm256_loadu_ps(x + i) : load_tail(x + i, wdt);
    __m256 wv = w ? (wdt == 8 ? _mm256_loadu_ps(w + i) : load_tail(w + i, wdt)) : one;
    __m256 bv = b ? (wdt == 8 ? _mm256_loadu_ps(b + i) : load_tail(b + i, wdt)) : _mm256_setzero_ps();
    return _mm256_fmadd_ps(_mm256_fmadd_ps(_mm256_sub_ps(xv, vm), vs, v0), wv, bv);
  });
}

void ln_row_dx(const float* dy, const float* x, const float* w, float* dx, int64_t n, float mean, float rstd,
               float c2, float c3, bool stream) {
  const __m256 vm = _mm256_set1_ps(mean), vs = _mm256_set1_ps(rstd), v2 = _mm256_set1_ps(c2),
               v3 = _mm256_set1_ps(c3), one = _mm256_set1_ps(1.0f);
  write_row(dx, n, stream, [&](int64_t i, int64_t wd) {
    __m256 g = wd == 8 ? _mm256_loadu_ps(dy + i) : load_tail(dy + i, wd);
    __m256 xv = wd == 8 ? _mm256_loadu_ps(x + i) : load_tail(x + i, wd);
    __m256 wv = w ? (wd == 8 ? _mm256_loadu_ps(w + i) : load_tail(w + i, wd)) : one;
    return _mm256_fmadd_ps(_mm256_mul_ps(g, wv), vs, _mm256_fmadd_ps(_mm256_sub_ps(xv, vm), v2, v3));
  });
}

void ln_grad_segment(const float* dy, const float* x, const float* w, int64_t n, float mean, float rstd, double* sg,
                     double* sgx, float* accw, float* accb) {
  const __m256 vm = _mm256_set1_ps(mean), vs = _mm256_set1_ps(rstd), one = _mm256_set1_ps(1.0f);
  double ta = 0, tb = 0;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = b + kBlock < n ? b + kBlock : n;
    __m256 a0 = _mm256_setzero_ps(), b0 = _mm256_setzero_ps();
    for (int64_t i = b; i < e; i += 8) {
      const int64_t wd = e - i < 8 ? e - i : 8;
      // Masked-off lanes load 0 for dy, so they add nothing anywhere.
      const __m256 g = wd == 8 ? _mm256_loadu_ps(dy + i) : load_tail(dy + i, wd);
      const __m256 xc = _mm256_sub_ps(wd == 8 ? _mm256_loadu_ps(x + i) : load_tail(x + i, wd), vm);
      const __m256 wv = w ? (wd == 8 ? _mm256_loadu_ps(w + i) : load_tail(w + i, wd)) : one;
      const __m256 gw = _mm256_mul_ps(g, wv);
      a0 = _mm256_add_ps(a0, gw);
      b0 = _mm256_fmadd_ps(gw, xc, b0);
      if (accw) {
        const __m256 xh = _mm256_mul_ps(xc, vs);
        if (wd == 8) {
          _mm256_storeu_ps(accw + i, _mm256_fmadd_ps(g, xh, _mm256_loadu_ps(accw + i)));
          _mm256_storeu_ps(accb + i, _mm256_add_ps(g, _mm256_loadu_ps(accb + i)));
        } else {
          store_tail(accw + i, wd, _mm256_fmadd_ps(g, xh, load_tail(accw + i, wd)));
          store_tail(accb + i, wd, _mm256_add_ps(g, load_tail(accb + i, wd)));
        }
      }
    }
    ta += double(hsum8(a0));
    tb += double(hsum8(b0));
  }
  *sg = ta;
  *sgx = tb;
}

void lrn_denom(const float* const* win, int nwin, float* d, int64_t n, float coef, float k) {
  const __m256 vc = _mm256_set1_ps(coef), vk = _mm256_set1_ps(k);
  auto f = [&](int64_t i, int64_t wd) {
    __m256 acc = _mm256_setzero_ps();
    for (int w = 0; w < nwin; ++w) {
      __m256 v = wd == 8 ? _mm256_loadu_ps(win[w] + i) : load_tail(win[w] + i, wd);
      acc = _mm256_fmadd_ps(v, v, acc);
    }
    return _mm256_fmadd_ps(acc, vc, vk);
  };
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(d + i, f(i, 8));
  if (i < n) store_tail(d + i, n - i, f(i, n - i));
}

void pow_neg(const float* d, float* out, int64_t n, float beta) {
  const __m256 one = _mm256_set1_ps(1.0f);
  if (beta == 0.75f || beta == 0.5f || beta == 1.0f) {
    auto f = [&](__m256 v) {
      if (beta == 1.0f) return _mm256_div_ps(one, v);
      __m256 s = _mm256_sqrt_ps(v);
      if (beta == 0.5f) return _mm256_div_ps(one, s);
      return _mm256_div_ps(one, _mm256_mul_ps(s, _mm256_sqrt_ps(s)));  // d^(1/2) * d^(1/4)
    };
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, f(_mm256_loadu_ps(d + i)));
    if (i < n) {
      // Masked-off lanes hold 0; their 1/0 never leaves the register.
      store_tail(out + i, n - i, f(load_tail(d + i, n - i)));
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) out[i] = std::pow(d[i], -beta);
}

}  // namespace cnnfast::cpu::avx2_impl
