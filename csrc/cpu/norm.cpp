// Normalisation kernels: the scalar reference row primitives (the oracle in
// tests and the path on CPUs without AVX2), the per-layer algorithms built on
// them, and the threading. The algorithms are written once; each row primitive
// goes to the AVX2 version for float32 when the CPU has it.
//
// Threading: BatchNorm over channels, GroupNorm / InstanceNorm over (n, g),
// LayerNorm's forward over rows and its backward over (column block, row group)
// then (row, column block) tasks, LRN over (n, spatial block). Every reduction runs inside one task in a fixed order,
// so results do not depend on the thread count at all.
#include "cpu/norm.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "core/cpu_features.h"
#include "core/simd.h"
#include "core/parallel.h"

namespace cnnfast::cpu {
namespace {

// Whether an output of `count` elements is written with non-temporal stores:
// from 16 MB on (half a typical last-level cache) it would be evicted before
// anything reads it, and a normal store first reads every line it writes.
template <class T>
bool stream_output(int64_t count) {
  return count * int64_t(sizeof(T)) >= (int64_t(16) << 20);
}

// Row primitives; `vec` routes float32 to the AVX-512 or AVX2 versions.
template <class T>
struct Prim {
  bool vec = is_f32<T> && use_avx2();

  // pivot: a value near the data (its first element); the float lanes of the
  // AVX2 sum add x - pivot, which stays small when the mean is large.
  double sum(const T* x, int64_t n, T pivot) const {
    if constexpr (is_f32<T>) {
      if (vec) return double(pivot) * double(n) + (use_avx512() ? avx512_impl::norm_sum : avx2_impl::norm_sum)(x, n, pivot);
    }
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += x[i];
    return s;
  }
  double sqdev(const T* x, int64_t n, double mean) const {
    if constexpr (is_f32<T>) {
      if (vec) return (use_avx512() ? avx512_impl::norm_sqdev : avx2_impl::norm_sqdev)(x, n, mean);
    }
    double s = 0;
    for (int64_t i = 0; i < n; ++i) {
      double d = double(x[i]) - mean;
      s += d * d;
    }
    return s;
  }
  // Mean and sum of squared deviations of n values: two-pass over blocks small
  // enough to stay in L1, merged with Chan et al.'s pairwise update, so a long
  // row costs one pass over memory and keeps two-pass accuracy.
  void moments(const T* x, int64_t n, double* mean, double* m2) const {
    constexpr int64_t kB = 4096;
    double mu = 0, q = 0;
    for (int64_t b = 0; b < n; b += kB) {
      const int64_t len = std::min(kB, n - b);
      const double bm = sum(x + b, len, x[b]) / double(len);
      merge(&mu, &q, double(b), bm, sqdev(x + b, len, bm), double(len));
    }
    *mean = mu;
    *m2 = q;
  }
  // Folds a part (mean bm, squared deviations bq, nb values) into (mu, q) over `seen` values.
  static void merge(double* mu, double* q, double seen, double bm, double bq, double nb) {
    const double tot = seen + nb, delta = bm - *mu;
    *mu += delta * nb / tot;
    *q += bq + delta * delta * seen * nb / tot;
  }
  // y = (x - mean) * scale + shift: centring first keeps x*scale from swamping
  // the result when the mean is large next to the spread.
  void affine(const T* x, T* y, int64_t n, T mean, T scale, T shift, bool stream = false) const {
    if constexpr (is_f32<T>) {
      if (vec) return (use_avx512() ? avx512_impl::norm_affine : avx2_impl::norm_affine)(x, y, n, mean, scale, shift, stream);
    }
    for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - mean) * scale + shift;
  }
  // sum(dy) and sum(dy * (x - mean)): centring before the product keeps the
  // second sum exact when the mean is large next to the spread.
  void dy_sums(const T* dy, const T* x, int64_t n, double mean, double* a, double* b) const {
    if constexpr (is_f32<T>) {
      if (vec) return (use_avx512() ? avx512_impl::norm_dy_sums : avx2_impl::norm_dy_sums)(dy, x, n, mean, a, b);
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
  void axpbypc(const T* dy, const T* x, T* dx, int64_t n, T a, T mean, T b, T c, bool stream = false) const {
    if constexpr (is_f32<T>) {
      if (vec) return (use_avx512() ? avx512_impl::norm_axpbypc : avx2_impl::norm_axpbypc)(dy, x, dx, n, a, mean, b, c, stream);
    }
    for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * a + (x[i] - mean) * b + c;
  }
};

// (N, C) input (S = 1): a channel is a strided column, so these loop over rows
// with a block of channels [c0, c1) contiguous in the inner loop.
template <class T>
void column_moments(const T* x, int64_t N, int64_t C, int64_t c0, int64_t c1, double* mu, double* q) {
  for (int64_t c = c0; c < c1; ++c) mu[c] = q[c] = 0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = c0; c < c1; ++c) mu[c] += x[n * C + c];
  for (int64_t c = c0; c < c1; ++c) mu[c] /= double(N);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = c0; c < c1; ++c) {
      const double d = double(x[n * C + c]) - mu[c];
      q[c] += d * d;
    }
}

template <class T>
void column_dy_sums(const T* dy, const T* x, int64_t N, int64_t C, int64_t c0, int64_t c1, const T* mean, double* a,
                    double* b) {
  for (int64_t c = c0; c < c1; ++c) a[c] = b[c] = 0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = c0; c < c1; ++c) {
      a[c] += dy[n * C + c];
      b[c] += double(dy[n * C + c]) * double(x[n * C + c] - mean[c]);
    }
}

