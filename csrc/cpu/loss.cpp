// Loss kernels: scalar reference for float32 and float64 (the oracle in tests and
// the path without AVX2), dispatch to the AVX2 float32 kernels for the hot loops
// (pointwise regression losses; cross-entropy rows over classes), and threading.
//
// Numerics: cross-entropy goes through the log-sum-exp with the row maximum
// subtracted; BCE with logits uses softplus(-x) = log1p(exp(-|x|)) + max(-x, 0);
// BCE on probabilities clamps its logs at -100 and divides its gradient by
// max(x (1 - x), 1e-12), as PyTorch. NaN logits propagate to the loss and the
// gradient; a -inf logit for a non-target class contributes exp(-inf) = 0.
#include "cpu/loss.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/cpu_features.h"
#include "core/simd.h"
#include "core/parallel.h"

namespace cnnfast::cpu {
namespace {

// Sum of f(begin, end) over fixed blocks of `block` items, added in block order:
// the same result for every thread count.
template <class F>
double blocked_reduce(int64_t n, int64_t block, F f) {
  const int64_t nb = (n + block - 1) / block;
  std::vector<double> part(nb);
  parallel_for(0, nb, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) part[i] = f(i * block, std::min(n, (i + 1) * block));
  });
  double s = 0;
  for (double p : part) s += p;
  return s;
}

constexpr int64_t kBlock = 1 << 14;

template <class T>
T softplus(T v) {  // log(1 + e^v) without overflow
  return std::log1p(std::exp(-std::abs(v))) + std::max(v, T(0));
}

// ---- pointwise regression losses -----------------------------------------------

template <class T>
T pointwise_value(Pointwise kind, T d, T param) {
  const T a = std::abs(d);
  switch (kind) {
    case Pointwise::L1:
      return a;
    case Pointwise::MSE:
      return d * d;
    case Pointwise::Huber:
      return a < param ? T(0.5) * d * d : param * (a - T(0.5) * param);
    case Pointwise::SmoothL1:
      if (param == T(0)) return a;
      return a < param ? T(0.5) * d * d / param : a - T(0.5) * param;
  }
  return T(0);
}

template <class T>
T sign_of(T d) {
  // NaN compares false both ways and gives 0, as torch.sign.
  return T((d > 0) - (d < 0));
}

template <class T>
T pointwise_deriv(Pointwise kind, T d, T param) {
  switch (kind) {
    case Pointwise::L1:
      return sign_of(d);
    case Pointwise::MSE:
      return T(2) * d;
    case Pointwise::Huber:
      return d <= -param ? -param : (d >= param ? param : d);
    case Pointwise::SmoothL1:
      if (param == T(0)) return sign_of(d);
      return d <= -param ? T(-1) : (d >= param ? T(1) : d / param);
  }
  return T(0);
}

// Log-sum-exp of dim values spaced stride apart: the max is subtracted first;
// NaN anywhere gives NaN, all -inf gives -inf.
template <class T>
T logsumexp(const T* x, int64_t dim, int64_t stride) {
  T mx = -std::numeric_limits<T>::infinity();
  for (int64_t k = 0; k < dim; ++k) {
    const T v = x[k * stride];
    if (std::isnan(v)) return v;
    mx = std::max(mx, v);
  }
  if (std::isinf(mx)) return mx;
  T s = 0;
  for (int64_t k = 0; k < dim; ++k) s += std::exp(x[k * stride] - mx);
  return mx + std::log(s);
}

}  // namespace

template <class T>
double pointwise_loss_forward(Pointwise kind, const T* x, const T* t, T* elem, int64_t n, double param) {
  const bool vec = is_f32<T> && use_avx2();
  const T p = static_cast<T>(param);
  return blocked_reduce(n, kBlock, [&](int64_t b, int64_t e) {
    if constexpr (is_f32<T>) {
      if (vec) return (use_avx512() ? avx512_impl::pointwise_forward : avx2_impl::pointwise_forward)(kind, x + b, t + b, elem ? elem + b : nullptr, e - b, p);
    }
    double s = 0;
    for (int64_t i = b; i < e; ++i) {
      const T v = pointwise_value(kind, x[i] - t[i], p);
      if (elem) elem[i] = v;
      s += v;
    }
    return s;
  });
}

