// CUDA loss kernels. Elementwise losses run one thread per element, class-index
// losses one thread per sample (its C logits strided by S); each thread keeps
// double partial sums, the block reduces them with warp shuffles and one atomic
// add per block lands in the device accumulators, so 'mean' and 'sum' never
// leave the GPU. Formulas and edge rules (NaN, all -inf rows, -100 log clamp)
// follow loss.cpp.
#include <cmath>

#include "cuda/common.cuh"
#include "cuda/loss.cuh"
#include "cuda/reduce.cuh"

namespace cnnfast::cuda {
namespace {

constexpr int kThreads = 256;

template <class T>
__device__ __forceinline__ T sign_of(T d) {
  return T((d > 0) - (d < 0));
}

template <class T>
__device__ __forceinline__ T pw_value(Pointwise kind, T d, T param) {
  const T a = fabs(d);
  switch (kind) {
    case Pointwise::L1: return a;
    case Pointwise::MSE: return d * d;
    case Pointwise::Huber: return a < param ? T(0.5) * d * d : param * (a - T(0.5) * param);
    default:
      if (param == T(0)) return a;
      return a < param ? T(0.5) * d * d / param : a - T(0.5) * param;
  }
}

template <class T>
__device__ __forceinline__ T pw_deriv(Pointwise kind, T d, T param) {
  switch (kind) {
    case Pointwise::L1: return sign_of(d);
    case Pointwise::MSE: return T(2) * d;
    case Pointwise::Huber: return d <= -param ? -param : (d >= param ? param : d);
    default:
      if (param == T(0)) return sign_of(d);
      return d <= -param ? T(-1) : (d >= param ? T(1) : d / param);
  }
}

// Block-reduces two partial sums and adds them to acc[0], acc[1] (acc[1] skipped when with_second is false).
__device__ void commit(double s0, double s1, double* acc, bool with_second) {
  __shared__ double shared[32];
  s0 = block_sum(s0, shared);
  if (with_second) s1 = block_sum(s1, shared);
  if (threadIdx.x == 0) {
    atomicAdd(acc, s0);
    if (with_second) atomicAdd(acc + 1, s1);
  }
}

template <class T>
__device__ __forceinline__ T upstream(const LossGrad& g, int64_t i) {
  const T* gp = static_cast<const T*>(g.grad);
  if (g.per_elem) return gp[i];
  return T(double(gp[0]) / (g.denom_dev ? *g.denom_dev : g.denom_host));
}

template <class T>
__global__ void pointwise_fwd_kernel(Pointwise kind, const T* __restrict__ x, const T* __restrict__ t,
                                     T* __restrict__ elem, int64_t n, T param, double* acc) {
  double s = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    const T l = pw_value(kind, x[i] - t[i], param);
    if (elem) elem[i] = l;
    s += double(l);
  }
  commit(s, 0, acc, false);
}

template <class T>
__global__ void pointwise_bwd_kernel(Pointwise kind, LossGrad g, const T* __restrict__ x, const T* __restrict__ t,
                                     T* __restrict__ gx, int64_t n, T param) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x)
    gx[i] = upstream<T>(g, i) * pw_deriv(kind, x[i] - t[i], param);
}

// Log-sum-exp of C values spaced S apart: NaN anywhere gives NaN, all -inf gives -inf.
template <class T>
__device__ T logsumexp(const T* row, int64_t C, int64_t S) {
  T mx = -INFINITY;
  for (int64_t c = 0; c < C; ++c) {
    const T v = row[c * S];
    if (isnan(v)) return v;
    mx = v > mx ? v : mx;
  }
  if (isinf(mx)) return mx;
  T s = 0;
  for (int64_t c = 0; c < C; ++c) s += exp(row[c * S] - mx);
  return mx + log(s);
}

__device__ __forceinline__ void note_bad(unsigned long long* bad, int64_t k) {
  atomicMin(bad, static_cast<unsigned long long>(k));
}