// Small planes (2x2, 4x4 maps of late ResNet stages): one channel's N blocks of S values
// are gathered into a contiguous row, so the row primitives run once per channel instead
// of once per (n, c) block, whose fixed cost was most of the time at S <= 64.
constexpr int64_t kGatherMaxS = 64;
// ...and while a channel's row (one per task, two in backward) stays a modest scratch buffer.
constexpr int64_t kGatherMaxRow = int64_t(1) << 22;

template <class T>
void gather_channel(const T* x, T* row, int64_t N, int64_t C, int64_t S, int64_t c) {
  for (int64_t n = 0; n < N; ++n) std::copy_n(x + (n * C + c) * S, S, row + n * S);
}

template <class T>
void scatter_channel(const T* row, T* y, int64_t N, int64_t C, int64_t S, int64_t c) {
  for (int64_t n = 0; n < N; ++n) std::copy_n(row + n * S, S, y + (n * C + c) * S);
}

}  // namespace

// ---- BatchNorm ----------------------------------------------------------------

template <class T>
void batch_norm_forward(const T* x, T* y, int64_t N, int64_t C, int64_t S, const T* weight, const T* bias,
                        T* running_mean, T* running_var, bool training, double momentum, double eps, T* save_mean,
                        T* save_rstd) {
  const Prim<T> P;
  const int64_t M = N * S;
  // Per channel: y = (x - m) * scale + shift, with m the float rounding of the
  // mean and the remainder folded into shift, so a large mean costs no precision.
  std::vector<T> mh(C), scale(C), shift(C);
  auto set_channel = [&](int64_t c, double mean, double rstd) {
    save_mean[c] = static_cast<T>(mean);
    save_rstd[c] = static_cast<T>(rstd);
    const double w = weight ? double(weight[c]) : 1.0, b = bias ? double(bias[c]) : 0.0;
    mh[c] = static_cast<T>(mean);
    scale[c] = static_cast<T>(w * rstd);
    shift[c] = static_cast<T>(b - (mean - double(mh[c])) * w * rstd);
  };
  auto update_running = [&](int64_t c, double mean, double q) {
    if (running_mean) running_mean[c] = static_cast<T>((1 - momentum) * running_mean[c] + momentum * mean);
    // The running variance uses the unbiased estimate, as PyTorch (M > 1 is checked by the caller).
    if (running_var) running_var[c] = static_cast<T>((1 - momentum) * running_var[c] + momentum * q / double(M - 1));
  };
  if (!training)
    for (int64_t c = 0; c < C; ++c) set_channel(c, running_mean[c], 1.0 / std::sqrt(double(running_var[c]) + eps));
  if (S == 1) {
    std::vector<double> mu(C), q(C);
    parallel_for(0, C, 64, [&](int64_t cb, int64_t ce) {
      if (training) {
        column_moments(x, N, C, cb, ce, mu.data(), q.data());
        for (int64_t c = cb; c < ce; ++c) {
          update_running(c, mu[c], q[c]);
          set_channel(c, mu[c], 1.0 / std::sqrt(q[c] / double(M) + eps));
        }
      }
      for (int64_t n = 0; n < N; ++n)
        for (int64_t c = cb; c < ce; ++c) y[n * C + c] = (x[n * C + c] - mh[c]) * scale[c] + shift[c];
    });
    return;
  }
  if (!training) {
    // No statistics to gather: stream through memory in order.
    const bool stream = stream_output<T>(N * C * S);
    parallel_for(0, N * C, std::max<int64_t>(1, 16384 / S), [&](int64_t kb, int64_t ke) {
      for (int64_t k = kb; k < ke; ++k)
        P.affine(x + k * S, y + k * S, S, mh[k % C], scale[k % C], shift[k % C], stream);
    });
    return;
  }
  if (S <= kGatherMaxS && N * S <= kGatherMaxRow) {
    parallel_for(0, C, std::max<int64_t>(1, 4096 / M), [&](int64_t cb, int64_t ce) {
      std::vector<T> row(M);
      for (int64_t c = cb; c < ce; ++c) {
        gather_channel(x, row.data(), N, C, S, c);
        double mean, q;
        P.moments(row.data(), M, &mean, &q);
        update_running(c, mean, q);
        set_channel(c, mean, 1.0 / std::sqrt(q / double(M) + eps));
        P.affine(row.data(), row.data(), M, mh[c], scale[c], shift[c]);
        scatter_channel(row.data(), y, N, C, S, c);
      }
    });
    return;
  }
  const bool stream = stream_output<T>(N * C * S);
  parallel_for(0, C, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      // Moments of each (n, c) block merged into the channel's: one pass over memory.
      double mean = 0, q = 0;
      for (int64_t n = 0; n < N; ++n) {
        double bm, bq;
        P.moments(x + (n * C + c) * S, S, &bm, &bq);
        Prim<T>::merge(&mean, &q, double(n * S), bm, bq, double(S));
      }
      update_running(c, mean, q);
      set_channel(c, mean, 1.0 / std::sqrt(q / double(M) + eps));
      // The channel was just read, so this pass mostly hits the cache.
      for (int64_t n = 0; n < N; ++n)
        P.affine(x + (n * C + c) * S, y + (n * C + c) * S, S, mh[c], scale[c], shift[c], stream);
    }
  });
}

