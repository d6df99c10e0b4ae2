// Scalar implementations of the fused optimizer updates (csrc/cpu/optim.h),
// threaded over contiguous chunks. Each element's update is independent, so the
// result does not depend on the thread count. The loops are simple enough for
// the compiler to vectorise; the option flags are loop-invariant, so it can
// unswitch the branches on them.
#include "cpu/optim.h"

#include <algorithm>
#include <cmath>

#include "core/parallel.h"

namespace cnnfast::cpu {
namespace {

// Below this many elements a parameter is updated on the calling thread: the
// update is memory-bound and a thread hand-off costs more than it saves.
constexpr int64_t kGrain = 1 << 15;

// torch.lerp's formula, chosen by |w| so both ends are exact.
template <class T>
inline T lerp(T self, T end, T w) {
  return (std::abs(w) < T(0.5)) ? self + w * (end - self) : end - (end - self) * (T(1) - w);
}

template <class T>
inline T effective_grad(const T* grad, const T* param, int64_t i, bool maximize, T wd) {
  T g = maximize ? -grad[i] : grad[i];
  // grad.add(param, alpha=weight_decay)
  return wd != T(0) ? g + wd * param[i] : g;
}

}  // namespace

template <class T>
void sgd_step(T* param, const T* grad, T* buf, int64_t n, const SgdOptions& o) {
  const T lr = T(o.lr), momentum = T(o.momentum), damp = T(1.0 - o.dampening), wd = T(o.weight_decay);
  const bool use_momentum = o.momentum != 0.0;
  parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      T g = effective_grad(grad, param, i, o.maximize, wd);
      if (use_momentum) {
        // buf.mul_(momentum).add_(grad, alpha=1 - dampening); the first step clones grad.
        T m = o.first_step ? g : buf[i] * momentum + damp * g;
        buf[i] = m;
        g = o.nesterov ? g + momentum * m : m;
      }
      param[i] = param[i] + (-lr) * g;
    }
  });
}

template <class T>
void adam_step(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, T* max_sq, int64_t n, const AdamOptions& o) {
  const double bias_correction1 = 1.0 - std::pow(o.beta1, double(o.step));
  const double bias_correction2 = 1.0 - std::pow(o.beta2, double(o.step));
  const T neg_step_size = T(-(o.lr / bias_correction1));
  const T bc2_sqrt = T(std::sqrt(bias_correction2));
  const T w1 = T(1.0 - o.beta1), beta2 = T(o.beta2), w2 = T(1.0 - o.beta2), eps = T(o.eps);
  const T decay = T(1.0 - o.lr * o.weight_decay);
  const T l2 = o.decoupled_weight_decay ? T(0) : T(o.weight_decay);
  const bool decoupled = o.decoupled_weight_decay && o.weight_decay != 0.0;
  parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      if (decoupled) param[i] = param[i] * decay;
      const T g = effective_grad(grad, param, i, o.maximize, l2);
      const T m = lerp(exp_avg[i], g, w1);
      exp_avg[i] = m;
      const T v = exp_avg_sq[i] * beta2 + w2 * g * g;  // mul_(beta2).addcmul_(g, g, value=1-beta2)
      exp_avg_sq[i] = v;
      T vmax = v;
      if (o.amsgrad) {
        vmax = std::max(max_sq[i], v);
        max_sq[i] = vmax;
      }
      const T denom = std::sqrt(vmax) / bc2_sqrt + eps;
      param[i] = param[i] + neg_step_size * (m / denom);  // addcdiv_(m, denom, value=-step_size)
    }
  });
}

template <class T>
void adagrad_step(T* param, const T* grad, T* state_sum, int64_t n, const AdagradOptions& o) {
  const T neg_clr = T(-(o.lr / (1.0 + double(o.step - 1) * o.lr_decay)));
  const T wd = T(o.weight_decay), eps = T(o.eps);
  parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const T g = effective_grad(grad, param, i, o.maximize, wd);
      const T s = state_sum[i] + g * g;
      state_sum[i] = s;
      const T std_ = std::sqrt(s) + eps;
      param[i] = param[i] + neg_clr * (g / std_);
    }
  });
}

template <class T>
void rmsprop_step(T* param, const T* grad, T* square_avg, T* grad_avg, T* buf, int64_t n, const RmspropOptions& o) {
  const T alpha = T(o.alpha), w = T(1.0 - o.alpha), eps = T(o.eps), wd = T(o.weight_decay);
  const T momentum = T(o.momentum), neg_lr = T(-o.lr);
  const bool use_momentum = o.momentum > 0.0;
  parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const T g = effective_grad(grad, param, i, o.maximize, wd);
      const T sq = square_avg[i] * alpha + w * g * g;
      square_avg[i] = sq;
      T avg;
      if (o.centered) {
        const T ga = lerp(grad_avg[i], g, w);
        grad_avg[i] = ga;
        avg = std::sqrt(sq + T(-1) * ga * ga);  // square_avg.addcmul(ga, ga, value=-1).sqrt_()
      } else {
        avg = std::sqrt(sq);
      }
      avg = avg + eps;
      if (use_momentum) {
        const T m = buf[i] * momentum + g / avg;
        buf[i] = m;
        param[i] = param[i] + neg_lr * m;
      } else {
        param[i] = param[i] + neg_lr * (g / avg);
      }
    }
  });
}

#define CNNFAST_INSTANTIATE(T)                                                                        \
  template void sgd_step<T>(T*, const T*, T*, int64_t, const SgdOptions&);                            \
  template void adam_step<T>(T*, const T*, T*, T*, T*, int64_t, const AdamOptions&);                  \
  template void adagrad_step<T>(T*, const T*, T*, int64_t, const AdagradOptions&);                    \
  template void rmsprop_step<T>(T*, const T*, T*, T*, T*, int64_t, const RmspropOptions&);
CNNFAST_INSTANTIATE(float)
CNNFAST_INSTANTIATE(double)
#undef CNNFAST_INSTANTIATE

}  // namespace cnnfast::cpu
