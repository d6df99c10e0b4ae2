// AVX-512 float32 row primitives for the normalisation kernels: norm_avx2.cpp's
// at 16 lanes. Every step is a masked load/store (all lanes set in the body, the
// first n % 16 at the end), so the tails take the same arithmetic as the body.
// Reductions add float lanes over blocks of kBlock elements and fold each block
// into a double, as in the AVX2 build.
#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "cpu/norm.h"
#include "cpu/simd_math_avx512.h"

namespace cnnfast::cpu::avx512_impl {
namespace {

using namespace cnnfast::avx512;

constexpr int64_t kBlock = 512;

// Lanes [0, w) of p, zero beyond; a null p reads as `fill` (w or b absent).
inline __m512 ld(const float* p, __mmask16 m) { return load_lanes(m, p); }
inline __m512 ld_or(const float* p, __mmask16 m, __m512 fill) { return p ? load_lanes(m, p) : fill; }

// y[i .. i+16) = f(i, mask) over [0, n). stream: the body goes out with aligned
// non-temporal stores after up to 15 elements that bring y to a 64-byte boundary
// (never for a y that is not even 4-byte aligned, which no float of reaches one).
template <class F>
inline void write_row(float* y, int64_t n, bool stream, F f) {
  int64_t i = 0;
  if (stream && (reinterpret_cast<std::uintptr_t>(y) & (sizeof(float) - 1)) == 0) {
    const int64_t past = static_cast<int64_t>((reinterpret_cast<std::uintptr_t>(y) & 63) / sizeof(float));
    const int64_t head = past == 0 ? 0 : (16 - past < n ? 16 - past : n);
    if (head) store_lanes(y, tail_mask16(head), f(0, tail_mask16(head)));
    for (i = head; i + 16 <= n; i += 16) _mm512_stream_ps(y + i, f(i, __mmask16(0xffff)));
    // Orders the weakly-ordered streaming stores before whatever follows.
    _mm_sfence();
  }
  for (; i < n; i += 16) {
    const __mmask16 m = tail_mask16(n - i);
    store_lanes(y + i, m, f(i, m));
  }
}

// Sums of f(i, mask) (16 lanes at offset i, masked-off lanes zero) over [0, n),
// one float accumulator per block folded into a double; Parts of them at once.
template <int Parts, class F>
inline void blocked_sums(int64_t n, double* total, F f) {
  for (int k = 0; k < Parts; ++k) total[k] = 0;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = b + kBlock < n ? b + kBlock : n;
    __m512 acc[Parts];
    for (int k = 0; k < Parts; ++k) acc[k] = _mm512_setzero_ps();
    for (int64_t i = b; i < e; i += 16) f(i, tail_mask16(e - i), acc);
    for (int k = 0; k < Parts; ++k) total[k] += double(_mm512_reduce_add_ps(acc[k]));
  }
}

}  // namespace

double norm_sum(const float* x, int64_t n, float pivot) {
  const __m512 p = _mm512_set1_ps(pivot);
  double s;
  blocked_sums<1>(n, &s, [&](int64_t i, __mmask16 m, __m512* acc) {
    acc[0] = _mm512_add_ps(acc[0], _mm512_maskz_sub_ps(m, ld(x + i, m), p));
  });
  return s;
}

double norm_sqdev(const float* x, int64_t n, double mean) {
  const __m512 mv = _mm512_set1_ps(static_cast<float>(mean));
  // The float mean differs from the double one by < 1 ulp; the missing part is
  // added back exactly: sum((x-m')^2) - n*(m - m')^2 equals sum((x-m)^2) when m is the mean.
  const double dm = mean - double(static_cast<float>(mean));
  double s;
  blocked_sums<1>(n, &s, [&](int64_t i, __mmask16 m, __m512* acc) {
    const __m512 d = _mm512_maskz_sub_ps(m, ld(x + i, m), mv);
    acc[0] = _mm512_fmadd_ps(d, d, acc[0]);
  });
  s -= double(n) * dm * dm;
  return s > 0 ? s : 0.0;
}

void norm_affine(const float* x, float* y, int64_t n, float mean, float scale, float shift, bool stream) {
  const __m512 mv = _mm512_set1_ps(mean), a = _mm512_set1_ps(scale), b = _mm512_set1_ps(shift);
  write_row(y, n, stream, [&](int64_t i, __mmask16 m) { return _mm512_fmadd_ps(_mm512_sub_ps(ld(x + i, m), mv), a, b); });
}

void norm_dy_sums(const float* dy, const float* x, int64_t n, double mean, double* sum_dy, double* sum_dy_xc) {
  const __m512 mv = _mm512_set1_ps(static_cast<float>(mean));
  double t[2];
  blocked_sums<2>(n, t, [&](int64_t i, __mmask16 m, __m512* acc) {
    // Masked-off lanes load 0 for dy, so they add nothing to either sum.
    const __m512 g = ld(dy + i, m);
    acc[0] = _mm512_add_ps(acc[0], g);
    acc[1] = _mm512_fmadd_ps(g, _mm512_sub_ps(ld(x + i, m), mv), acc[1]);
  });
  *sum_dy = t[0];
  *sum_dy_xc = t[1];
}

