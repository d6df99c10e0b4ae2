// CUDA normalisation kernels. Three reduction shapes cover every layer:
//  - per channel over (n, s), strided (BatchNorm statistics and gradients,
//    GroupNorm/InstanceNorm parameter gradients): one block per channel, each
//    warp walking contiguous spatial runs;
//  - per contiguous row (GroupNorm's (n, g) block of C/G * S values, LayerNorm's
//    rows): one block per row;
//  - per column across rows (LayerNorm parameter gradients): one thread per
//    column, so a warp reads 32 neighbours of each row.
// Sums are double, two-pass (mean first, then squared deviations), reduced with
// warp shuffles (reduce.cuh). Elementwise passes are grid-stride loops.
#include <algorithm>
#include <cmath>

#include "cuda/common.cuh"
#include "cuda/norm.cuh"
#include "cuda/reduce.cuh"

namespace cnnfast::cuda {
namespace {

constexpr int kThreads = 256;

unsigned grid_for_rows(int64_t rows) { return static_cast<unsigned>(std::min<int64_t>(rows, 65535 * 8)); }

// Sum over (n, s) of f(n, index) for channel c, index = (n*C + c)*S + s.
template <class F>
__device__ double channel_sum(int64_t N, int64_t C, int64_t S, int64_t c, double* shared, F f) {
  double acc = 0;
  if (S >= blockDim.x) {  // long planes: walk each contiguously, no per-element division
    for (int64_t n = 0; n < N; ++n) {
      const int64_t base = (n * C + c) * S;
      for (int64_t s = threadIdx.x; s < S; s += blockDim.x) acc += f(n, base + s);
    }
  } else {
    const int64_t M = N * S;
    for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
      const int64_t n = j / S, s = j - n * S;
      acc += f(n, (n * C + c) * S + s);
    }
  }
  return block_sum(acc, shared);
}

template <class T>
__global__ void bn_stats_kernel(const T* __restrict__ x, int64_t N, int64_t C, int64_t S, double eps,
                                double momentum, T* __restrict__ running_mean, T* __restrict__ running_var,
                                T* __restrict__ save_mean, T* __restrict__ save_rstd) {
  __shared__ double shared[32];
  const double M = double(N * S);
  for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
    const double mean = channel_sum(N, C, S, c, shared, [&](int64_t, int64_t i) { return double(x[i]); }) / M;
    const double q = channel_sum(N, C, S, c, shared, [&](int64_t, int64_t i) {
      const double d = double(x[i]) - mean;
      return d * d;
    });
    if (threadIdx.x == 0) {
      save_mean[c] = T(mean);
      save_rstd[c] = T(1.0 / sqrt(q / M + eps));
      if (running_mean) running_mean[c] = T((1 - momentum) * double(running_mean[c]) + momentum * mean);
      if (running_var) running_var[c] = T((1 - momentum) * double(running_var[c]) + momentum * q / (M - 1));
    }
  }
}

template <class T>
__global__ void bn_eval_stats_kernel(const T* __restrict__ rm, const T* __restrict__ rv, int64_t C, double eps,
                                     T* __restrict__ save_mean, T* __restrict__ save_rstd) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < C; c += int64_t(blockDim.x) * gridDim.x) {
    save_mean[c] = rm[c];
    save_rstd[c] = T(1.0 / sqrt(double(rv[c]) + eps));
  }
}

// MODE 0: BatchNorm (stat c, param c); 1: GroupNorm (stat n*G + c/Cg, param c); 2: LayerNorm (stat e/L, param e%L).
template <int MODE>
__device__ __forceinline__ void stat_param(int64_t e, int64_t C, int64_t S, int64_t G, int64_t& st, int64_t& pa) {
  if constexpr (MODE == 2) {
    st = e / S;  // S carries L
    pa = e - st * S;
  } else {
    const int64_t nc = e / S, c = nc % C;
    pa = c;
    st = MODE == 0 ? c : (nc / C) * G + c / (C / G);
  }
}

template <class T, int MODE>
__global__ void affine_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t total, int64_t C, int64_t S,
                              int64_t G, const T* __restrict__ mean, const T* __restrict__ rstd,
                              const T* __restrict__ w, const T* __restrict__ b) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(blockDim.x) * gridDim.x) {
    int64_t st, pa;
    stat_param<MODE>(e, C, S, G, st, pa);
    const T scale = rstd[st] * (w ? w[pa] : T(1));
    y[e] = (x[e] - mean[st]) * scale + (b ? b[pa] : T(0));
  }
}