template <class T>
void batch_norm_backward(const T* gy, const T* x, T* gx, int64_t N, int64_t C, int64_t S, const T* weight,
                         const T* save_mean, const T* save_rstd, bool training, T* grad_weight, T* grad_bias) {
  const Prim<T> P;
  const double M = double(N * S);
  // dx = a*dy + (x - mean)*k2 + k3 per channel. With batch statistics
  // dx = w*rstd*(dy - mean(dy) - x_hat*mean(dy*x_hat)); with running statistics the
  // mean and variance are constants: dx = w*rstd*dy.
  std::vector<T> ka(C), k2(C), k3(C);
  auto set_channel = [&](int64_t c, double a, double b) {
    const double rstd = save_rstd[c], w = weight ? double(weight[c]) : 1.0;
    if (grad_weight) grad_weight[c] += static_cast<T>(b * rstd);
    if (grad_bias) grad_bias[c] += static_cast<T>(a);
    ka[c] = static_cast<T>(w * rstd);
    k2[c] = training ? static_cast<T>(-w * rstd * rstd * rstd * b / M) : T(0);
    k3[c] = training ? static_cast<T>(-w * rstd * a / M) : T(0);
  };
  if (S == 1) {
    std::vector<double> a(C), b(C);
    parallel_for(0, C, 64, [&](int64_t cb, int64_t ce) {
      column_dy_sums(gy, x, N, C, cb, ce, save_mean, a.data(), b.data());
      for (int64_t c = cb; c < ce; ++c) set_channel(c, a[c], b[c]);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t c = cb; c < ce; ++c)
          gx[n * C + c] = gy[n * C + c] * ka[c] + (x[n * C + c] - save_mean[c]) * k2[c] + k3[c];
    });
    return;
  }
  if (!training) {
    // dx does not depend on the channel sums: one pass in memory order writes dx
    // and the per-(n, c) sums, which are then reduced per channel in order.
    for (int64_t c = 0; c < C; ++c) ka[c] = static_cast<T>((weight ? double(weight[c]) : 1.0) * save_rstd[c]);
    std::vector<double> A(N * C), B(N * C);
    const bool stream = stream_output<T>(N * C * S);
    parallel_for(0, N * C, std::max<int64_t>(1, 16384 / S), [&](int64_t kb, int64_t ke) {
      for (int64_t k = kb; k < ke; ++k) {
        const int64_t c = k % C;
        P.dy_sums(gy + k * S, x + k * S, S, save_mean[c], &A[k], &B[k]);
        P.axpbypc(gy + k * S, x + k * S, gx + k * S, S, ka[c], save_mean[c], T(0), T(0), stream);
      }
    });
    for (int64_t c = 0; c < C; ++c) {
      double a = 0, b = 0;
      for (int64_t n = 0; n < N; ++n) {
        a += A[n * C + c];
        b += B[n * C + c];
      }
      set_channel(c, a, b);
    }
    return;
  }
  if (S <= kGatherMaxS && N * S <= kGatherMaxRow) {
    parallel_for(0, C, std::max<int64_t>(1, 4096 / int64_t(M)), [&](int64_t cb, int64_t ce) {
      const int64_t len = N * S;
      std::vector<T> dy_row(len), x_row(len);
      for (int64_t c = cb; c < ce; ++c) {
        gather_channel(gy, dy_row.data(), N, C, S, c);
        gather_channel(x, x_row.data(), N, C, S, c);
        double a, b;
        P.dy_sums(dy_row.data(), x_row.data(), len, save_mean[c], &a, &b);
        set_channel(c, a, b);
        P.axpbypc(dy_row.data(), x_row.data(), dy_row.data(), len, ka[c], save_mean[c], k2[c], k3[c]);
        scatter_channel(dy_row.data(), gx, N, C, S, c);
      }
    });
    return;
  }
  const bool stream = stream_output<T>(N * C * S);
  parallel_for(0, C, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      const double mean = save_mean[c];
      double a = 0, b = 0;
      for (int64_t n = 0; n < N; ++n) {
        double an, bn;
        P.dy_sums(gy + (n * C + c) * S, x + (n * C + c) * S, S, mean, &an, &bn);
        a += an;
        b += bn;
      }
      set_channel(c, a, b);
      for (int64_t n = 0; n < N; ++n)
        P.axpbypc(gy + (n * C + c) * S, x + (n * C + c) * S, gx + (n * C + c) * S, S, ka[c], save_mean[c], k2[c],
                  k3[c], stream);
    }
  });
}

