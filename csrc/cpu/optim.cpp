// The fused optimizer updates (csrc/cpu/optim.h): hyper-parameters turned into the
// scalars torch derives from them (in double, then cast to T once), and the
// per-element loops of optim_kernels.h run over contiguous chunks on the thread
// pool. This file's build of the loops is the scalar reference (float64, and
// float32 on CPUs without AVX2); float32 goes to optim_avx512.cpp or optim_avx2.cpp
// at those levels.
// Each element's update is independent, so the result does not depend on the
// thread count.
#include "cpu/optim.h"

#include <cmath>
#include <type_traits>

#include "core/cpu_features.h"
#include "core/parallel.h"
#include "cpu/optim_kernels.h"

namespace cnnfast::cpu {
namespace {

// Below this many elements a parameter is updated on the calling thread: the
// update is memory-bound and a thread hand-off costs more than it saves.
constexpr int64_t kGrain = 1 << 15;

template <class T>
bool fast_path() {
  return std::is_same_v<T, float> && use_avx2();
}

}  // namespace

template <class T>
void sgd_step(T* param, const T* grad, T* buf, int64_t n, const SgdOptions& o) {
  const T lr = T(o.lr), momentum = T(o.momentum), damp = T(1.0 - o.dampening), wd = T(o.weight_decay);
  const bool use_momentum = o.momentum != 0.0;
  const bool avx2 = fast_path<T>();
  parallel_for(0, n, kGrain, [=](int64_t b, int64_t e) {
    T* bb = use_momentum ? buf + b : nullptr;
    if constexpr (std::is_same_v<T, float>) {
      if (avx2) {
        (use_avx512() ? avx512_impl::sgd : avx2_impl::sgd)(param + b, grad + b, bb, e - b, lr, momentum, damp, wd, use_momentum, o.nesterov, o.maximize,
                       o.first_step);
        return;
      }
    }
    CNNFAST_ISA_NS::optim_kernels::sgd<T>(param + b, grad + b, bb, e - b, lr, momentum, damp, wd, use_momentum, o.nesterov,
                          o.maximize, o.first_step);
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
  const bool amsgrad = o.amsgrad, maximize = o.maximize, avx2 = fast_path<T>();
  parallel_for(0, n, kGrain, [=](int64_t b, int64_t e) {
    T* mx = amsgrad ? max_sq + b : nullptr;
    if constexpr (std::is_same_v<T, float>) {
      if (avx2) {
        (use_avx512() ? avx512_impl::adam : avx2_impl::adam)(param + b, grad + b, exp_avg + b, exp_avg_sq + b, mx, e - b, neg_step_size, bc2_sqrt, w1,
                        beta2, w2, eps, decay, l2, decoupled, amsgrad, maximize);
        return;
      }
    }
    CNNFAST_ISA_NS::optim_kernels::adam<T>(param + b, grad + b, exp_avg + b, exp_avg_sq + b, mx, e - b, neg_step_size, bc2_sqrt, w1,
                           beta2, w2, eps, decay, l2, decoupled, amsgrad, maximize);
  });
}

template <class T>
void adagrad_step(T* param, const T* grad, T* state_sum, int64_t n, const AdagradOptions& o) {
  const T neg_clr = T(-(o.lr / (1.0 + double(o.step - 1) * o.lr_decay)));
  const T wd = T(o.weight_decay), eps = T(o.eps);
  const bool maximize = o.maximize, avx2 = fast_path<T>();
  parallel_for(0, n, kGrain, [=](int64_t b, int64_t e) {
    if constexpr (std::is_same_v<T, float>) {
      if (avx2) {
        (use_avx512() ? avx512_impl::adagrad : avx2_impl::adagrad)(param + b, grad + b, state_sum + b, e - b, neg_clr, wd, eps, maximize);
        return;
      }
    }
    CNNFAST_ISA_NS::optim_kernels::adagrad<T>(param + b, grad + b, state_sum + b, e - b, neg_clr, wd, eps, maximize);
  });
}

template <class T>
void rmsprop_step(T* param, const T* grad, T* square_avg, T* grad_avg, T* buf, int64_t n, const RmspropOptions& o) {
  const T alpha = T(o.alpha), w = T(1.0 - o.alpha), eps = T(o.eps), wd = T(o.weight_decay);
  const T momentum = T(o.momentum), neg_lr = T(-o.lr);
  const bool centered = o.centered, use_momentum = o.momentum > 0.0, maximize = o.maximize;
  const bool avx2 = fast_path<T>();
  parallel_for(0, n, kGrain, [=](int64_t b, int64_t e) {
    T* ga = centered ? grad_avg + b : nullptr;
    T* bb = use_momentum ? buf + b : nullptr;
    if constexpr (std::is_same_v<T, float>) {
      if (avx2) {
        (use_avx512() ? avx512_impl::rmsprop : avx2_impl::rmsprop)(param + b, grad + b, square_avg + b, ga, bb, e - b, neg_lr, alpha, w, eps, wd, momentum,
                           centered, use_momentum, maximize);
        return;
      }
    }
    CNNFAST_ISA_NS::optim_kernels::rmsprop<T>(param + b, grad + b, square_avg + b, ga, bb, e - b, neg_lr, alpha, w, eps, wd,
                              momentum, centered, use_momentum, maximize);
  });
}

template <class T>
void adadelta_step(T* param, const T* grad, T* square_avg, T* acc_delta, int64_t n, const AdadeltaOptions& o) {
  const T neg_lr = T(-o.lr), rho = T(o.rho), w = T(1.0 - o.rho), eps = T(o.eps), wd = T(o.weight_decay);
  const bool maximize = o.maximize, avx2 = fast_path<T>();
  parallel_for(0, n, kGrain, [=](int64_t b, int64_t e) {
    if constexpr (std::is_same_v<T, float>) {
      if (avx2) {
        (use_avx512() ? avx512_impl::adadelta : avx2_impl::adadelta)(param + b, grad + b, square_avg + b, acc_delta + b, e - b, neg_lr, rho, w, eps, wd,
                            maximize);
        return;
      }
    }
    CNNFAST_ISA_NS::optim_kernels::adadelta<T>(param + b, grad + b, square_avg + b, acc_delta + b, e - b, neg_lr, rho, w, eps, wd,
                               maximize);
  });
}

#define CNNFAST_INSTANTIATE(T)                                                                        \
  template void sgd_step<T>(T*, const T*, T*, int64_t, const SgdOptions&);                            \
  template void adam_step<T>(T*, const T*, T*, T*, T*, int64_t, const AdamOptions&);                  \
  template void adagrad_step<T>(T*, const T*, T*, int64_t, const AdagradOptions&);                    \
  template void rmsprop_step<T>(T*, const T*, T*, T*, T*, int64_t, const RmspropOptions&);            \
  template void adadelta_step<T>(T*, const T*, T*, T*, int64_t, const AdadeltaOptions&);
CNNFAST_INSTANTIATE(float)
CNNFAST_INSTANTIATE(double)
#undef CNNFAST_INSTANTIATE

#if !CNNFAST_HAVE_AVX2_BUILD
// Non-x86 builds have no per-ISA files and never choose those levels, but the
// dispatch above still names them: define them from the portable loops.
namespace avx2_impl {
#include "cpu/optim_isa.inc"
}  // namespace avx2_impl
namespace avx512_impl {
#include "cpu/optim_isa.inc"
}  // namespace avx512_impl
#endif

}  // namespace cnnfast::cpu