template <class T>
__global__ void ce_fwd_kernel(const T* __restrict__ x, const int64_t* __restrict__ target, const T* __restrict__ w,
                              T* __restrict__ elem, T* __restrict__ lse, int64_t N, int64_t C, int64_t S,
                              int64_t ignore, double ls, double* acc, unsigned long long* bad) {
  double s = 0, d = 0;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < N * S; k += int64_t(blockDim.x) * gridDim.x) {
    const int64_t n = k / S, i = k - n * S;
    const T* row = x + n * C * S + i;
    const T l = logsumexp(row, C, S);
    lse[k] = l;
    const int64_t t = target[k];
    if (t == ignore) {
      if (elem) elem[k] = T(0);
      continue;
    }
    if (t < 0 || t >= C) {
      note_bad(bad, k);
      continue;
    }
    const double wt = w ? double(w[t]) : 1.0;
    double loss = (1.0 - ls) * wt * (double(l) - double(row[t * S]));
    if (ls > 0) {
      double weighted = 0, W = 0;
      for (int64_t c = 0; c < C; ++c) {
        const double wc = w ? double(w[c]) : 1.0;
        weighted += wc * double(row[c * S]);
        W += wc;
      }
      loss += ls / double(C) * (W * double(l) - weighted);
    }
    if (elem) elem[k] = T(loss);
    s += loss;
    d += wt;
  }
  commit(s, d, acc, true);
}

template <class T>
__global__ void ce_bwd_kernel(LossGrad g, const T* __restrict__ x, const int64_t* __restrict__ target,
                              const T* __restrict__ w, const T* __restrict__ lse, T* __restrict__ gx, int64_t N,
                              int64_t C, int64_t S, int64_t ignore, double ls) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < N * S; k += int64_t(blockDim.x) * gridDim.x) {
    const int64_t n = k / S, i = k - n * S;
    const T* row = x + n * C * S + i;
    T* out = gx + n * C * S + i;
    const int64_t t = target[k];
    if (t == ignore || t < 0 || t >= C) {
      for (int64_t c = 0; c < C; ++c) out[c * S] = T(0);
      continue;
    }
    const double gv = double(upstream<T>(g, k));
    const double wt = w ? double(w[t]) : 1.0;
    double W = double(C);  // the summed class weights of the smoothing term
    if (w && ls > 0) {
      W = 0;
      for (int64_t c = 0; c < C; ++c) W += double(w[c]);
    }
    const T scale = T(gv * ((1.0 - ls) * wt + ls / double(C) * W));
    const T off = T(gv * ls / double(C));
    const T l = lse[k];
    for (int64_t c = 0; c < C; ++c) out[c * S] = scale * exp(row[c * S] - l) - (w ? w[c] : T(1)) * off;
    out[t * S] -= T(gv * (1.0 - ls) * wt);
  }
}

// loss = sum_c w_c q'_c (lse - x_c), q' = (1 - eps) q + eps / C.
template <class T>
__global__ void ce_prob_fwd_kernel(const T* __restrict__ x, const T* __restrict__ q, const T* __restrict__ w,
                                   T* __restrict__ elem, T* __restrict__ lse, int64_t N, int64_t C, int64_t S,
                                   double ls, double* acc) {
  double s = 0;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < N * S; k += int64_t(blockDim.x) * gridDim.x) {
    const int64_t n = k / S, i = k - n * S, off = n * C * S + i;
    const T l = logsumexp(x + off, C, S);
    lse[k] = l;
    double loss = 0;
    for (int64_t c = 0; c < C; ++c) {
      const double qc = (1.0 - ls) * double(q[off + c * S]) + ls / double(C);
      loss += (w ? double(w[c]) : 1.0) * qc * (double(l) - double(x[off + c * S]));
    }
    if (elem) elem[k] = T(loss);
    s += loss;
  }
  commit(s, 0, acc, false);
}

