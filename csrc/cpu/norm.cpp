// Normalisation kernels: the scalar reference row primitives (the oracle in
// tests and the path on CPUs without AVX2), the per-layer algorithms built on
// them, and the threading. The algorithms are written once; each row primitive
// goes to the AVX2 version for float32 when the CPU has it.
//
// Threading: BatchNorm over channels, GroupNorm / InstanceNorm over (n, g),
// LayerNorm over rows (and over column blocks for its parameter gradients), LRN
// over (n, spatial block). Every reduction runs inside one task in a fixed order,
// so results do not depend on the thread count at all.
#include "cpu/norm.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "core/cpu_features.h"
#include "core/parallel.h"

namespace cnnfast::cpu {
namespace {

template <class T>
constexpr bool is_f32 = std::is_same_v<T, float>;

// Row primitives; `vec` routes float32 to the AVX2 versions.
template <class T>
struct Prim {
  bool vec = is_f32<T> && use_avx2();

  // pivot: a value near the data (its first element); the float lanes of the
  // AVX2 sum add x - pivot, which stays small when the mean is large.
  double sum(const T* x, int64_t n, T pivot) const {
    if constexpr (is_f32<T>) {
      if (vec) return double(pivot) * double(n) + avx2_impl::norm_sum(x, n, pivot);
    }
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += x[i];
    return s;
  }
  double sqdev(const T* x, int64_t n, double mean) const {
    if constexpr (is_f32<T>) {
      if (vec) return avx2_impl::norm_sqdev(x, n, mean);
    }
    double s = 0;
    for (int64_t i = 0; i < n; ++i) {
      double d = double(x[i]) - mean;
      s += d * d;
    }
    return s;
  }
  // y = (x - mean) * scale + shift: centring first keeps x*scale from swamping
  // the result when the mean is large next to the spread.
  void affine(const T* x, T* y, int64_t n, T mean, T scale, T shift) const {
    if constexpr (is_f32<T>) {
      if (vec) return avx2_impl::norm_affine(x, y, n, mean, scale, shift);
    }
    for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - mean) * scale + shift;
  }
  // sum(dy) and sum(dy * (x - mean)): centring before the product keeps the
  // second sum exact when the mean is large next to the spread.
  void dy_sums(const T* dy, const T* x, int64_t n, double mean, double* a, double* b) const {
    if constexpr (is_f32<T>) {
      if (vec) return avx2_impl::norm_dy_sums(dy, x, n, mean, a, b);
    }
    double sa = 0, sb = 0;
    const T m = static_cast<T>(mean);
    for (int64_t i = 0; i < n; ++i) {
      sa += dy[i];
      sb += double(dy[i]) * double(x[i] - m);
    }
    *a = sa;
    *b = sb;
  }
  void axpbypc(const T* dy, const T* x, T* dx, int64_t n, T a, T mean, T b, T c) const {
    if constexpr (is_f32<T>) {
      if (vec) return avx2_impl::norm_axpbypc(dy, x, dx, n, a, mean, b, c);
    }
    for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * a + (x[i] - mean) * b + c;
  }
};

template <class T>
T rstd_of(double var, double eps) {
  return static_cast<T>(1.0 / std::sqrt(var + eps));
}

}  // namespace

// ---- BatchNorm ----------------------------------------------------------------

template <class T>
void batch_norm_forward(const T* x, T* y, int64_t N, int64_t C, int64_t S, const T* weight, const T* bias,
                        T* running_mean, T* running_var, bool training, double momentum, double eps, T* save_mean,
                        T* save_rstd) {
  const Prim<T> P;
  const int64_t M = N * S;
  parallel_for(0, C, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      double mean, rstd;
      if (training) {
        double s = 0;
        for (int64_t n = 0; n < N; ++n) s += P.sum(x + (n * C + c) * S, S, x[c * S]);
        mean = s / double(M);
        double q = 0;
        for (int64_t n = 0; n < N; ++n) q += P.sqdev(x + (n * C + c) * S, S, mean);
        const double var = q / double(M);
        rstd = 1.0 / std::sqrt(var + eps);
        if (running_mean) running_mean[c] = static_cast<T>((1 - momentum) * running_mean[c] + momentum * mean);
        // The running variance uses the unbiased estimate, as PyTorch (M > 1 is checked by the caller).
        if (running_var)
          running_var[c] = static_cast<T>((1 - momentum) * running_var[c] + momentum * q / double(M - 1));
      } else {
        mean = running_mean[c];
        rstd = 1.0 / std::sqrt(double(running_var[c]) + eps);
      }
      save_mean[c] = static_cast<T>(mean);
      save_rstd[c] = static_cast<T>(rstd);
      const double w = weight ? double(weight[c]) : 1.0, b = bias ? double(bias[c]) : 0.0;
      // mean = m + (mean - m) with m its float rounding: x - m is exact, and the
      // remainder goes into the shift so a large mean costs no precision.
      const T m = static_cast<T>(mean), scale = static_cast<T>(w * rstd);
      const T shift = static_cast<T>(b - (mean - double(m)) * w * rstd);
      for (int64_t n = 0; n < N; ++n) P.affine(x + (n * C + c) * S, y + (n * C + c) * S, S, m, scale, shift);
    }
  });
}