// The same affine transform plane by plane (blockIdx.y walks the (n, c) planes):
// statistics and parameters are read once per plane, no per-element division.
template <class T, int MODE>
__global__ void plane_affine_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t planes, int64_t C, int64_t S,
                                    int64_t G, const T* __restrict__ mean, const T* __restrict__ rstd,
                                    const T* __restrict__ w, const T* __restrict__ b) {
  for (int64_t pl = blockIdx.y; pl < planes; pl += gridDim.y) {
    const int64_t c = pl % C, st = MODE == 0 ? c : (pl / C) * G + c / (C / G);
    const T m = mean[st], scale = rstd[st] * (w ? w[c] : T(1)), shift = b ? b[c] : T(0);
    const T* xp = x + pl * S;
    T* yp = y + pl * S;
    for (int64_t s = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; s < S; s += int64_t(blockDim.x) * gridDim.x)
      yp[s] = (xp[s] - m) * scale + shift;
  }
}

template <class T, int MODE>
void launch_affine(const T* x, T* y, int64_t N, int64_t C, int64_t S, int64_t G, const T* mean, const T* rstd,
                   const T* w, const T* b, const char* name) {
  const int64_t total = N * C * S;
  if (S >= 1024) {
    const dim3 grid(static_cast<unsigned>(std::min<int64_t>((S + 4 * kThreads - 1) / (4 * kThreads), 64)),
                    static_cast<unsigned>(std::min<int64_t>(N * C, 65535)));
    plane_affine_kernel<T, MODE><<<grid, kThreads, 0, current_stream()>>>(x, y, N * C, C, S, G, mean, rstd, w, b);
  } else {
    affine_kernel<T, MODE><<<blocks_for(total, kThreads), kThreads, 0, current_stream()>>>(x, y, total, C, S, G, mean,
                                                                                          rstd, w, b);
  }
  check_launch(name);
}

// BatchNorm backward: one block per channel; sums, parameter gradients, then grad_x.
template <class T>
__global__ void bn_backward_kernel(const T* __restrict__ gy, const T* __restrict__ x, T* __restrict__ gx, int64_t N,
                                   int64_t C, int64_t S, const T* __restrict__ w, const T* __restrict__ mean,
                                   const T* __restrict__ rstd, bool training, T* __restrict__ gw,
                                   T* __restrict__ gb) {
  __shared__ double shared[32];
  const double M = double(N * S);
  for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
    const double m = double(mean[c]), r = double(rstd[c]);
    const double sdy = channel_sum(N, C, S, c, shared, [&](int64_t, int64_t i) { return double(gy[i]); });
    const double sdyx = channel_sum(N, C, S, c, shared,
                                    [&](int64_t, int64_t i) { return double(gy[i]) * (double(x[i]) - m) * r; });
    if (threadIdx.x == 0) {
      if (gw) gw[c] += T(sdyx);
      if (gb) gb[c] += T(sdy);
    }
    const double wr = (w ? double(w[c]) : 1.0) * r;
    const T a = T(wr), bcoef = T(training ? -wr * sdyx / M * r : 0.0), ccoef = T(training ? -wr * sdy / M : 0.0);
    const T mt = T(m);
    if (S >= blockDim.x) {
      for (int64_t n = 0; n < N; ++n)
        for (int64_t i = (n * C + c) * S + threadIdx.x, end = (n * C + c + 1) * S; i < end; i += blockDim.x)
          gx[i] = gy[i] * a + (x[i] - mt) * bcoef + ccoef;
    } else {
      for (int64_t j = threadIdx.x; j < N * S; j += blockDim.x) {
        const int64_t n = j / S, i = (n * C + c) * S + (j - n * S);
        gx[i] = gy[i] * a + (x[i] - mt) * bcoef + ccoef;
      }
    }
  }
}

// GroupNorm parameter gradients: per channel c over (n, s), x_hat with the (n, g) statistics.
template <class T>
__global__ void gn_param_kernel(const T* __restrict__ gy, const T* __restrict__ x, int64_t N, int64_t C, int64_t S,
                                int64_t G, const T* __restrict__ mean, const T* __restrict__ rstd, T* __restrict__ gw,
                                T* __restrict__ gb) {
  __shared__ double shared[32];
  const int64_t Cg = C / G;
  for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
    const double sdy = channel_sum(N, C, S, c, shared, [&](int64_t, int64_t i) { return double(gy[i]); });
    const double sdyx = channel_sum(N, C, S, c, shared, [&](int64_t n, int64_t i) {
      const int64_t st = n * G + c / Cg;
      return double(gy[i]) * (double(x[i]) - double(mean[st])) * double(rstd[st]);
    });
    if (threadIdx.x == 0) {
      if (gw) gw[c] += T(sdyx);
      if (gb) gb[c] += T(sdy);
    }
  }
}