template <class T>
__global__ void ce_prob_bwd_kernel(LossGrad g, const T* __restrict__ x, const T* __restrict__ q,
                                   const T* __restrict__ w, const T* __restrict__ lse, T* __restrict__ gx, int64_t N,
                                   int64_t C, int64_t S, double ls) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < N * S; k += int64_t(blockDim.x) * gridDim.x) {
    const int64_t n = k / S, i = k - n * S, off = n * C * S + i;
    const double gv = double(upstream<T>(g, k));
    double swq = 0;
    for (int64_t c = 0; c < C; ++c)
      swq += (w ? double(w[c]) : 1.0) * ((1.0 - ls) * double(q[off + c * S]) + ls / double(C));
    for (int64_t c = 0; c < C; ++c) {
      const double wq = (w ? double(w[c]) : 1.0) * ((1.0 - ls) * double(q[off + c * S]) + ls / double(C));
      gx[off + c * S] = T(gv * (exp(double(x[off + c * S]) - double(lse[k])) * swq - wq));
    }
  }
}

template <class T>
__global__ void nll_fwd_kernel(const T* __restrict__ x, const int64_t* __restrict__ target, const T* __restrict__ w,
                               T* __restrict__ elem, int64_t N, int64_t C, int64_t S, int64_t ignore, double* acc,
                               unsigned long long* bad) {
  double s = 0, d = 0;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < N * S; k += int64_t(blockDim.x) * gridDim.x) {
    const int64_t n = k / S, i = k - n * S, t = target[k];
    if (t == ignore) {
      if (elem) elem[k] = T(0);
      continue;
    }
    if (t < 0 || t >= C) {
      note_bad(bad, k);
      continue;
    }
    const double wt = w ? double(w[t]) : 1.0;
    const double l = -wt * double(x[(n * C + t) * S + i]);
    if (elem) elem[k] = T(l);
    s += l;
    d += wt;
  }
  commit(s, d, acc, true);
}

// One thread per element of grad_x: -g * w[t] at the target class, 0 elsewhere.
template <class T>
__global__ void nll_bwd_kernel(LossGrad g, const int64_t* __restrict__ target, const T* __restrict__ w,
                               T* __restrict__ gx, int64_t N, int64_t C, int64_t S, int64_t ignore) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < N * C * S; e += int64_t(blockDim.x) * gridDim.x) {
    const int64_t i = e % S, nc = e / S, c = nc % C, n = nc / C, k = n * S + i, t = target[k];
    gx[e] = (t == c && t != ignore) ? T(-double(upstream<T>(g, k)) * (w ? double(w[t]) : 1.0)) : T(0);
  }
}

template <class T>
__global__ void denom_kernel(const int64_t* __restrict__ target, const T* __restrict__ w, int64_t samples, int64_t C,
                             int64_t ignore, double* acc, unsigned long long* bad) {
  double d = 0;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < samples;
       k += int64_t(blockDim.x) * gridDim.x) {
    const int64_t t = target[k];
    if (t == ignore) continue;
    if (t < 0 || t >= C) {
      note_bad(bad, k);
      continue;
    }
    d += w ? double(w[t]) : 1.0;
  }
  commit(0, d, acc, true);
}

template <class T>
__device__ __forceinline__ T softplus(T v) {
  return log1p(exp(-fabs(v))) + (v > T(0) ? v : T(0));
}

template <class T>
__global__ void bce_fwd_kernel(bool logits, const T* __restrict__ x, const T* __restrict__ t, const T* __restrict__ w,
                               int64_t wn, const T* __restrict__ pw, int64_t pn, T* __restrict__ elem, int64_t n,
                               double* acc, unsigned long long* bad) {
  double s = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    T l;
    if (logits) {
      const T lw = pw ? T(1) + (pw[i % pn] - T(1)) * t[i] : T(1);
      l = (T(1) - t[i]) * x[i] + lw * softplus(-x[i]);
    } else {
      if (!(x[i] >= T(0) && x[i] <= T(1))) note_bad(bad, i);
      const T lx = max(log(x[i]), T(-100)), l1x = max(log1p(-x[i]), T(-100));
      l = -(t[i] * lx + (T(1) - t[i]) * l1x);
    }
    if (w) l *= w[i % wn];
    if (elem) elem[i] = l;
    s += double(l);
  }
  commit(s, 0, acc, false);
}

