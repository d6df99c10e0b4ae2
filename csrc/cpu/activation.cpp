// Scalar reference implementations (the oracle in tests and the path on CPUs
// without AVX2) and the dispatch to the AVX-512 and AVX2 kernels, threaded over chunks.
#include "cpu/activation.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/cpu_features.h"
#include "core/simd.h"
#include "core/parallel.h"

namespace cnnfast::cpu {
namespace {

constexpr int64_t kElementwiseGrain = 1 << 15;

// Outputs from this size up are written with non-temporal stores: half the
// last-level cache of a typical desktop or server part, beyond which the output
// would be evicted before anything reads it, so a normal store's read of the
// line first is wasted bandwidth. Only for ops whose arithmetic is cheap enough
// to be bound by that bandwidth (ReLU gained, the exponential ones lost: their stores
// overlap compute; benchmarks/RESULTS.md, "Design measurements").
constexpr int64_t kStreamBytes = int64_t(16) << 20;

template <class T>
bool streams(Activation act, bool backward, int64_t n) {
  if (n * int64_t(sizeof(T)) < kStreamBytes) return false;
  switch (act) {
    case Activation::ReLU:
    case Activation::LeakyReLU:
      return true;
    case Activation::Sigmoid:
    case Activation::Tanh:
      return backward;  // y * (1 - y) and 1 - y^2 from the saved output
    default:
      return false;
  }
}

template <class T>
T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

template <class T>
void forward_scalar(Activation act, const T* x, T* y, int64_t n, T param) {
  switch (act) {
    case Activation::ReLU:
      // x > 0 ? x : 0 would turn NaN into 0; PyTorch propagates it.
      for (int64_t i = 0; i < n; ++i) y[i] = (x[i] < T(0)) ? T(0) : x[i];
      break;
    case Activation::LeakyReLU:
      for (int64_t i = 0; i < n; ++i) y[i] = (x[i] < T(0)) ? x[i] * param : x[i];
      break;
    case Activation::ELU:
      for (int64_t i = 0; i < n; ++i) y[i] = (x[i] > T(0)) ? x[i] : param * std::expm1(x[i]);
      break;
    case Activation::Sigmoid:
      for (int64_t i = 0; i < n; ++i) y[i] = sigmoid(x[i]);
      break;
    case Activation::Tanh:
      for (int64_t i = 0; i < n; ++i) y[i] = std::tanh(x[i]);
      break;
    case Activation::SiLU:
      for (int64_t i = 0; i < n; ++i) y[i] = x[i] * sigmoid(x[i]);
      break;
  }
}

template <class T>
void backward_scalar(Activation act, const T* gy, const T* s, T* gx, int64_t n, T param) {
  switch (act) {
    case Activation::ReLU:
      // The subgradient at 0 is 0, as in PyTorch.
      for (int64_t i = 0; i < n; ++i) gx[i] = (s[i] > T(0)) ? gy[i] : T(0);
      break;
    case Activation::LeakyReLU:
      for (int64_t i = 0; i < n; ++i) gx[i] = (s[i] > T(0)) ? gy[i] : gy[i] * param;
      break;
    case Activation::ELU:
      for (int64_t i = 0; i < n; ++i) gx[i] = (s[i] > T(0)) ? gy[i] : gy[i] * param * std::exp(s[i]);
      break;
    case Activation::Sigmoid:
      for (int64_t i = 0; i < n; ++i) gx[i] = gy[i] * s[i] * (T(1) - s[i]);
      break;
    case Activation::Tanh:
      for (int64_t i = 0; i < n; ++i) gx[i] = gy[i] * (T(1) - s[i] * s[i]);
      break;
    case Activation::SiLU:
      for (int64_t i = 0; i < n; ++i) {
        T sg = sigmoid(s[i]);
        gx[i] = gy[i] * sg * (T(1) + s[i] * (T(1) - sg));
      }
      break;
  }
}

// One softmax "line": dim values spaced stride apart.
template <class T>
void softmax_line_forward(const T* x, T* y, int64_t dim, int64_t stride, bool log) {
  T mx = -std::numeric_limits<T>::infinity();
  bool has_nan = false;
  for (int64_t k = 0; k < dim; ++k) {
    T v = x[k * stride];
    has_nan |= std::isnan(v);
    mx = std::max(mx, v);
  }
  // A line of all -inf has no finite maximum; shifting by 0 yields NaN (0/0) as PyTorch does.
  if (std::isinf(mx) && mx < 0) mx = T(0);
  if (has_nan) mx = std::numeric_limits<T>::quiet_NaN();
  T sum = 0;
  for (int64_t k = 0; k < dim; ++k) {
    T e = std::exp(x[k * stride] - mx);
    if (!log) y[k * stride] = e;
    sum += e;
  }
  if (log) {
    T lse = mx + std::log(sum);
    for (int64_t k = 0; k < dim; ++k) y[k * stride] = x[k * stride] - lse;
  } else {
    T inv = T(1) / sum;
    for (int64_t k = 0; k < dim; ++k) y[k * stride] *= inv;
  }
}

template <class T>
void softmax_line_backward(const T* gy, const T* y, T* gx, int64_t dim, int64_t stride, bool log) {
  T acc = 0;
  if (log) {
    for (int64_t k = 0; k < dim; ++k) acc += gy[k * stride];
    for (int64_t k = 0; k < dim; ++k) gx[k * stride] = gy[k * stride] - std::exp(y[k * stride]) * acc;
  } else {
    for (int64_t k = 0; k < dim; ++k) acc += gy[k * stride] * y[k * stride];
    for (int64_t k = 0; k < dim; ++k) gx[k * stride] = y[k * stride] * (gy[k * stride] - acc);
  }
}

}  // namespace

template <class T>
void activation_forward(Activation act, const T* x, T* y, int64_t n, double param) {
  const bool vec = is_f32<T> && use_avx2(), wide = is_f32<T> && use_avx512(), stream = streams<T>(act, false, n);
  parallel_for(0, n, kElementwiseGrain, [&](int64_t b, int64_t e) {
    if constexpr (is_f32<T>) {
      const float p = static_cast<float>(param);
      if (wide && avx512_impl::activation_forward(act, x + b, y + b, e - b, p, stream)) return;
      if (vec) return avx2_impl::activation_forward(act, x + b, y + b, e - b, p, stream);
    }
    forward_scalar<T>(act, x + b, y + b, e - b, static_cast<T>(param));
  });
}

template <class T>
void activation_backward(Activation act, const T* gy, const T* s, T* gx, int64_t n, double param) {
  const bool vec = is_f32<T> && use_avx2(), wide = is_f32<T> && use_avx512(), stream = streams<T>(act, true, n);
  parallel_for(0, n, kElementwiseGrain, [&](int64_t b, int64_t e) {
    if constexpr (is_f32<T>) {
      const float p = static_cast<float>(param);
      if (wide && avx512_impl::activation_backward(act, gy + b, s + b, gx + b, e - b, p, stream)) return;
      if (vec) return avx2_impl::activation_backward(act, gy + b, s + b, gx + b, e - b, p, stream);
    }
    backward_scalar<T>(act, gy + b, s + b, gx + b, e - b, static_cast<T>(param));
  });
}

template <class T>
void softmax_forward(const T* x, T* y, int64_t outer, int64_t dim, int64_t inner, bool log) {
  const bool vec = is_f32<T> && use_avx2(), wide = is_f32<T> && use_avx512();
  const int64_t line = dim * inner;
  if (inner == 1) {
    parallel_for(0, outer, std::max<int64_t>(1, 4096 / std::max<int64_t>(dim, 1)), [&](int64_t b, int64_t e) {
      if constexpr (is_f32<T>) {
        if (wide) return avx512_impl::softmax_rows_forward(x + b * dim, y + b * dim, e - b, dim, log);
        if (vec) return avx2_impl::softmax_rows_forward(x + b * dim, y + b * dim, e - b, dim, log);
      }
      for (int64_t r = b; r < e; ++r) softmax_line_forward(x + r * dim, y + r * dim, dim, 1, log);
    });
    return;
  }
  parallel_for(0, outer, 1, [&](int64_t b, int64_t e) {
    for (int64_t o = b; o < e; ++o) {
      if constexpr (is_f32<T>) {
        if (wide) {
          avx512_impl::softmax_inner_forward(x + o * line, y + o * line, dim, inner, log);
          continue;
        }
        if (vec) {
          avx2_impl::softmax_inner_forward(x + o * line, y + o * line, dim, inner, log);
          continue;
        }
      }
      for (int64_t i = 0; i < inner; ++i) softmax_line_forward(x + o * line + i, y + o * line + i, dim, inner, log);
    }
  });
}

template <class T>
void softmax_backward(const T* gy, const T* y, T* gx, int64_t outer, int64_t dim, int64_t inner, bool log) {
  const bool vec = is_f32<T> && use_avx2(), wide = is_f32<T> && use_avx512();
  const int64_t line = dim * inner;
  if (inner == 1) {
    parallel_for(0, outer, std::max<int64_t>(1, 4096 / std::max<int64_t>(dim, 1)), [&](int64_t b, int64_t e) {
      if constexpr (is_f32<T>) {
        if (wide) return avx512_impl::softmax_rows_backward(gy + b * dim, y + b * dim, gx + b * dim, e - b, dim, log);
        if (vec) return avx2_impl::softmax_rows_backward(gy + b * dim, y + b * dim, gx + b * dim, e - b, dim, log);
      }
      for (int64_t r = b; r < e; ++r) softmax_line_backward(gy + r * dim, y + r * dim, gx + r * dim, dim, 1, log);
    });
    return;
  }
  parallel_for(0, outer, 1, [&](int64_t b, int64_t e) {
    for (int64_t o = b; o < e; ++o) {
      if constexpr (is_f32<T>) {
        if (wide) {
          avx512_impl::softmax_inner_backward(gy + o * line, y + o * line, gx + o * line, dim, inner, log);
          continue;
        }
        if (vec) {
          avx2_impl::softmax_inner_backward(gy + o * line, y + o * line, gx + o * line, dim, inner, log);
          continue;
        }
      }
      for (int64_t i = 0; i < inner; ++i)
        softmax_line_backward(gy + o * line + i, y + o * line + i, gx + o * line + i, dim, inner, log);
    }
  });
}

#define CNNFAST_INSTANTIATE(T)                                                                          \
  template void activation_forward<T>(Activation, const T*, T*, int64_t, double);                     \
  template void activation_backward<T>(Activation, const T*, const T*, T*, int64_t, double);          \
  template void softmax_forward<T>(const T*, T*, int64_t, int64_t, int64_t, bool);                    \
  template void softmax_backward<T>(const T*, const T*, T*, int64_t, int64_t, int64_t, bool);
CNNFAST_INSTANTIATE(float)
CNNFAST_INSTANTIATE(double)
#undef CNNFAST_INSTANTIATE

#if !CNNFAST_HAVE_AVX2_BUILD
// Non-x86 builds have no AVX2 translation unit; use_avx2() is always false there.
namespace avx2_impl {
void activation_forward(Activation, const float*, float*, int64_t, float, bool) {}
void activation_backward(Activation, const float*, const float*, float*, int64_t, float, bool) {}
void softmax_rows_forward(const float*, float*, int64_t, int64_t, bool) {}
void softmax_rows_backward(const float*, const float*, float*, int64_t, int64_t, bool) {}
void softmax_inner_forward(const float*, float*, int64_t, int64_t, bool) {}
void softmax_inner_backward(const float*, const float*, float*, int64_t, int64_t, bool) {}
}  // namespace avx2_impl
#endif

#if !CNNFAST_HAVE_AVX512_BUILD
// Non-x86 builds have no AVX-512 translation unit; use_avx512() is always false there.
namespace avx512_impl {
bool activation_forward(Activation, const float*, float*, int64_t, float, bool) { return false; }
bool activation_backward(Activation, const float*, const float*, float*, int64_t, float, bool) { return false; }
void softmax_rows_forward(const float*, float*, int64_t, int64_t, bool) {}
void softmax_rows_backward(const float*, const float*, float*, int64_t, int64_t, bool) {}
void softmax_inner_forward(const float*, float*, int64_t, int64_t, bool) {}
void softmax_inner_backward(const float*, const float*, float*, int64_t, int64_t, bool) {}
}  // namespace avx512_impl
#endif

}  // namespace cnnfast::cpu