template <class T>
void pointwise_loss_backward(Pointwise kind, const T* ge, double gs, const T* x, const T* t, T* gx, int64_t n,
                             double param) {
  const bool vec = is_f32<T> && use_avx2();
  const T p = static_cast<T>(param), g = static_cast<T>(gs);
  parallel_for(0, n, kBlock, [&](int64_t b, int64_t e) {
    if constexpr (is_f32<T>) {
      if (vec) return (use_avx512() ? avx512_impl::pointwise_backward : avx2_impl::pointwise_backward)(kind, ge ? ge + b : nullptr, g, x + b, t + b, gx + b, e - b, p);
    }
    for (int64_t i = b; i < e; ++i) gx[i] = (ge ? ge[i] : g) * pointwise_deriv(kind, x[i] - t[i], p);
  });
}

// ---- cross-entropy with class indices ------------------------------------------

namespace {
// Samples per reduction block: about kBlock logits per block.
inline int64_t rows_per_block(int64_t C, int64_t S) {
  return std::max<int64_t>(1, kBlock / std::max<int64_t>(1, C * S));
}

// sum_c x[c*stride] and sum_c w[c] x[c*stride] (w null: the plain sum twice).
template <class T>
void class_sums(const T* x, const T* w, int64_t C, int64_t stride, bool vec, double* plain, double* weighted) {
  if constexpr (is_f32<T>) {
    if (vec && stride == 1) return (use_avx512() ? avx512_impl::row_sums : avx2_impl::row_sums)(x, w, C, plain, weighted);
  }
  double a = 0, b = 0;
  for (int64_t c = 0; c < C; ++c) {
    a += x[c * stride];
    b += (w ? double(w[c]) : 1.0) * double(x[c * stride]);
  }
  *plain = a;
  *weighted = b;
}
}  // namespace

template <class T>
double cross_entropy_forward(const T* x, const int64_t* target, const T* weight, T* elem, T* lse, int64_t N, int64_t C,
                             int64_t S, int64_t ignore_index, double eps_ls, double* denom) {
  const bool vec = is_f32<T> && use_avx2();
  double W = 0;  // the summed class weights, for the smoothing term
  for (int64_t c = 0; c < C; ++c) W += weight ? double(weight[c]) : 1.0;
  const int64_t rb = rows_per_block(C, S);
  // Each block reports its loss sum; the denominators go to a per-block array
  // so both reductions share one pass.
  const int64_t nb = (N + rb - 1) / rb;
  std::vector<double> dpart(nb);
  double total = blocked_reduce(N, rb, [&](int64_t n0, int64_t n1) {
    double s = 0, d = 0;
    for (int64_t n = n0; n < n1; ++n) {
      for (int64_t i = 0; i < S; ++i) {
        const T* row = x + n * C * S + i;
        const int64_t k = n * S + i, t = target[k];
        T l;
        if constexpr (is_f32<T>) {
          l = (vec && S == 1) ? (use_avx512() ? avx512_impl::row_logsumexp : avx2_impl::row_logsumexp)(row, C) : logsumexp(row, C, S);
        } else {
          l = logsumexp(row, C, S);
        }
        lse[k] = l;
        if (t == ignore_index) {
          if (elem) elem[k] = 0;
          continue;
        }
        const double wt = weight ? double(weight[t]) : 1.0;
        double loss = (1.0 - eps_ls) * wt * (double(l) - double(row[t * S]));
        if (eps_ls > 0) {
          double plain, weighted;
          class_sums(row, weight, C, S, vec, &plain, &weighted);
          loss += eps_ls / double(C) * (W * double(l) - weighted);
        }
        if (elem) elem[k] = static_cast<T>(loss);
        s += loss;
        d += wt;
      }
    }
    dpart[n0 / rb] = d;
    return s;
  });
  double d = 0;
  for (double v : dpart) d += v;
  *denom = d;
  return total;
}