template <class T>
__global__ void bce_bwd_kernel(bool logits, LossGrad g, const T* __restrict__ x, const T* __restrict__ t,
                               const T* __restrict__ w, int64_t wn, const T* __restrict__ pw, int64_t pn,
                               T* __restrict__ gx, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    T d;
    if (logits) {
      const T p = pw ? pw[i % pn] : T(1);
      const T lw = T(1) + (p - T(1)) * t[i];
      const T sg = T(1) / (T(1) + exp(-x[i]));
      d = lw * sg - p * t[i];
    } else {
      d = (x[i] - t[i]) / max((T(1) - x[i]) * x[i], T(1e-12));
    }
    if (w) d *= w[i % wn];
    gx[i] = upstream<T>(g, i) * d;
  }
}

template <class T>
__global__ void mm_fwd_kernel(const T* __restrict__ x, const int64_t* __restrict__ target, const T* __restrict__ w,
                              T* __restrict__ elem, int64_t N, int64_t C, int p, T m, double* acc,
                              unsigned long long* bad) {
  double s = 0;
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < N; n += int64_t(blockDim.x) * gridDim.x) {
    const T* row = x + n * C;
    const int64_t y = target[n];
    if (y < 0 || y >= C) {
      note_bad(bad, n);
      continue;
    }
    double l = 0;
    for (int64_t c = 0; c < C; ++c) {
      if (c == y) continue;
      const T h = m - row[y] + row[c];
      if (h > 0) l += p == 1 ? double(h) : double(h) * double(h);
    }
    l = l * (w ? double(w[y]) : 1.0) / double(C);
    if (elem) elem[n] = T(l);
    s += l;
  }
  commit(s, 0, acc, false);
}

template <class T>
__global__ void mm_bwd_kernel(LossGrad g, const T* __restrict__ x, const int64_t* __restrict__ target,
                              const T* __restrict__ w, T* __restrict__ gx, int64_t N, int64_t C, int p, T m) {
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < N; n += int64_t(blockDim.x) * gridDim.x) {
    const T* row = x + n * C;
    T* out = gx + n * C;
    const int64_t y = target[n];
    if (y < 0 || y >= C) {
      for (int64_t c = 0; c < C; ++c) out[c] = T(0);
      continue;
    }
    const double gv = double(upstream<T>(g, n)) * (w ? double(w[y]) : 1.0) / double(C);
    double gyv = 0;
    for (int64_t c = 0; c < C; ++c) {
      out[c] = T(0);
      if (c == y) continue;
      const T h = m - row[y] + row[c];
      if (h > 0) {
        const double d = gv * (p == 1 ? 1.0 : 2.0 * double(h));
        out[c] = T(d);
        gyv -= d;
      }
    }
    out[y] = T(gyv);
  }
}

// ||u - v + eps||_p over D values.
template <class T>
__device__ double pdist(const T* u, const T* v, int64_t D, double p, double eps) {
  double s = 0;
  for (int64_t j = 0; j < D; ++j) {
    const double d = fabs(double(u[j]) - double(v[j]) + eps);
    s += p == 2.0 ? d * d : (p == 1.0 ? d : pow(d, p));
  }
  return p == 2.0 ? sqrt(s) : (p == 1.0 ? s : pow(s, 1.0 / p));
}

// Adds g * d||u - v + eps||_p / du to gu and its negative to gv.
template <class T>
__device__ void pdist_grad(const T* u, const T* v, int64_t D, double p, double eps, double norm, double g, T* gu,
                           T* gv) {
  if (norm == 0) return;  // the subgradient 0, as torch's norm backward
  const double scale = g / pow(norm, p - 1.0);
  for (int64_t j = 0; j < D; ++j) {
    const double d = double(u[j]) - double(v[j]) + eps;
    const double sgn = (d > 0) - (d < 0);
    const double gj = scale * (p == 2.0 ? d : sgn * pow(fabs(d), p - 1.0));
    gu[j] += T(gj);
    gv[j] -= T(gj);
  }
}