// Row statistics (GroupNorm rows of Cg*S, LayerNorm rows of L): one block per row.
template <class T>
__global__ void row_stats_kernel(const T* __restrict__ x, int64_t rows, int64_t L, double eps, T* __restrict__ mean,
                                 T* __restrict__ rstd, T* __restrict__ var_out) {
  __shared__ double shared[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * L;
    double acc = 0;
    for (int64_t j = threadIdx.x; j < L; j += blockDim.x) acc += double(xr[j]);
    const double m = block_sum(acc, shared) / double(L);
    acc = 0;
    for (int64_t j = threadIdx.x; j < L; j += blockDim.x) {
      const double d = double(xr[j]) - m;
      acc += d * d;
    }
    const double var = block_sum(acc, shared) / double(L);
    if (threadIdx.x == 0) {
      mean[r] = T(m);
      rstd[r] = T(1.0 / sqrt(var + eps));
      if (var_out) var_out[r] = T(var);
    }
  }
}

// grad_x of a row-normalised layer: dx = rstd * (dy*w - mean(dy*w) - x_hat * mean(dy*w*x_hat)).
// The weight index of element j of row r: GroupNorm ((r % G) * Cg + j / S), LayerNorm (j).
template <class T, bool GN>
__global__ void row_backward_kernel(const T* __restrict__ gy, const T* __restrict__ x, T* __restrict__ gx,
                                    int64_t rows, int64_t L, int64_t S, int64_t G, int64_t Cg,
                                    const T* __restrict__ w, const T* __restrict__ mean, const T* __restrict__ rstd) {
  __shared__ double shared[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t off = r * L;
    const double m = double(mean[r]), rs = double(rstd[r]);
    auto widx = [&](int64_t j) { return GN ? (r % G) * Cg + j / S : j; };
    double s1 = 0, s2 = 0;
    for (int64_t j = threadIdx.x; j < L; j += blockDim.x) {
      const double g = double(gy[off + j]) * (w ? double(w[widx(j)]) : 1.0);
      s1 += g;
      s2 += g * (double(x[off + j]) - m) * rs;
    }
    s1 = block_sum(s1, shared) / double(L);
    s2 = block_sum(s2, shared) / double(L);
    for (int64_t j = threadIdx.x; j < L; j += blockDim.x) {
      const double g = double(gy[off + j]) * (w ? double(w[widx(j)]) : 1.0);
      const double xh = (double(x[off + j]) - m) * rs;
      gx[off + j] = T(rs * (g - s1 - xh * s2));
    }
  }
}

// LayerNorm parameter gradients: one thread per column l, over all rows.
template <class T>
__global__ void ln_param_kernel(const T* __restrict__ gy, const T* __restrict__ x, int64_t R, int64_t L,
                                const T* __restrict__ mean, const T* __restrict__ rstd, T* __restrict__ gw,
                                T* __restrict__ gb) {
  for (int64_t l = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; l < L; l += int64_t(blockDim.x) * gridDim.x) {
    double sw = 0, sb = 0;
    for (int64_t r = 0; r < R; ++r) {
      const double g = double(gy[r * L + l]);
      sb += g;
      sw += g * (double(x[r * L + l]) - double(mean[r])) * double(rstd[r]);
    }
    if (gw) gw[l] += T(sw);
    if (gb) gb[l] += T(sb);
  }
}

template <class T>
__global__ void instance_running_kernel(const T* __restrict__ mean, const T* __restrict__ var, T* __restrict__ rm,
                                        T* __restrict__ rv, int64_t N, int64_t C, double unbias, double momentum) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < C; c += int64_t(blockDim.x) * gridDim.x) {
    double sm = 0, sv = 0;
    for (int64_t n = 0; n < N; ++n) {
      sm += double(mean[n * C + c]);
      sv += double(var[n * C + c]);
    }
    if (rm) rm[c] = T((1 - momentum) * double(rm[c]) + momentum * sm / double(N));
    if (rv) rv[c] = T((1 - momentum) * double(rv[c]) + momentum * unbias * sv / double(N));
  }
}