template <class T>
void cross_entropy_backward(const T* ge, double gs, const T* x, const int64_t* target, const T* weight, const T* lse,
                            T* gx, int64_t N, int64_t C, int64_t S, int64_t ignore_index, double eps_ls) {
  const bool vec = is_f32<T> && use_avx2();
  double W = 0;
  for (int64_t c = 0; c < C; ++c) W += weight ? double(weight[c]) : 1.0;
  parallel_for(0, N, rows_per_block(C, S), [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      for (int64_t i = 0; i < S; ++i) {
        const int64_t k = n * S + i, t = target[k];
        const T* row = x + n * C * S + i;
        T* out = gx + n * C * S + i;
        if (t == ignore_index) {
          for (int64_t c = 0; c < C; ++c) out[c * S] = 0;
          continue;
        }
        const double g = ge ? double(ge[k]) : gs;
        const double wt = weight ? double(weight[t]) : 1.0;
        // d loss / d x_c = p_c ((1-eps) w_t + eps/C W) - eps/C w_c - (1-eps) w_t [c == t]
        const T scale = static_cast<T>(g * ((1.0 - eps_ls) * wt + eps_ls / double(C) * W));
        const T off = static_cast<T>(g * eps_ls / double(C));
        const T l = lse[k];
        bool done = false;
        if constexpr (is_f32<T>) {
          if (vec && S == 1) {
            (use_avx512() ? avx512_impl::ce_row_grad : avx2_impl::ce_row_grad)(row, weight, out, C, l, scale, off);
            done = true;
          }
        }
        if (!done)
          for (int64_t c = 0; c < C; ++c)
            out[c * S] = scale * std::exp(row[c * S] - l) - (weight ? weight[c] : T(1)) * off;
        out[t * S] -= static_cast<T>(g * (1.0 - eps_ls) * wt);
      }
    }
  });
}

// ---- cross-entropy with class probabilities ---------------------------------------

template <class T>
double cross_entropy_prob_forward(const T* x, const T* target, const T* weight, T* elem, T* lse, int64_t N, int64_t C,
                                  int64_t S, double eps_ls) {
  const bool vec = is_f32<T> && use_avx2();
  return blocked_reduce(N, rows_per_block(C, S), [&](int64_t n0, int64_t n1) {
    double s = 0;
    for (int64_t n = n0; n < n1; ++n) {
      for (int64_t i = 0; i < S; ++i) {
        const T* row = x + n * C * S + i;
        const T* q = target + n * C * S + i;
        const int64_t k = n * S + i;
        T l;
        if constexpr (is_f32<T>) {
          l = (vec && S == 1) ? (use_avx512() ? avx512_impl::row_logsumexp : avx2_impl::row_logsumexp)(row, C) : logsumexp(row, C, S);
        } else {
          l = logsumexp(row, C, S);
        }
        lse[k] = l;
        // loss = sum_c w_c q'_c (lse - x_c), q' = (1-eps) q + eps/C
        double loss = 0;
        for (int64_t c = 0; c < C; ++c) {
          const double qc = (1.0 - eps_ls) * double(q[c * S]) + eps_ls / double(C);
          loss += (weight ? double(weight[c]) : 1.0) * qc * (double(l) - double(row[c * S]));
        }
        if (elem) elem[k] = static_cast<T>(loss);
        s += loss;
      }
    }
    return s;
  });
}

template <class T>
void cross_entropy_prob_backward(const T* ge, double gs, const T* x, const T* target, const T* weight, const T* lse,
                                 T* gx, int64_t N, int64_t C, int64_t S, double eps_ls) {
  parallel_for(0, N, rows_per_block(C, S), [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      for (int64_t i = 0; i < S; ++i) {
        const T* row = x + n * C * S + i;
        const T* q = target + n * C * S + i;
        T* out = gx + n * C * S + i;
        const int64_t k = n * S + i;
        const double g = ge ? double(ge[k]) : gs;
        // w_c q'_c with q' = (1 - eps) q + eps / C, the smoothed target.
        auto wq_of = [&](int64_t c) {
          return (weight ? double(weight[c]) : 1.0) * ((1.0 - eps_ls) * double(q[c * S]) + eps_ls / double(C));
        };
        double swq = 0;
        for (int64_t c = 0; c < C; ++c) swq += wq_of(c);
        for (int64_t c = 0; c < C; ++c) {
          const double wq = wq_of(c);
          out[c * S] = static_cast<T>(g * (std::exp(double(row[c * S]) - double(lse[k])) * swq - wq));
        }
      }
    }
  });
}

// ---- NLL ------------------------------------------------------------------------