void norm_axpbypc(const float* dy, const float* x, float* dx, int64_t n, float a, float mean, float b, float c,
                  bool stream) {
  const __m512 va = _mm512_set1_ps(a), vm = _mm512_set1_ps(mean), vb = _mm512_set1_ps(b), vc = _mm512_set1_ps(c);
  write_row(dx, n, stream, [&](int64_t i, __mmask16 m) {
    return _mm512_fmadd_ps(ld(dy + i, m), va, _mm512_fmadd_ps(_mm512_sub_ps(ld(x + i, m), vm), vb, vc));
  });
}

void ln_row_forward(const float* x, float* y, int64_t n, float mean, float rstd, float c0, const float* w,
                    const float* b, bool stream) {
  const __m512 vm = _mm512_set1_ps(mean), vs = _mm512_set1_ps(rstd), v0 = _mm512_set1_ps(c0);
  const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
  write_row(y, n, stream, [&](int64_t i, __mmask16 m) {
    const __m512 xh = _mm512_fmadd_ps(_mm512_sub_ps(ld(x + i, m), vm), vs, v0);
    return _mm512_fmadd_ps(xh, ld_or(w ? w + i : nullptr, m, one), ld_or(b ? b + i : nullptr, m, zero));
  });
}

void ln_row_dx(const float* dy, const float* x, const float* w, float* dx, int64_t n, float mean, float rstd,
               float c2, float c3, bool stream) {
  const __m512 vm = _mm512_set1_ps(mean), vs = _mm512_set1_ps(rstd), v2 = _mm512_set1_ps(c2),
               v3 = _mm512_set1_ps(c3), one = _mm512_set1_ps(1.0f);
  write_row(dx, n, stream, [&](int64_t i, __mmask16 m) {
    const __m512 gw = _mm512_mul_ps(ld(dy + i, m), ld_or(w ? w + i : nullptr, m, one));
    return _mm512_fmadd_ps(gw, vs, _mm512_fmadd_ps(_mm512_sub_ps(ld(x + i, m), vm), v2, v3));
  });
}

void ln_grad_segment(const float* dy, const float* x, const float* w, int64_t n, float mean, float rstd, double* sg,
                     double* sgx, float* accw, float* accb) {
  const __m512 vm = _mm512_set1_ps(mean), vs = _mm512_set1_ps(rstd), one = _mm512_set1_ps(1.0f);
  double t[2];
  blocked_sums<2>(n, t, [&](int64_t i, __mmask16 m, __m512* acc) {
    // Masked-off lanes load 0 for dy, so they add nothing anywhere.
    const __m512 g = ld(dy + i, m);
    const __m512 xc = _mm512_sub_ps(ld(x + i, m), vm);
    const __m512 gw = _mm512_mul_ps(g, ld_or(w ? w + i : nullptr, m, one));
    acc[0] = _mm512_add_ps(acc[0], gw);
    acc[1] = _mm512_fmadd_ps(gw, xc, acc[1]);
    if (accw) {
      store_lanes(accw + i, m, _mm512_fmadd_ps(g, _mm512_mul_ps(xc, vs), ld(accw + i, m)));
      store_lanes(accb + i, m, _mm512_add_ps(g, ld(accb + i, m)));
    }
  });
  *sg = t[0];
  *sgx = t[1];
}

void lrn_denom(const float* const* win, int nwin, float* d, int64_t n, float coef, float k) {
  const __m512 vc = _mm512_set1_ps(coef), vk = _mm512_set1_ps(k);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask16(n - i);
    __m512 acc = _mm512_setzero_ps();
    for (int w = 0; w < nwin; ++w) {
      const __m512 v = ld(win[w] + i, m);
      acc = _mm512_fmadd_ps(v, v, acc);
    }
    store_lanes(d + i, m, _mm512_fmadd_ps(acc, vc, vk));
  }
}

void pow_neg(const float* d, float* out, int64_t n, float beta) {
  if (beta != 0.75f && beta != 0.5f && beta != 1.0f) {
    for (int64_t i = 0; i < n; ++i) out[i] = std::pow(d[i], -beta);
    return;
  }
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask16(n - i);
    // Masked-off lanes hold 0; their 1/0 never leaves the register.
    const __m512 v = ld(d + i, m);
    __m512 r;
    if (beta == 1.0f) {
      r = _mm512_div_ps(one, v);
    } else {
      const __m512 s = _mm512_sqrt_ps(v);
      r = _mm512_div_ps(one, beta == 0.5f ? s : _mm512_mul_ps(s, _mm512_sqrt_ps(s)));  // d^(1/2) * d^(1/4)
    }
    store_lanes(out + i, m, r);
  }
}

}  // namespace cnnfast::cpu::avx512_impl
