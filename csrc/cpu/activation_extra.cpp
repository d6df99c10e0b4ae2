// Scalar reference implementations of the activations in activation_extra.h (the
// oracle in tests and the path without AVX2) and the dispatch to the AVX2 and AVX-512
// kernels, threaded over contiguous chunks.
#include "cpu/activation_extra.h"

#include <cmath>
#include <type_traits>

#include "core/cpu_features.h"
#include "core/parallel.h"

namespace cnnfast::cpu {
namespace {

constexpr int64_t kGrain = 1 << 14;

template <class T>
T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

// Phi(x), the standard normal CDF, from erfc so that the far negative tail keeps
// its relative accuracy (1 + erf(x) would cancel to 0 there).
template <class T>
T normal_cdf(T x) {
  return T(0.5) * std::erfc(-x * T(0.70710678118654752440));
}

template <class T>
T normal_pdf(T x) {
  return T(0.39894228040143267794) * std::exp(T(-0.5) * x * x);
}

// GELU-tanh: 0.5 x (1 + tanh(u)) = x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3);
// the sigmoid form has no cancellation for negative x.
constexpr double kSqrt2OverPi = 0.79788456080286535588, kCubic = 0.044715;

// log(1 + e^z) without overflow: max(z, 0) + log1p(e^-|z|).
template <class T>
T softplus_of(T z) {
  return std::max(z, T(0)) + std::log1p(std::exp(-std::abs(z)));
}

template <class T>
T forward_one(ExtraActivation act, T x, T beta, T threshold) {
  switch (act) {
    case ExtraActivation::GELU:
      return x * normal_cdf(x);
    case ExtraActivation::GELUTanh: {
      T u = T(kSqrt2OverPi) * (x + T(kCubic) * x * x * x);
      return x * sigmoid(T(2) * u);
    }
    case ExtraActivation::Hardswish:
      // NaN fails every comparison and falls through to x * (x + 3) / 6 = NaN.
      return x <= T(-3) ? T(0) * x : (x >= T(3) ? x : x * (x + T(3)) / T(6));
    case ExtraActivation::Hardsigmoid:
      return x <= T(-3) ? T(0) : (x >= T(3) ? T(1) : x / T(6) + T(0.5));
    case ExtraActivation::ReLU6:
      return x < T(0) ? T(0) : (x > T(6) ? T(6) : x);
    case ExtraActivation::Mish:
      return x * std::tanh(softplus_of(x));
    case ExtraActivation::Softplus:
      return beta * x > threshold ? x : softplus_of(beta * x) / beta;
    case ExtraActivation::Erf:
      return std::erf(x);
  }
  return x;
}

template <class T>
T derivative(ExtraActivation act, T x, T beta, T threshold) {
  switch (act) {
    case ExtraActivation::GELU:
      return normal_cdf(x) + x * normal_pdf(x);
    case ExtraActivation::GELUTanh: {
      T u = T(kSqrt2OverPi) * (x + T(kCubic) * x * x * x);
      T du = T(kSqrt2OverPi) * (T(1) + T(3 * kCubic) * x * x);
      T s = sigmoid(T(2) * u);
      return s + x * T(2) * s * (T(1) - s) * du;
    }
    case ExtraActivation::Hardswish:
      return x <= T(-3) ? T(0) : (x < T(3) ? x / T(3) + T(0.5) : T(1));
    case ExtraActivation::Hardsigmoid:
      return (x > T(-3) && x < T(3)) ? T(1) / T(6) : T(0);
    case ExtraActivation::ReLU6:
      return (x <= T(0) || x >= T(6)) ? T(0) : T(1);
    case ExtraActivation::Mish: {
      T t = std::tanh(softplus_of(x));
      return t + x * (T(1) - t * t) * sigmoid(x);
    }
    case ExtraActivation::Softplus:
      return beta * x > threshold ? T(1) : sigmoid(beta * x);
    case ExtraActivation::Erf:
      return T(1.12837916709551257390) * std::exp(-x * x);
  }
  return T(1);
}

template <class T>
constexpr bool is_f32 = std::is_same_v<T, float>;

}  // namespace

// Outputs of 16 MiB and more of the ops bound by memory bandwidth, not arithmetic, go out
// with non-temporal stores, as ReLU's do (activation.cpp): no read of each output line
// before it is written. ReLU6 forward, 32x64x56x56 (103 MB), 2 threads on Zen 5: 0.91 ->
// 0.74-0.78 ms (torch 0.78-1.13 in the same runs); Hardswish 1.10 -> 0.78-1.00.
static bool extra_streams(ExtraActivation act, int64_t n) {
  if (n * int64_t(sizeof(float)) < (int64_t(16) << 20)) return false;
  return act == ExtraActivation::ReLU6 || act == ExtraActivation::Hardsigmoid || act == ExtraActivation::Hardswish;
}

template <class T>
void extra_activation_forward(ExtraActivation act, const T* x, T* y, int64_t n, double beta, double threshold) {
  const bool vec = is_f32<T> && use_avx2(), wide = is_f32<T> && use_avx512(), stream = extra_streams(act, n);
  parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    if constexpr (is_f32<T>) {
      if (wide)
        return avx512_impl::extra_activation_forward(act, x + b, y + b, e - b, float(beta), float(threshold), stream);
      if (vec)
        return avx2_impl::extra_activation_forward(act, x + b, y + b, e - b, float(beta), float(threshold));
    }
    for (int64_t i = b; i < e; ++i) y[i] = forward_one<T>(act, x[i], T(beta), T(threshold));
  });
}

template <class T>
void extra_activation_backward(ExtraActivation act, const T* gy, const T* x, T* gx, int64_t n, double beta,
                               double threshold) {
  const bool vec = is_f32<T> && use_avx2(), wide = is_f32<T> && use_avx512(), stream = extra_streams(act, n);
  parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    if constexpr (is_f32<T>) {
      if (wide)
        return avx512_impl::extra_activation_backward(act, gy + b, x + b, gx + b, e - b, float(beta),
                                                      float(threshold), stream);
      if (vec)
        return avx2_impl::extra_activation_backward(act, gy + b, x + b, gx + b, e - b, float(beta), float(threshold));
    }
    // ReLU6 and Hardswish pass the gradient through at NaN (neither comparison
    // holds), as PyTorch does; the product keeps a NaN gradient NaN.
    for (int64_t i = b; i < e; ++i) gx[i] = gy[i] * derivative<T>(act, x[i], T(beta), T(threshold));
  });
}

template void extra_activation_forward<float>(ExtraActivation, const float*, float*, int64_t, double, double);
template void extra_activation_forward<double>(ExtraActivation, const double*, double*, int64_t, double, double);
template void extra_activation_backward<float>(ExtraActivation, const float*, const float*, float*, int64_t, double,
                                               double);
template void extra_activation_backward<double>(ExtraActivation, const double*, const double*, double*, int64_t,
                                                double, double);

#if !CNNFAST_HAVE_AVX2_BUILD
namespace avx2_impl {
void extra_activation_forward(ExtraActivation, const float*, float*, int64_t, float, float) {}
void extra_activation_backward(ExtraActivation, const float*, const float*, float*, int64_t, float, float) {}
}  // namespace avx2_impl
#endif

#if !CNNFAST_HAVE_AVX512_BUILD
namespace avx512_impl {
void extra_activation_forward(ExtraActivation, const float*, float*, int64_t, float, float, bool) {}
void extra_activation_backward(ExtraActivation, const float*, const float*, float*, int64_t, float, float, bool) {}
}  // namespace avx512_impl
#endif

}  // namespace cnnfast::cpu