template <class T>
__global__ void lrn_forward_kernel(const T* __restrict__ x, T* __restrict__ y, T* __restrict__ denom, int64_t total,
                                   int64_t C, int64_t S, int64_t size, T coef, T k, T beta) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(blockDim.x) * gridDim.x) {
    const int64_t s = e % S, nc = e / S, c = nc % C, base = (nc - c) * S + s;
    const int64_t lo = max(int64_t(0), c - size / 2), hi = min(C - 1, c + (size - 1) / 2);
    T acc = 0;
    for (int64_t j = lo; j <= hi; ++j) {
      const T v = x[base + j * S];
      acc += v * v;
    }
    const T d = k + coef * acc;
    denom[e] = d;
    y[e] = x[e] * pow(d, -beta);
  }
}

template <class T>
__global__ void lrn_backward_kernel(const T* __restrict__ gy, const T* __restrict__ x, const T* __restrict__ y,
                                    const T* __restrict__ denom, T* __restrict__ gx, int64_t total, int64_t C,
                                    int64_t S, int64_t size, T coef, T beta) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(blockDim.x) * gridDim.x) {
    const int64_t s = e % S, nc = e / S, c = nc % C, base = (nc - c) * S + s;
    // Channels whose window holds c: [c - (size-1)/2, c + size/2].
    const int64_t lo = max(int64_t(0), c - (size - 1) / 2), hi = min(C - 1, c + size / 2);
    T acc = 0;
    for (int64_t j = lo; j <= hi; ++j) {
      const int64_t i = base + j * S;
      acc += gy[i] * y[i] / denom[i];
    }
    gx[e] = gy[e] * pow(denom[e], -beta) - coef * x[e] * acc;
  }
}

int threads_for(int64_t per_block) { return per_block >= 256 ? 256 : per_block >= 64 ? 128 : 32; }

}  // namespace

template <class T>
void batch_norm_forward(const T* x, T* y, int64_t N, int64_t C, int64_t S, const T* w, const T* b, T* rm, T* rv,
                        bool training, double momentum, double eps, T* save_mean, T* save_rstd) {
  const int64_t total = N * C * S;
  if (total == 0) return;
  if (training) {
    bn_stats_kernel<T><<<grid_for_rows(C), threads_for(N * S), 0, current_stream()>>>(x, N, C, S, eps, momentum, rm,
                                                                                      rv, save_mean, save_rstd);
    check_launch("bn_stats_kernel");
  } else {
    bn_eval_stats_kernel<T><<<blocks_for(C, 128), 128, 0, current_stream()>>>(rm, rv, C, eps, save_mean, save_rstd);
    check_launch("bn_eval_stats_kernel");
  }
  launch_affine<T, 0>(x, y, N, C, S, 1, save_mean, save_rstd, w, b, "affine_kernel<batch_norm>");
}

template <class T>
void batch_norm_backward(const T* gy, const T* x, T* gx, int64_t N, int64_t C, int64_t S, const T* w,
                         const T* save_mean, const T* save_rstd, bool training, T* gw, T* gb) {
  if (N * C * S == 0) return;
  bn_backward_kernel<T><<<grid_for_rows(C), threads_for(N * S), 0, current_stream()>>>(
      gy, x, gx, N, C, S, w, save_mean, save_rstd, training, gw, gb);
  check_launch("bn_backward_kernel");
}

template <class T>
void group_norm_forward(const T* x, T* y, int64_t N, int64_t C, int64_t S, int64_t G, const T* w, const T* b,
                        double eps, T* mean, T* rstd, T* var_out) {
  const int64_t total = N * C * S, L = (C / G) * S;
  if (total == 0) return;
  row_stats_kernel<T><<<grid_for_rows(N * G), threads_for(L), 0, current_stream()>>>(x, N * G, L, eps, mean, rstd,
                                                                                      var_out);
  check_launch("row_stats_kernel<group_norm>");
  launch_affine<T, 1>(x, y, N, C, S, G, mean, rstd, w, b, "affine_kernel<group_norm>");
}

template <class T>
void group_norm_backward(const T* gy, const T* x, T* gx, int64_t N, int64_t C, int64_t S, int64_t G, const T* w,
                         const T* mean, const T* rstd, T* gw, T* gb) {
  const int64_t Cg = C / G, L = Cg * S;
  if (N * C * S == 0) return;
  row_backward_kernel<T, true><<<grid_for_rows(N * G), threads_for(L), 0, current_stream()>>>(gy, x, gx, N * G, L, S,
                                                                                              G, Cg, w, mean, rstd);
  check_launch("row_backward_kernel<group_norm>");
  if (gw || gb) {
    gn_param_kernel<T><<<grid_for_rows(C), threads_for(N * S), 0, current_stream()>>>(gy, x, N, C, S, G, mean, rstd,
                                                                                      gw, gb);
    check_launch("gn_param_kernel");
  }
}