template <class T>
double nll_loss_forward(const T* x, const int64_t* target, const T* weight, T* elem, int64_t N, int64_t C, int64_t S,
                        int64_t ignore_index, double* denom) {
  double s = 0, d = 0;
  // One gather per sample: too little work to be worth threads.
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t i = 0; i < S; ++i) {
      const int64_t k = n * S + i, t = target[k];
      if (t == ignore_index) {
        if (elem) elem[k] = 0;
        continue;
      }
      const double wt = weight ? double(weight[t]) : 1.0;
      const double l = -wt * double(x[(n * C + t) * S + i]);
      if (elem) elem[k] = static_cast<T>(l);
      s += l;
      d += wt;
    }
  }
  *denom = d;
  return s;
}

template <class T>
void nll_loss_backward(const T* ge, double gs, const int64_t* target, const T* weight, T* gx, int64_t N, int64_t C,
                       int64_t S, int64_t ignore_index) {
  std::fill(gx, gx + N * C * S, T(0));
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t i = 0; i < S; ++i) {
      const int64_t k = n * S + i, t = target[k];
      if (t == ignore_index) continue;
      const double g = ge ? double(ge[k]) : gs;
      gx[(n * C + t) * S + i] = static_cast<T>(-g * (weight ? double(weight[t]) : 1.0));
    }
  }
}

// ---- binary cross-entropy ------------------------------------------------------

template <class T>
double bce_logits_forward(const T* x, const T* t, const T* weight, int64_t wn, const T* pos_weight, int64_t pn,
                          T* elem, int64_t n) {
  return blocked_reduce(n, kBlock, [&](int64_t b, int64_t e) {
    double s = 0;
    for (int64_t i = b; i < e; ++i) {
      const T lw = pos_weight ? T(1) + (pos_weight[i % pn] - T(1)) * t[i] : T(1);
      T l = (T(1) - t[i]) * x[i] + lw * softplus(-x[i]);
      if (weight) l *= weight[i % wn];
      if (elem) elem[i] = l;
      s += l;
    }
    return s;
  });
}

template <class T>
void bce_logits_backward(const T* ge, double gs, const T* x, const T* t, const T* weight, int64_t wn,
                         const T* pos_weight, int64_t pn, T* gx, int64_t n) {
  const T g0 = static_cast<T>(gs);
  parallel_for(0, n, kBlock, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const T pw = pos_weight ? pos_weight[i % pn] : T(1);
      const T lw = T(1) + (pw - T(1)) * t[i];
      const T sg = T(1) / (T(1) + std::exp(-x[i]));
      T d = lw * sg - pw * t[i];
      if (weight) d *= weight[i % wn];
      gx[i] = (ge ? ge[i] : g0) * d;
    }
  });
}

template <class T>
double bce_forward(const T* x, const T* t, const T* weight, int64_t wn, T* elem, int64_t n) {
  return blocked_reduce(n, kBlock, [&](int64_t b, int64_t e) {
    double s = 0;
    for (int64_t i = b; i < e; ++i) {
      const T lx = std::max(std::log(x[i]), T(-100)), l1x = std::max(std::log1p(-x[i]), T(-100));
      T l = -(t[i] * lx + (T(1) - t[i]) * l1x);
      if (weight) l *= weight[i % wn];
      if (elem) elem[i] = l;
      s += l;
    }
    return s;
  });
}

template <class T>
void bce_backward(const T* ge, double gs, const T* x, const T* t, const T* weight, int64_t wn, T* gx, int64_t n) {
  const T g0 = static_cast<T>(gs);
  parallel_for(0, n, kBlock, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      T d = (x[i] - t[i]) / std::max((T(1) - x[i]) * x[i], T(1e-12));
      if (weight) d *= weight[i % wn];
      gx[i] = (ge ? ge[i] : g0) * d;
    }
  });
}

// ---- multi-class hinge -----------------------------------------------------------

template <class T>
double multi_margin_forward(const T* x, const int64_t* target, const T* weight, T* elem, int64_t N, int64_t C, int p,
                            double margin) {
  const T m = static_cast<T>(margin);
  return blocked_reduce(N, std::max<int64_t>(1, kBlock / C), [&](int64_t n0, int64_t n1) {
    double s = 0;
    for (int64_t n = n0; n < n1; ++n) {
      const T* row = x + n * C;
      const int64_t y = target[n];
      double l = 0;
      for (int64_t c = 0; c < C; ++c) {
        if (c == y) continue;
        const T h = m - row[y] + row[c];
        if (h > 0) l += p == 1 ? double(h) : double(h) * double(h);
      }
      l = l * (weight ? double(weight[y]) : 1.0) / double(C);
      if (elem) elem[n] = static_cast<T>(l);
      s += l;
    }
    return s;
  });
}