template <class T>
__global__ void tm_fwd_kernel(const T* __restrict__ a, const T* __restrict__ pos, const T* __restrict__ neg,
                              T* __restrict__ elem, int64_t N, int64_t D, double margin, double p, double eps,
                              bool swap, double* acc) {
  double s = 0;
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < N; n += int64_t(blockDim.x) * gridDim.x) {
    const T *ar = a + n * D, *pr = pos + n * D, *nr = neg + n * D;
    double dn = pdist(ar, nr, D, p, eps);
    if (swap) dn = fmin(dn, pdist(pr, nr, D, p, eps));
    const double l = fmax(pdist(ar, pr, D, p, eps) - dn + margin, 0.0);
    if (elem) elem[n] = T(l);
    s += l;
  }
  commit(s, 0, acc, false);
}

template <class T>
__global__ void tm_bwd_kernel(LossGrad g, const T* __restrict__ a, const T* __restrict__ pos, const T* __restrict__ neg,
                              T* __restrict__ ga, T* __restrict__ gp, T* __restrict__ gn, int64_t N, int64_t D,
                              double margin, double p, double eps, bool swap) {
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < N; n += int64_t(blockDim.x) * gridDim.x) {
    const T *ar = a + n * D, *pr = pos + n * D, *nr = neg + n * D;
    T *gar = ga + n * D, *gpr = gp + n * D, *gnr = gn + n * D;
    for (int64_t j = 0; j < D; ++j) gar[j] = gpr[j] = gnr[j] = T(0);
    const double dap = pdist(ar, pr, D, p, eps), dan = pdist(ar, nr, D, p, eps);
    const double dpn = swap ? pdist(pr, nr, D, p, eps) : dan;
    const bool use_pn = swap && dpn < dan;
    const double dneg = use_pn ? dpn : dan;
    if (dap - dneg + margin < 0) continue;  // clamp_min passes the gradient where its argument is >= 0
    const double gv = double(upstream<T>(g, n));
    pdist_grad(ar, pr, D, p, eps, dap, gv, gar, gpr);
    if (use_pn)
      pdist_grad(pr, nr, D, p, eps, dpn, -gv, gpr, gnr);
    else
      pdist_grad(ar, nr, D, p, eps, dan, -gv, gar, gnr);
  }
}

template <class T>
__global__ void finalize_kernel(const double* acc, const double* denom_dev, double denom_host, T* out) {
  out[0] = T(acc[0] / (denom_dev ? *denom_dev : denom_host));
}

// Reduction kernels: enough blocks to fill the GPU, each ending in one atomic add.
unsigned reduce_blocks(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 1024 ? (b > 0 ? b : 1) : 1024);
}

}  // namespace

template <class T>
void loss_finalize(const double* acc, const double* denom_dev, double denom_host, T* out) {
  finalize_kernel<T><<<1, 1, 0, current_stream()>>>(acc, denom_dev, denom_host, out);
  check_launch("finalize_kernel");
}

template <class T>
void pointwise_loss_forward(Pointwise kind, const T* x, const T* t, T* elem, int64_t n, double param, double* acc) {
  if (n == 0) return;
  pointwise_fwd_kernel<T><<<reduce_blocks(n), kThreads, 0, current_stream()>>>(kind, x, t, elem, n, T(param), acc);
  check_launch("pointwise_fwd_kernel");
}

template <class T>
void pointwise_loss_backward(Pointwise kind, const LossGrad& g, const T* x, const T* t, T* gx, int64_t n,
                             double param) {
  if (n == 0) return;
  pointwise_bwd_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, current_stream()>>>(kind, g, x, t, gx, n, T(param));
  check_launch("pointwise_bwd_kernel");
}

template <class T>
void cross_entropy_forward(const T* x, const int64_t* target, const T* w, T* elem, T* lse, int64_t N, int64_t C,
                           int64_t S, int64_t ignore, double ls, double* acc, unsigned long long* bad) {
  if (N * S == 0) return;
  ce_fwd_kernel<T><<<reduce_blocks(N * S), kThreads, 0, current_stream()>>>(x, target, w, elem, lse, N, C, S, ignore,
                                                                            ls, acc, bad);
  check_launch("ce_fwd_kernel");
}

template <class T>
void cross_entropy_backward(const LossGrad& g, const T* x, const int64_t* target, const T* w, const T* lse, T* gx,
                            int64_t N, int64_t C, int64_t S, int64_t ignore, double ls) {
  if (N * S == 0) return;
  ce_bwd_kernel<T><<<blocks_for(N * S, kThreads), kThreads, 0, current_stream()>>>(g, x, target, w, lse, gx, N, C, S,
                                                                                   ignore, ls);
  check_launch("ce_bwd_kernel");
}