template <class T>
void batch_norm_backward(const T* gy, const T* x, T* gx, int64_t N, int64_t C, int64_t S, const T* weight,
                         const T* save_mean, const T* save_rstd, bool training, T* grad_weight, T* grad_bias) {
  const Prim<T> P;
  const double M = double(N * S);
  parallel_for(0, C, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      const double mean = save_mean[c], rstd = save_rstd[c];
      double a = 0, b = 0;
      for (int64_t n = 0; n < N; ++n) {
        double an, bn;
        P.dy_sums(gy + (n * C + c) * S, x + (n * C + c) * S, S, mean, &an, &bn);
        a += an;
        b += bn;
      }
      if (grad_weight) grad_weight[c] += static_cast<T>(b * rstd);
      if (grad_bias) grad_bias[c] += static_cast<T>(a);
      const double w = weight ? double(weight[c]) : 1.0;
      // dx = w*rstd*(dy - mean(dy) - x_hat*mean(dy*x_hat)) with batch statistics;
      // with running statistics the mean and variance are constants: dx = w*rstd*dy.
      double k2 = 0, k3 = 0;
      if (training) {
        k2 = -w * rstd * rstd * rstd * b / M;
        k3 = -w * rstd * a / M;
      }
      for (int64_t n = 0; n < N; ++n)
        P.axpbypc(gy + (n * C + c) * S, x + (n * C + c) * S, gx + (n * C + c) * S, S, static_cast<T>(w * rstd),
                  static_cast<T>(mean), static_cast<T>(k2), static_cast<T>(k3));
    }
  });
}

// ---- GroupNorm / InstanceNorm -----------------------------------------------

template <class T>
void group_norm_forward(const T* x, T* y, int64_t N, int64_t C, int64_t S, int64_t G, const T* weight,
                        const T* bias, double eps, T* mean, T* rstd, T* var_out) {
  const Prim<T> P;
  const int64_t D = C / G, row = D * S;
  parallel_for(0, N * G, 1, [&](int64_t rb, int64_t re) {
    for (int64_t r = rb; r < re; ++r) {
      const T* xr = x + r * row;
      T* yr = y + r * row;
      const double mu = P.sum(xr, row, xr[0]) / double(row);
      const double var = P.sqdev(xr, row, mu) / double(row);
      const double rs = 1.0 / std::sqrt(var + eps);
      mean[r] = static_cast<T>(mu);
      rstd[r] = static_cast<T>(rs);
      if (var_out) var_out[r] = static_cast<T>(var);
      const int64_t g = r % G;
      for (int64_t d = 0; d < D; ++d) {
        const int64_t c = g * D + d;
        const double w = weight ? double(weight[c]) : 1.0, b = bias ? double(bias[c]) : 0.0;
        const T m = static_cast<T>(mu);
        P.affine(xr + d * S, yr + d * S, S, m, static_cast<T>(w * rs), static_cast<T>(b - (mu - double(m)) * w * rs));
      }
    }
  });
}

