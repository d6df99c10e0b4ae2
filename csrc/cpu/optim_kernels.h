// The per-element optimizer updates over one contiguous chunk, written once as plain
// C++ and compiled twice: in optim.cpp for the baseline ISA (the scalar reference,
// SSE2-vectorised by the compiler) and in optim_avx2.cpp with -mavx2 -mfma (8 floats
// per instruction). Pointers are __restrict and hyper-parameters are passed by value
// so the compiler can prove the loops free of aliasing and vectorise them; the flags
// are loop-invariant and the loops are unswitched on them. Each build lands in its
// own namespace (CNNFAST_ISA_NS, core/simd.h), so the linker can never hand the AVX2
// copy of a loop to a caller at the scalar level.
//
// Each statement mirrors one tensor operation of torch's single-tensor optimizer,
// in the same order (see optim.h).
#pragma once
#include <cmath>
#include <cstdint>

#include "core/simd.h"

namespace cnnfast::cpu::CNNFAST_ISA_NS::optim_kernels {

// torch.lerp's formula, chosen by |w| so both ends are exact.
template <class T>
inline T lerp(T self, T end, T w) {
  return (std::abs(w) < T(0.5)) ? self + w * (end - self) : end - (end - self) * (T(1) - w);
}

template <class T>
void sgd(T* __restrict param, const T* __restrict grad, T* __restrict buf, int64_t n, T lr, T momentum, T damp,
         T wd, bool use_momentum, bool nesterov, bool maximize, bool first_step) {
  for (int64_t i = 0; i < n; ++i) {
    T g = maximize ? -grad[i] : grad[i];
    g = g + wd * param[i];  // grad.add(param, alpha=weight_decay); exact when wd == 0
    if (use_momentum) {
      // buf.mul_(momentum).add_(grad, alpha=1 - dampening); the first step clones grad.
      const T m = first_step ? g : buf[i] * momentum + damp * g;
      buf[i] = m;
      g = nesterov ? g + momentum * m : m;
    }
    param[i] = param[i] + (-lr) * g;
  }
}

template <class T>
void adam(T* __restrict param, const T* __restrict grad, T* __restrict exp_avg, T* __restrict exp_avg_sq,
          T* __restrict max_sq, int64_t n, T neg_step_size, T bc2_sqrt, T w1, T beta2, T w2, T eps, T decay, T l2,
          bool decoupled, bool amsgrad, bool maximize) {
  for (int64_t i = 0; i < n; ++i) {
    T p = param[i];
    if (decoupled) p = p * decay;  // param.mul_(1 - lr * weight_decay)
    T g = maximize ? -grad[i] : grad[i];
    g = g + l2 * p;
    const T m = lerp(exp_avg[i], g, w1);
    exp_avg[i] = m;
    const T v = exp_avg_sq[i] * beta2 + w2 * g * g;  // mul_(beta2).addcmul_(g, g, value=1-beta2)
    exp_avg_sq[i] = v;
    T vmax = v;
    if (amsgrad) {
      vmax = max_sq[i] > v ? max_sq[i] : v;
      max_sq[i] = vmax;
    }
    const T denom = std::sqrt(vmax) / bc2_sqrt + eps;
    param[i] = p + neg_step_size * (m / denom);  // addcdiv_(m, denom, value=-step_size)
  }
}

template <class T>
void adagrad(T* __restrict param, const T* __restrict grad, T* __restrict state_sum, int64_t n, T neg_clr, T wd,
             T eps, bool maximize) {
  for (int64_t i = 0; i < n; ++i) {
    T g = maximize ? -grad[i] : grad[i];
    g = g + wd * param[i];
    const T s = state_sum[i] + g * g;  // addcmul_(g, g, value=1)
    state_sum[i] = s;
    param[i] = param[i] + neg_clr * (g / (std::sqrt(s) + eps));
  }
}

// The centered and momentum variants are template parameters: with three runtime
// flags the compiler stops unswitching and the loop would stay scalar.
template <class T, bool kCentered, bool kMomentum>
void rmsprop_variant(T* __restrict param, const T* __restrict grad, T* __restrict square_avg,
                     T* __restrict grad_avg, T* __restrict buf, int64_t n, T neg_lr, T alpha, T w, T eps, T wd,
                     T momentum, bool maximize) {
  for (int64_t i = 0; i < n; ++i) {
    T g = maximize ? -grad[i] : grad[i];
    g = g + wd * param[i];
    const T sq = square_avg[i] * alpha + w * g * g;
    square_avg[i] = sq;
    T avg;
    if constexpr (kCentered) {
      const T ga = lerp(grad_avg[i], g, w);
      grad_avg[i] = ga;
      avg = std::sqrt(sq + T(-1) * ga * ga);  // square_avg.addcmul(ga, ga, value=-1).sqrt_()
    } else {
      avg = std::sqrt(sq);
    }
    avg = avg + eps;
    if constexpr (kMomentum) {
      const T m = buf[i] * momentum + g / avg;  // buf.mul_(momentum).addcdiv_(g, avg)
      buf[i] = m;
      param[i] = param[i] + neg_lr * m;
    } else {
      param[i] = param[i] + neg_lr * (g / avg);
    }
  }
}

template <class T>
void rmsprop(T* param, const T* grad, T* square_avg, T* grad_avg, T* buf, int64_t n, T neg_lr, T alpha, T w, T eps,
             T wd, T momentum, bool centered, bool use_momentum, bool maximize) {
  if (centered && use_momentum)
    rmsprop_variant<T, true, true>(param, grad, square_avg, grad_avg, buf, n, neg_lr, alpha, w, eps, wd, momentum,
                                   maximize);
  else if (centered)
    rmsprop_variant<T, true, false>(param, grad, square_avg, grad_avg, buf, n, neg_lr, alpha, w, eps, wd, momentum,
                                    maximize);
  else if (use_momentum)
    rmsprop_variant<T, false, true>(param, grad, square_avg, grad_avg, buf, n, neg_lr, alpha, w, eps, wd, momentum,
                                    maximize);
  else
    rmsprop_variant<T, false, false>(param, grad, square_avg, grad_avg, buf, n, neg_lr, alpha, w, eps, wd, momentum,
                                     maximize);
}

// Adadelta (Zeiler 2012): the step is the ratio of two running RMS values, of past
// steps and of gradients, so it has the parameter's units and lr is a plain scale.
template <class T>
void adadelta(T* __restrict param, const T* __restrict grad, T* __restrict square_avg, T* __restrict acc_delta,
              int64_t n, T neg_lr, T rho, T w, T eps, T wd, bool maximize) {
  for (int64_t i = 0; i < n; ++i) {
    T g = maximize ? -grad[i] : grad[i];
    g = g + wd * param[i];
    const T sq = square_avg[i] * rho + w * g * g;  // mul_(rho).addcmul_(g, g, value=1-rho)
    square_avg[i] = sq;
    const T std_ = std::sqrt(sq + eps);
    const T delta = std::sqrt(acc_delta[i] + eps) / std_ * g;  // acc_delta.add(eps).sqrt_().div_(std).mul_(g)
    acc_delta[i] = acc_delta[i] * rho + w * delta * delta;
    param[i] = param[i] + neg_lr * delta;  // add_(delta, alpha=-lr)
  }
}

}  // namespace cnnfast::cpu::CNNFAST_ISA_NS::optim_kernels