template <class T>
void instance_norm_update_running(const T* mean, const T* var, T* rm, T* rv, int64_t N, int64_t C, int64_t S,
                                  double momentum) {
  if ((!rm && !rv) || N * C == 0) return;
  instance_running_kernel<T><<<blocks_for(C, 128), 128, 0, current_stream()>>>(mean, var, rm, rv, N, C,
                                                                               double(S) / double(S - 1), momentum);
  check_launch("instance_running_kernel");
}

template <class T>
void layer_norm_forward(const T* x, T* y, int64_t R, int64_t L, const T* w, const T* b, double eps, T* mean,
                        T* rstd) {
  if (R * L == 0) return;
  row_stats_kernel<T><<<grid_for_rows(R), threads_for(L), 0, current_stream()>>>(x, R, L, eps, mean, rstd, nullptr);
  check_launch("row_stats_kernel<layer_norm>");
  affine_kernel<T, 2><<<blocks_for(R * L, kThreads), kThreads, 0, current_stream()>>>(x, y, R * L, 1, L, 1, mean,
                                                                                      rstd, w, b);
  check_launch("affine_kernel<layer_norm>");
}

template <class T>
void layer_norm_backward(const T* gy, const T* x, T* gx, int64_t R, int64_t L, const T* w, const T* mean,
                         const T* rstd, T* gw, T* gb) {
  if (R * L == 0) return;
  row_backward_kernel<T, false><<<grid_for_rows(R), threads_for(L), 0, current_stream()>>>(gy, x, gx, R, L, 1, 1, 1,
                                                                                           w, mean, rstd);
  check_launch("row_backward_kernel<layer_norm>");
  if (gw || gb) {
    ln_param_kernel<T><<<blocks_for(L, 128), 128, 0, current_stream()>>>(gy, x, R, L, mean, rstd, gw, gb);
    check_launch("ln_param_kernel");
  }
}

template <class T>
void lrn_forward(const T* x, T* y, T* denom, int64_t N, int64_t C, int64_t S, int64_t size, double alpha, double beta,
                 double k) {
  const int64_t total = N * C * S;
  if (total == 0) return;
  lrn_forward_kernel<T><<<blocks_for(total, kThreads), kThreads, 0, current_stream()>>>(
      x, y, denom, total, C, S, size, T(alpha / double(size)), T(k), T(beta));
  check_launch("lrn_forward_kernel");
}

template <class T>
void lrn_backward(const T* gy, const T* x, const T* y, const T* denom, T* gx, int64_t N, int64_t C, int64_t S,
                  int64_t size, double alpha, double beta) {
  const int64_t total = N * C * S;
  if (total == 0) return;
  lrn_backward_kernel<T><<<blocks_for(total, kThreads), kThreads, 0, current_stream()>>>(
      gy, x, y, denom, gx, total, C, S, size, T(2.0 * alpha * beta / double(size)), T(beta));
  check_launch("lrn_backward_kernel");
}

#define CNNFAST_INSTANTIATE(T)                                                                                    \
  template void batch_norm_forward<T>(const T*, T*, int64_t, int64_t, int64_t, const T*, const T*, T*, T*, bool,  \
                                      double, double, T*, T*);                                                    \
  template void batch_norm_backward<T>(const T*, const T*, T*, int64_t, int64_t, int64_t, const T*, const T*,     \
                                       const T*, bool, T*, T*);                                                   \
  template void group_norm_forward<T>(const T*, T*, int64_t, int64_t, int64_t, int64_t, const T*, const T*,       \
                                      double, T*, T*, T*);                                                        \
  template void group_norm_backward<T>(const T*, const T*, T*, int64_t, int64_t, int64_t, int64_t, const T*,      \
                                       const T*, const T*, T*, T*);                                               \
  template void instance_norm_update_running<T>(const T*, const T*, T*, T*, int64_t, int64_t, int64_t, double);  \
  template void layer_norm_forward<T>(const T*, T*, int64_t, int64_t, const T*, const T*, double, T*, T*);        \
  template void layer_norm_backward<T>(const T*, const T*, T*, int64_t, int64_t, const T*, const T*, const T*,    \
                                       T*, T*);                                                                   \
  template void lrn_forward<T>(const T*, T*, T*, int64_t, int64_t, int64_t, int64_t, double, double, double);     \
  template void lrn_backward<T>(const T*, const T*, const T*, const T*, T*, int64_t, int64_t, int64_t, int64_t,   \
                                double, double);
CNNFAST_INSTANTIATE(float)
CNNFAST_INSTANTIATE(double)
#undef CNNFAST_INSTANTIATE

}  // namespace cnnfast::cuda