template <class T>
void group_norm_backward(const T* gy, const T* x, T* gx, int64_t N, int64_t C, int64_t S, int64_t G,
                         const T* weight, const T* mean, const T* rstd, T* grad_weight, T* grad_bias) {
  const Prim<T> P;
  const int64_t D = C / G, row = D * S;
  // Per (n, c): sum(dy) and sum(dy*(x - mean)); the parameter gradients reduce
  // them over n afterwards, in order, outside the parallel region.
  std::vector<double> A(N * C), B(N * C);
  parallel_for(0, N * G, 1, [&](int64_t rb, int64_t re) {
    for (int64_t r = rb; r < re; ++r) {
      const int64_t n = r / G, g = r % G;
      const double mu = mean[r], rs = rstd[r];
      double sg = 0, sgx = 0;
      for (int64_t d = 0; d < D; ++d) {
        const int64_t c = g * D + d, off = r * row + d * S;
        P.dy_sums(gy + off, x + off, S, mu, &A[n * C + c], &B[n * C + c]);
        const double w = weight ? double(weight[c]) : 1.0;
        sg += w * A[n * C + c];
        sgx += w * B[n * C + c];
      }
      const double M = double(row);
      const T k2 = static_cast<T>(-rs * rs * rs * sgx / M), k3 = static_cast<T>(-rs * sg / M);
      for (int64_t d = 0; d < D; ++d) {
        const int64_t c = g * D + d, off = r * row + d * S;
        const double w = weight ? double(weight[c]) : 1.0;
        P.axpbypc(gy + off, x + off, gx + off, S, static_cast<T>(w * rs), static_cast<T>(mu), k2, k3);
      }
    }
  });
  for (int64_t c = 0; c < C; ++c) {
    double gw = 0, gb = 0;
    for (int64_t n = 0; n < N; ++n) {
      gw += B[n * C + c] * double(rstd[n * G + c / D]);
      gb += A[n * C + c];
    }
    if (grad_weight) grad_weight[c] += static_cast<T>(gw);
    if (grad_bias) grad_bias[c] += static_cast<T>(gb);
  }
}

// ---- LayerNorm ----------------------------------------------------------------

template <class T>
void layer_norm_forward(const T* x, T* y, int64_t R, int64_t L, const T* weight, const T* bias, double eps, T* mean,
                        T* rstd) {
  const Prim<T> P;
  parallel_for(0, R, 1, [&](int64_t rb, int64_t re) {
    for (int64_t r = rb; r < re; ++r) {
      const T* xr = x + r * L;
      T* yr = y + r * L;
      const double mu = P.sum(xr, L, xr[0]) / double(L);
      const double rs = 1.0 / std::sqrt(P.sqdev(xr, L, mu) / double(L) + eps);
      mean[r] = static_cast<T>(mu);
      rstd[r] = static_cast<T>(rs);
      // x_hat = (x - m) * s + c0 with m the float rounding of the mean and c0 the remainder.
      const T m = static_cast<T>(mu), s = static_cast<T>(rs), c0 = static_cast<T>(-(mu - double(m)) * rs);
      if constexpr (is_f32<T>) {
        if (P.vec) {
          avx2_impl::ln_row_forward(xr, yr, L, m, s, c0, weight, bias);
          continue;
        }
      }
      for (int64_t j = 0; j < L; ++j) {
        T v = (xr[j] - m) * s + c0;
        if (weight) v *= weight[j];
        if (bias) v += bias[j];
        yr[j] = v;
      }
    }
  });
}