template <class T>
void multi_margin_backward(const T* ge, double gs, const T* x, const int64_t* target, const T* weight, T* gx,
                           int64_t N, int64_t C, int p, double margin) {
  const T m = static_cast<T>(margin);
  parallel_for(0, N, std::max<int64_t>(1, kBlock / C), [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      const T* row = x + n * C;
      T* out = gx + n * C;
      const int64_t y = target[n];
      const double g = (ge ? double(ge[n]) : gs) * (weight ? double(weight[y]) : 1.0) / double(C);
      double gy = 0;
      for (int64_t c = 0; c < C; ++c) {
        out[c] = 0;
        if (c == y) continue;
        const T h = m - row[y] + row[c];
        if (h > 0) {
          const double d = g * (p == 1 ? 1.0 : 2.0 * double(h));
          out[c] = static_cast<T>(d);
          gy -= d;
        }
      }
      out[y] = static_cast<T>(gy);
    }
  });
}

// ---- triplet margin ------------------------------------------------------------------

namespace {
// ||u - v + eps||_p over D values.
template <class T>
double pdist(const T* u, const T* v, int64_t D, double p, double eps) {
  double s = 0;
  for (int64_t j = 0; j < D; ++j) {
    const double d = std::abs(double(u[j]) - double(v[j]) + eps);
    s += p == 2.0 ? d * d : (p == 1.0 ? d : std::pow(d, p));
  }
  return p == 2.0 ? std::sqrt(s) : (p == 1.0 ? s : std::pow(s, 1.0 / p));
}

// Adds g * d||u - v + eps||_p / du to gu and its negative to gv.
template <class T>
void pdist_grad(const T* u, const T* v, int64_t D, double p, double eps, double norm, double g, T* gu, T* gv) {
  if (norm == 0) return;  // the subgradient 0, as torch's norm backward
  const double scale = g / std::pow(norm, p - 1.0);
  for (int64_t j = 0; j < D; ++j) {
    const double d = double(u[j]) - double(v[j]) + eps;
    const double sgn = (d > 0) - (d < 0);
    const double gj = scale * (p == 2.0 ? d : sgn * std::pow(std::abs(d), p - 1.0));
    gu[j] += static_cast<T>(gj);
    gv[j] -= static_cast<T>(gj);
  }
}
}  // namespace

template <class T>
double triplet_margin_forward(const T* a, const T* pos, const T* neg, T* elem, int64_t N, int64_t D, double margin,
                              double p, double eps, bool swap) {
  return blocked_reduce(N, std::max<int64_t>(1, kBlock / D), [&](int64_t n0, int64_t n1) {
    double s = 0;
    for (int64_t n = n0; n < n1; ++n) {
      const T *ar = a + n * D, *pr = pos + n * D, *nr = neg + n * D;
      double dn = pdist(ar, nr, D, p, eps);
      if (swap) dn = std::min(dn, pdist(pr, nr, D, p, eps));
      const double l = std::max(pdist(ar, pr, D, p, eps) - dn + margin, 0.0);
      if (elem) elem[n] = static_cast<T>(l);
      s += l;
    }
    return s;
  });
}

template <class T>
void triplet_margin_backward(const T* ge, double gs, const T* a, const T* pos, const T* neg, T* ga, T* gp, T* gn,
                             int64_t N, int64_t D, double margin, double p, double eps, bool swap) {
  parallel_for(0, N, std::max<int64_t>(1, kBlock / D), [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      const T *ar = a + n * D, *pr = pos + n * D, *nr = neg + n * D;
      T *gar = ga + n * D, *gpr = gp + n * D, *gnr = gn + n * D;
      std::fill(gar, gar + D, T(0));
      std::fill(gpr, gpr + D, T(0));
      std::fill(gnr, gnr + D, T(0));
      const double dap = pdist(ar, pr, D, p, eps), dan = pdist(ar, nr, D, p, eps);
      const double dpn = swap ? pdist(pr, nr, D, p, eps) : dan;
      const bool use_pn = swap && dpn < dan;
      const double dneg = use_pn ? dpn : dan;
      // clamp_min passes the gradient where its argument is >= 0, as torch.
      if (dap - dneg + margin < 0) continue;
      const double g = ge ? double(ge[n]) : gs;
      pdist_grad(ar, pr, D, p, eps, dap, g, gar, gpr);
      if (use_pn)
        pdist_grad(pr, nr, D, p, eps, dpn, -g, gpr, gnr);
      else
        pdist_grad(ar, nr, D, p, eps, dan, -g, gar, gnr);
    }
  });
}