template <class T>
void cross_entropy_prob_forward(const T* x, const T* q, const T* w, T* elem, T* lse, int64_t N, int64_t C, int64_t S,
                                double ls, double* acc) {
  if (N * S == 0) return;
  ce_prob_fwd_kernel<T><<<reduce_blocks(N * S), kThreads, 0, current_stream()>>>(x, q, w, elem, lse, N, C, S, ls,
                                                                                 acc);
  check_launch("ce_prob_fwd_kernel");
}

template <class T>
void cross_entropy_prob_backward(const LossGrad& g, const T* x, const T* q, const T* w, const T* lse, T* gx, int64_t N,
                                 int64_t C, int64_t S, double ls) {
  if (N * S == 0) return;
  ce_prob_bwd_kernel<T><<<blocks_for(N * S, kThreads), kThreads, 0, current_stream()>>>(g, x, q, w, lse, gx, N, C, S,
                                                                                        ls);
  check_launch("ce_prob_bwd_kernel");
}

template <class T>
void nll_loss_forward(const T* x, const int64_t* target, const T* w, T* elem, int64_t N, int64_t C, int64_t S,
                      int64_t ignore, double* acc, unsigned long long* bad) {
  if (N * S == 0) return;
  nll_fwd_kernel<T><<<reduce_blocks(N * S), kThreads, 0, current_stream()>>>(x, target, w, elem, N, C, S, ignore, acc,
                                                                             bad);
  check_launch("nll_fwd_kernel");
}

template <class T>
void nll_loss_backward(const LossGrad& g, const int64_t* target, const T* w, T* gx, int64_t N, int64_t C, int64_t S,
                       int64_t ignore) {
  if (N * C * S == 0) return;
  nll_bwd_kernel<T><<<blocks_for(N * C * S, kThreads), kThreads, 0, current_stream()>>>(g, target, w, gx, N, C, S,
                                                                                        ignore);
  check_launch("nll_bwd_kernel");
}

template <class T>
void index_target_denominator(const int64_t* target, const T* w, int64_t samples, int64_t C, int64_t ignore,
                              double* acc, unsigned long long* bad) {
  if (samples == 0) return;
  denom_kernel<T><<<reduce_blocks(samples), kThreads, 0, current_stream()>>>(target, w, samples, C, ignore, acc, bad);
  check_launch("denom_kernel");
}

template <class T>
void bce_forward(bool logits, const T* x, const T* t, const T* w, int64_t wn, const T* pw, int64_t pn, T* elem,
                 int64_t n, double* acc, unsigned long long* bad) {
  if (n == 0) return;
  bce_fwd_kernel<T><<<reduce_blocks(n), kThreads, 0, current_stream()>>>(logits, x, t, w, wn, pw, pn, elem, n, acc,
                                                                         bad);
  check_launch("bce_fwd_kernel");
}

template <class T>
void bce_backward(bool logits, const LossGrad& g, const T* x, const T* t, const T* w, int64_t wn, const T* pw,
                  int64_t pn, T* gx, int64_t n) {
  if (n == 0) return;
  bce_bwd_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, current_stream()>>>(logits, g, x, t, w, wn, pw, pn, gx, n);
  check_launch("bce_bwd_kernel");
}

template <class T>
void multi_margin_forward(const T* x, const int64_t* target, const T* w, T* elem, int64_t N, int64_t C, int p,
                          double margin, double* acc, unsigned long long* bad) {
  if (N == 0) return;
  mm_fwd_kernel<T><<<reduce_blocks(N), kThreads, 0, current_stream()>>>(x, target, w, elem, N, C, p, T(margin), acc,
                                                                        bad);
  check_launch("mm_fwd_kernel");
}