// ---- GroupNorm / InstanceNorm -----------------------------------------------

template <class T>
void group_norm_forward(const T* x, T* y, int64_t N, int64_t C, int64_t S, int64_t G, const T* weight,
                        const T* bias, double eps, T* mean, T* rstd, T* var_out) {
  const Prim<T> P;
  const int64_t D = C / G, row = D * S;
  const bool stream = stream_output<T>(N * C * S);
  parallel_for(0, N * G, 1, [&](int64_t rb, int64_t re) {
    for (int64_t r = rb; r < re; ++r) {
      const T* xr = x + r * row;
      T* yr = y + r * row;
      double mu, q;
      P.moments(xr, row, &mu, &q);
      const double var = q / double(row);
      const double rs = 1.0 / std::sqrt(var + eps);
      mean[r] = static_cast<T>(mu);
      rstd[r] = static_cast<T>(rs);
      if (var_out) var_out[r] = static_cast<T>(var);
      const int64_t g = r % G;
      for (int64_t d = 0; d < D; ++d) {
        const int64_t c = g * D + d;
        const double w = weight ? double(weight[c]) : 1.0, b = bias ? double(bias[c]) : 0.0;
        const T m = static_cast<T>(mu);
        P.affine(xr + d * S, yr + d * S, S, m, static_cast<T>(w * rs), static_cast<T>(b - (mu - double(m)) * w * rs),
                 stream);
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
  const bool stream = stream_output<T>(N * C * S);
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
        P.axpbypc(gy + off, x + off, gx + off, S, static_cast<T>(w * rs), static_cast<T>(mu), k2, k3, stream);
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
  const bool stream = stream_output<T>(R * L);
  parallel_for(0, R, 1, [&](int64_t rb, int64_t re) {
    for (int64_t r = rb; r < re; ++r) {
      const T* xr = x + r * L;
      T* yr = y + r * L;
      double mu, q;
      P.moments(xr, L, &mu, &q);
      const double rs = 1.0 / std::sqrt(q / double(L) + eps);
      mean[r] = static_cast<T>(mu);
      rstd[r] = static_cast<T>(rs);
      // x_hat = (x - m) * s + c0 with m the float rounding of the mean and c0 the remainder.
      const T m = static_cast<T>(mu), s = static_cast<T>(rs), c0 = static_cast<T>(-(mu - double(m)) * rs);
      if constexpr (is_f32<T>) {
        if (P.vec) {
          (use_avx512() ? avx512_impl::ln_row_forward : avx2_impl::ln_row_forward)(xr, yr, L, m, s, c0, weight, bias, stream);
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
  const bool params = grad_weight || grad_bias;
  // One read of dy and x gathers both what dx needs (per row: sum(dy*w) and
  // sum(dy*w*(x - mean))) and the parameter gradients (per column: sums over
  // rows), then dx takes a second read. Tasks are (column block, row group)
  // pairs of fixed sizes, each writing its own partial sums: per (row, column
  // block) for the row sums, per (row group, column) for the parameters; both
  // are then added in a fixed order, so many rows with few columns (LayerNorm
  // over channels) or few long rows both spread over the threads, and the
  // result does not depend on the thread count.
  // 64 KB row segments: long enough for the hardware prefetchers to stream each
  // one, while a block's float accumulators (2 x 64 KB) stay in L2.
  constexpr int64_t kCols = 16384, kGroupRows = 256;
  const int64_t ncb = (L + kCols - 1) / kCols, ngr = (R + kGroupRows - 1) / kGroupRows;
  std::vector<double> rs_g(R * ncb), rs_gx(R * ncb);
  const bool stream = stream_output<T>(R * L);
  std::vector<double> pw(params ? ngr * L : 0), pb(params ? ngr * L : 0);
  // dx = dy * w * rstd + (x - mean) * k2 + k3 over columns [j0, j1) of row r,
  // once that row's sums are complete.
  auto row_dx = [&](int64_t r, int64_t j0, int64_t j1) {
    double sg = 0, sgx = 0;
    for (int64_t k = 0; k < ncb; ++k) {
      sg += rs_g[r * ncb + k];
      sgx += rs_gx[r * ncb + k];
    }
    const T m = mean[r], s = rstd[r];
    const double rs = s;
    const T k2 = static_cast<T>(-rs * rs * rs * sgx / double(L)), k3 = static_cast<T>(-rs * sg / double(L));
    const T* g = gy + r * L;
    const T* xr = x + r * L;
    T* out = gx + r * L;
    if constexpr (is_f32<T>) {
      if (P.vec)
        return (use_avx512() ? avx512_impl::ln_row_dx : avx2_impl::ln_row_dx)(g + j0, xr + j0, weight ? weight + j0 : nullptr, out + j0, j1 - j0, m, s, k2, k3,
                                    stream);
    }
    for (int64_t j = j0; j < j1; ++j) {
      const T w = weight ? weight[j] : T(1);
      out[j] = g[j] * w * s + (xr[j] - m) * k2 + k3;
    }
  };
  // Rows of one column block (L <= kCols) are complete after their first read
  // and still in cache: dx follows at once, and the second read is skipped.
  const bool fused_dx = ncb == 1;
  parallel_for(0, ncb * ngr, 1, [&](int64_t tb, int64_t te) {
    const int64_t acc_len = params ? std::min(L, kCols) : 0;
    std::vector<float> fw(acc_len), fb(acc_len);
    for (int64_t task = tb; task < te; ++task) {
      const int64_t cb = task % ncb, j0 = cb * kCols, j1 = std::min(L, j0 + kCols), grp = task / ncb;
      double* dw = params ? pw.data() + grp * L + j0 : nullptr;
      double* db = params ? pb.data() + grp * L + j0 : nullptr;
      const T* w = weight ? weight + j0 : nullptr;
      // Rows outer: each row's segment streams contiguously into the block's
      // accumulators, which stay in cache. The AVX2 path adds runs of kRows rows
      // in float lanes and folds each run into the double sums.
      constexpr int64_t kRows = 16;
      const int64_t rend = std::min(R, (grp + 1) * kGroupRows);
      for (int64_t r0 = grp * kGroupRows; r0 < rend; r0 += kRows) {
        const int64_t r1 = std::min(rend, r0 + kRows);
        if constexpr (is_f32<T>) {
          if (P.vec) {
            std::fill(fw.begin(), fw.begin() + (params ? j1 - j0 : 0), 0.0f);
            std::fill(fb.begin(), fb.begin() + (params ? j1 - j0 : 0), 0.0f);
            for (int64_t r = r0; r < r1; ++r) {
              (use_avx512() ? avx512_impl::ln_grad_segment : avx2_impl::ln_grad_segment)(gy + r * L + j0, x + r * L + j0, w, j1 - j0, mean[r], rstd[r],
                                         &rs_g[r * ncb + cb], &rs_gx[r * ncb + cb], params ? fw.data() : nullptr,
                                         fb.data());
              if (fused_dx) row_dx(r, 0, L);
            }
            for (int64_t j = 0; params && j < j1 - j0; ++j) {
              dw[j] += fw[j];
              db[j] += fb[j];
            }
            continue;
          }
        }
        for (int64_t r = r0; r < r1; ++r) {
          const T m = mean[r], s = rstd[r];
          const T* g = gy + r * L;
          const T* xr = x + r * L;
          double sg = 0, sgx = 0;
          for (int64_t j = j0; j < j1; ++j) {
            const double gw = weight ? double(g[j]) * double(weight[j]) : double(g[j]);
            sg += gw;
            sgx += gw * double(xr[j] - m);
            if (params) {
              dw[j - j0] += double(g[j]) * double((xr[j] - m) * s);
              db[j - j0] += g[j];
            }
          }
          rs_g[r * ncb + cb] = sg;
          rs_gx[r * ncb + cb] = sgx;
          if (fused_dx) row_dx(r, 0, L);
        }
      }
    }
  });
  if (!fused_dx) {
    parallel_for(0, R * ncb, std::max<int64_t>(1, (1 << 15) / kCols), [&](int64_t tb, int64_t te) {
      for (int64_t task = tb; task < te; ++task) {
        const int64_t r = task / ncb, j0 = task % ncb * kCols;
        row_dx(r, j0, std::min(L, j0 + kCols));
      }
    });
  }
  if (!params) return;
  parallel_for(0, L, 4096, [&](int64_t jb, int64_t je) {
    for (int64_t j = jb; j < je; ++j) {
      double w = 0, b = 0;
      for (int64_t grp = 0; grp < ngr; ++grp) {
        w += pw[grp * L + j];
        b += pb[grp * L + j];
      }
      if (grad_weight) grad_weight[j] += static_cast<T>(w);
      if (grad_bias) grad_bias[j] += static_cast<T>(b);
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
    std::vector<const T*> win(std::min(size, C));  // a window never spans more than the C channels
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
            (use_avx512() ? avx512_impl::lrn_denom : avx2_impl::lrn_denom)(win.data(), int(hi - lo + 1), d, len, coef, static_cast<T>(k));
            (use_avx512() ? avx512_impl::pow_neg : avx2_impl::pow_neg)(d, y + off, len, static_cast<float>(beta));
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
            (use_avx512() ? avx512_impl::pow_neg : avx2_impl::pow_neg)(denom + off, pw.data(), len, static_cast<float>(beta));
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
// Non-x86 builds have no per-ISA translation units; use_avx2() is always false there.
namespace avx2_impl {
#include "cpu/norm_isa_stubs.inc"
}  // namespace avx2_impl
namespace avx512_impl {
#include "cpu/norm_isa_stubs.inc"
}  // namespace avx512_impl
#endif

}  // namespace cnnfast::cpu