#define CNNFAST_INSTANTIATE(T)                                                                                      \
  template double pointwise_loss_forward<T>(Pointwise, const T*, const T*, T*, int64_t, double);                   \
  template void pointwise_loss_backward<T>(Pointwise, const T*, double, const T*, const T*, T*, int64_t, double);  \
  template double cross_entropy_forward<T>(const T*, const int64_t*, const T*, T*, T*, int64_t, int64_t, int64_t,  \
                                           int64_t, double, double*);                                               \
  template void cross_entropy_backward<T>(const T*, double, const T*, const int64_t*, const T*, const T*, T*,      \
                                          int64_t, int64_t, int64_t, int64_t, double);                              \
  template double cross_entropy_prob_forward<T>(const T*, const T*, const T*, T*, T*, int64_t, int64_t, int64_t,   \
                                                double);                                                            \
  template void cross_entropy_prob_backward<T>(const T*, double, const T*, const T*, const T*, const T*, T*,       \
                                               int64_t, int64_t, int64_t, double);                                  \
  template double nll_loss_forward<T>(const T*, const int64_t*, const T*, T*, int64_t, int64_t, int64_t, int64_t, \
                                      double*);                                                                     \
  template void nll_loss_backward<T>(const T*, double, const int64_t*, const T*, T*, int64_t, int64_t, int64_t,    \
                                     int64_t);                                                                      \
  template double bce_logits_forward<T>(const T*, const T*, const T*, int64_t, const T*, int64_t, T*, int64_t);   \
  template void bce_logits_backward<T>(const T*, double, const T*, const T*, const T*, int64_t, const T*, int64_t, \
                                       T*, int64_t);                                                                \
  template double bce_forward<T>(const T*, const T*, const T*, int64_t, T*, int64_t);                              \
  template void bce_backward<T>(const T*, double, const T*, const T*, const T*, int64_t, T*, int64_t);             \
  template double multi_margin_forward<T>(const T*, const int64_t*, const T*, T*, int64_t, int64_t, int, double);  \
  template void multi_margin_backward<T>(const T*, double, const T*, const int64_t*, const T*, T*, int64_t,        \
                                         int64_t, int, double);                                                     \
  template double triplet_margin_forward<T>(const T*, const T*, const T*, T*, int64_t, int64_t, double, double,    \
                                            double, bool);                                                          \
  template void triplet_margin_backward<T>(const T*, double, const T*, const T*, const T*, T*, T*, T*, int64_t,    \
                                           int64_t, double, double, double, bool);
CNNFAST_INSTANTIATE(float)
CNNFAST_INSTANTIATE(double)
#undef CNNFAST_INSTANTIATE

#if !CNNFAST_HAVE_AVX2_BUILD
// Non-x86 builds have no AVX2 translation unit; use_avx2() is always false there.
namespace avx2_impl {
double pointwise_forward(Pointwise, const float*, const float*, float*, int64_t, float) { return 0; }
void pointwise_backward(Pointwise, const float*, float, const float*, const float*, float*, int64_t, float) {}
float row_logsumexp(const float*, int64_t) { return 0; }
void row_sums(const float*, const float*, int64_t, double*, double*) {}
void ce_row_grad(const float*, const float*, float*, int64_t, float, float, float) {}
}  // namespace avx2_impl
#endif

#if !CNNFAST_HAVE_AVX512_BUILD
namespace avx512_impl {
double pointwise_forward(Pointwise, const float*, const float*, float*, int64_t, float) { return 0; }
void pointwise_backward(Pointwise, const float*, float, const float*, const float*, float*, int64_t, float) {}
float row_logsumexp(const float*, int64_t) { return 0; }
void row_sums(const float*, const float*, int64_t, double*, double*) {}
void ce_row_grad(const float*, const float*, float*, int64_t, float, float, float) {}
}  // namespace avx512_impl
#endif

}  // namespace cnnfast::cpu