template <class T>
void multi_margin_backward(const LossGrad& g, const T* x, const int64_t* target, const T* w, T* gx, int64_t N,
                           int64_t C, int p, double margin) {
  if (N == 0) return;
  mm_bwd_kernel<T><<<blocks_for(N, kThreads), kThreads, 0, current_stream()>>>(g, x, target, w, gx, N, C, p,
                                                                               T(margin));
  check_launch("mm_bwd_kernel");
}

template <class T>
void triplet_margin_forward(const T* a, const T* pos, const T* neg, T* elem, int64_t N, int64_t D, double margin,
                            double p, double eps, bool swap, double* acc) {
  if (N == 0) return;
  tm_fwd_kernel<T><<<reduce_blocks(N), kThreads, 0, current_stream()>>>(a, pos, neg, elem, N, D, margin, p, eps, swap,
                                                                        acc);
  check_launch("tm_fwd_kernel");
}

template <class T>
void triplet_margin_backward(const LossGrad& g, const T* a, const T* pos, const T* neg, T* ga, T* gp, T* gn,
                             int64_t N, int64_t D, double margin, double p, double eps, bool swap) {
  if (N == 0) return;
  tm_bwd_kernel<T><<<blocks_for(N, kThreads), kThreads, 0, current_stream()>>>(g, a, pos, neg, ga, gp, gn, N, D,
                                                                               margin, p, eps, swap);
  check_launch("tm_bwd_kernel");
}

#define CNNFAST_INSTANTIATE(T)                                                                                     \
  template void loss_finalize<T>(const double*, const double*, double, T*);                                        \
  template void pointwise_loss_forward<T>(Pointwise, const T*, const T*, T*, int64_t, double, double*);            \
  template void pointwise_loss_backward<T>(Pointwise, const LossGrad&, const T*, const T*, T*, int64_t, double);   \
  template void cross_entropy_forward<T>(const T*, const int64_t*, const T*, T*, T*, int64_t, int64_t, int64_t,    \
                                         int64_t, double, double*, unsigned long long*);                           \
  template void cross_entropy_backward<T>(const LossGrad&, const T*, const int64_t*, const T*, const T*, T*,       \
                                          int64_t, int64_t, int64_t, int64_t, double);                             \
  template void cross_entropy_prob_forward<T>(const T*, const T*, const T*, T*, T*, int64_t, int64_t, int64_t,  \
                                              double, double*);                                                    \
  template void cross_entropy_prob_backward<T>(const LossGrad&, const T*, const T*, const T*, const T*, T*,       \
                                               int64_t, int64_t, int64_t, double);                                 \
  template void nll_loss_forward<T>(const T*, const int64_t*, const T*, T*, int64_t, int64_t, int64_t, int64_t,    \
                                    double*, unsigned long long*);                                                 \
  template void nll_loss_backward<T>(const LossGrad&, const int64_t*, const T*, T*, int64_t, int64_t, int64_t,     \
                                     int64_t);                                                                     \
  template void index_target_denominator<T>(const int64_t*, const T*, int64_t, int64_t, int64_t, double*,         \
                                            unsigned long long*);                                                  \
  template void bce_forward<T>(bool, const T*, const T*, const T*, int64_t, const T*, int64_t, T*, int64_t,        \
                               double*, unsigned long long*);                                                      \
  template void bce_backward<T>(bool, const LossGrad&, const T*, const T*, const T*, int64_t, const T*, int64_t,   \
                                T*, int64_t);                                                                      \
  template void multi_margin_forward<T>(const T*, const int64_t*, const T*, T*, int64_t, int64_t, int, double,    \
                                        double*, unsigned long long*);                                             \
  template void multi_margin_backward<T>(const LossGrad&, const T*, const int64_t*, const T*, T*, int64_t,        \
                                         int64_t, int, double);                                                    \
  template void triplet_margin_forward<T>(const T*, const T*, const T*, T*, int64_t, int64_t, double, double,     \
                                          double, bool, double*);                                                  \
  template void triplet_margin_backward<T>(const LossGrad&, const T*, const T*, const T*, T*, T*, T*, int64_t,    \
                                           int64_t, double, double, double, bool);
CNNFAST_INSTANTIATE(float)
CNNFAST_INSTANTIATE(double)
#undef CNNFAST_INSTANTIATE

}  // namespace cnnfast::cuda