template <class T>
void layer_norm_backward(const T* gy, const T* x, T* gx, int64_t R, int64_t L, const T* weight, const T* mean,
                         const T* rstd, T* grad_weight, T* grad_bias) {
  const Prim<T> P;
  parallel_for(0, R, 1, [&](int64_t rb, int64_t re) {
    for (int64_t r = rb; r < re; ++r) {
      const T* g = gy + r * L;
      const T* xr = x + r * L;
      T* out = gx + r * L;
      const T m = mean[r], s = rstd[r];
      double sg = 0, sgx = 0;  // sum(dy*w), sum(dy*w*(x - mean))
      if constexpr (is_f32<T>) {
        if (P.vec) avx2_impl::ln_row_sums(g, xr, weight, L, m, &sg, &sgx);
      }
      if (!P.vec) {
        for (int64_t j = 0; j < L; ++j) {
          const double gw = weight ? double(g[j]) * double(weight[j]) : double(g[j]);
          sg += gw;
          sgx += gw * double(xr[j] - m);
        }
      }
      const double rs = s;
      const T k2 = static_cast<T>(-rs * rs * rs * sgx / double(L)), k3 = static_cast<T>(-rs * sg / double(L));
      if constexpr (is_f32<T>) {
        if (P.vec) {
          avx2_impl::ln_row_dx(g, xr, weight, out, L, m, s, k2, k3);
          continue;
        }
      }
      for (int64_t j = 0; j < L; ++j) {
        const T w = weight ? weight[j] : T(1);
        out[j] = g[j] * w * s + (xr[j] - m) * k2 + k3;
      }
    }
  });
  if (!grad_weight && !grad_bias) return;
  // Parameter gradients reduce over rows: split the columns instead, so every
  // column is summed by one task in row order.
  constexpr int64_t kCols = 1024;
  parallel_for(0, (L + kCols - 1) / kCols, 1, [&](int64_t bb, int64_t be) {
    std::vector<double> dw(kCols), db(kCols);
    for (int64_t blk = bb; blk < be; ++blk) {
      const int64_t j0 = blk * kCols, j1 = std::min(L, j0 + kCols);
      if constexpr (is_f32<T>) {
        if (P.vec && grad_weight && grad_bias) {
          avx2_impl::ln_param_cols(gy, x, R, L, j0, j1, mean, rstd, grad_weight, grad_bias);
          continue;
        }
      }
      std::fill(dw.begin(), dw.end(), 0.0);
      std::fill(db.begin(), db.end(), 0.0);
      for (int64_t r = 0; r < R; ++r) {
        const T m = mean[r], s = rstd[r];
        for (int64_t j = j0; j < j1; ++j) {
          dw[j - j0] += double(gy[r * L + j]) * double((x[r * L + j] - m) * s);
          db[j - j0] += gy[r * L + j];
        }
      }
      for (int64_t j = j0; j < j1; ++j) {
        if (grad_weight) grad_weight[j] += static_cast<T>(dw[j - j0]);
        if (grad_bias) grad_bias[j] += static_cast<T>(db[j - j0]);
      }
    }
  });
}

// ---- Local Response Normalisation ----------------------------------------------

namespace {
// Channels [lo, hi] that enter the sum of channel c, clipped to [0, C).
inline void lrn_window(int64_t c, int64_t C, int64_t size, int64_t* lo, int64_t* hi) {
  *lo = std::max<int64_t>(0, c - size / 2);
  *hi = std::min<int64_t>(C - 1, c + (size - 1) / 2);
}
constexpr int64_t kLrnBlock = 512;  // spatial positions per task
}  // namespace

template <class T>
void lrn_forward(const T* x, T* y, T* denom, int64_t N, int64_t C, int64_t S, int64_t size, double alpha,
                 double beta, double k) {
  const bool vec = is_f32<T> && use_avx2();
  const int64_t nblk = (S + kLrnBlock - 1) / kLrnBlock;
  const T coef = static_cast<T>(alpha / double(size));
  parallel_for(0, N * nblk, 1, [&](int64_t tb, int64_t te) {
    std::vector<const T*> win(size);
    for (int64_t t = tb; t < te; ++t) {
      const int64_t n = t / nblk, s0 = (t % nblk) * kLrnBlock, len = std::min(kLrnBlock, S - s0);
      for (int64_t c = 0; c < C; ++c) {
        int64_t lo, hi;
        lrn_window(c, C, size, &lo, &hi);
        const int64_t off = (n * C + c) * S + s0;
        T* d = denom + off;
        if constexpr (is_f32<T>) {
          if (vec) {
            for (int64_t j = lo; j <= hi; ++j) win[j - lo] = x + (n * C + j) * S + s0;
            avx2_impl::lrn_denom(win.data(), int(hi - lo + 1), d, len, coef, static_cast<T>(k));
            avx2_impl::pow_neg(d, y + off, len, static_cast<float>(beta));
            for (int64_t i = 0; i < len; ++i) y[off + i] *= x[off + i];
            continue;
          }
        }
        for (int64_t i = 0; i < len; ++i) {
          T acc = 0;
          for (int64_t j = lo; j <= hi; ++j) {
            const T v = x[(n * C + j) * S + s0 + i];
            acc += v * v;
          }
          d[i] = static_cast<T>(k) + coef * acc;
          y[off + i] = x[off + i] * static_cast<T>(std::pow(d[i], -beta));
        }
      }
    }
  });
}

// dx_j = dy_j d_j^-beta - (2 alpha beta / size) x_j sum_{c: j in window(c)} dy_c y_c / d_c,
// where window(c) contains j exactly when c is in [j - (size-1)/2, j + size/2].
template <class T>
void lrn_backward(const T* gy, const T* x, const T* y, const T* denom, T* gx, int64_t N, int64_t C, int64_t S,
                  int64_t size, double alpha, double beta) {
  const bool vec = is_f32<T> && use_avx2();
  const int64_t nblk = (S + kLrnBlock - 1) / kLrnBlock;
  const T coef = static_cast<T>(2.0 * alpha * beta / double(size));
  parallel_for(0, N * nblk, 1, [&](int64_t tb, int64_t te) {
    std::vector<T> ratio(C * kLrnBlock), pw(kLrnBlock);
    for (int64_t t = tb; t < te; ++t) {
      const int64_t n = t / nblk, s0 = (t % nblk) * kLrnBlock, len = std::min(kLrnBlock, S - s0);
      for (int64_t c = 0; c < C; ++c) {
        const int64_t off = (n * C + c) * S + s0;
        for (int64_t i = 0; i < len; ++i) ratio[c * kLrnBlock + i] = gy[off + i] * y[off + i] / denom[off + i];
      }
      for (int64_t j = 0; j < C; ++j) {
        const int64_t lo = std::max<int64_t>(0, j - (size - 1) / 2), hi = std::min<int64_t>(C - 1, j + size / 2);
        const int64_t off = (n * C + j) * S + s0;
        bool done = false;
        if constexpr (is_f32<T>) {
          if (vec) {
            avx2_impl::pow_neg(denom + off, pw.data(), len, static_cast<float>(beta));
            done = true;
          }
        }
        if (!done)
          for (int64_t i = 0; i < len; ++i) pw[i] = static_cast<T>(std::pow(denom[off + i], -beta));
        for (int64_t i = 0; i < len; ++i) {
          T acc = 0;
          for (int64_t c = lo; c <= hi; ++c) acc += ratio[c * kLrnBlock + i];
          gx[off + i] = gy[off + i] * pw[i] - coef * x[off + i] * acc;
        }
      }
    }
  });
}

#define CNNFAST_INSTANTIATE(T)                                                                                   \
  template void batch_norm_forward<T>(const T*, T*, int64_t, int64_t, int64_t, const T*, const T*, T*, T*, bool, \
                                      double, double, T*, T*);                                                   \
  template void batch_norm_backward<T>(const T*, const T*, T*, int64_t, int64_t, int64_t, const T*, const T*,    \
                                       const T*, bool, T*, T*);                                                  \
  template void group_norm_forward<T>(const T*, T*, int64_t, int64_t, int64_t, int64_t, const T*, const T*,      \
                                      double, T*, T*, T*);                                                       \
  template void group_norm_backward<T>(const T*, const T*, T*, int64_t, int64_t, int64_t, int64_t, const T*,     \
                                       const T*, const T*, T*, T*);                                              \
  template void layer_norm_forward<T>(const T*, T*, int64_t, int64_t, const T*, const T*, double, T*, T*);       \
  template void layer_norm_backward<T>(const T*, const T*, T*, int64_t, int64_t, const T*, const T*, const T*,   \
                                       T*, T*);                                                                  \
  template void lrn_forward<T>(const T*, T*, T*, int64_t, int64_t, int64_t, int64_t, double, double, double);    \
  template void lrn_backward<T>(const T*, const T*, const T*, const T*, T*, int64_t, int64_t, int64_t, int64_t,  \
                                double, double);
CNNFAST_INSTANTIATE(float)
CNNFAST_INSTANTIATE(double)
#undef CNNFAST_INSTANTIATE

#if !CNNFAST_HAVE_AVX2_BUILD
// Non-x86 builds have no AVX2 translation unit; use_avx2() is always false there.
namespace avx2_impl {
double norm_sum(const float*, int64_t, float) { return 0; }
double norm_sqdev(const float*, int64_t, double) { return 0; }
void norm_affine(const float*, float*, int64_t, float, float, float) {}
void norm_dy_sums(const float*, const float*, int64_t, double, double*, double*) {}
void norm_axpbypc(const float*, const float*, float*, int64_t, float, float, float, float) {}
void ln_row_forward(const float*, float*, int64_t, float, float, float, const float*, const float*) {}
void ln_row_sums(const float*, const float*, const float*, int64_t, double, double*, double*) {}
void ln_row_dx(const float*, const float*, const float*, float*, int64_t, float, float, float, float) {}
void ln_param_cols(const float*, const float*, int64_t, int64_t, int64_t, int64_t, const float*, const float*,
                   float*, float*) {}
void lrn_denom(const float* const*, int, float*, int64_t, float, float) {}
void pow_neg(const float*, float*, int64_t, float) {}
}  // namespace avx2_impl
#endif

}  // namespace cnnfast::cpu
