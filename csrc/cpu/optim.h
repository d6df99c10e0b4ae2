// Fused optimizer updates: SGD (momentum, dampening, Nesterov, weight decay),
// Adam/AdamW (AMSGrad), Adagrad, RMSprop (centered, momentum) and Adadelta. One call
// updates one parameter array and its state arrays in place, element by element,
// in a single pass over memory instead of the 4-8 passes an op-by-op update takes.
//
// Arithmetic follows PyTorch's single-tensor (foreach=False) implementations step
// by step, in the same order and in the parameter's dtype: scalars derived from
// hyper-parameters (bias corrections, step sizes, decayed learning rates) are
// computed in double, as torch computes them in Python, then cast to T once, as
// torch casts a Python scalar to the tensor's dtype. That keeps cnnfast and torch
// within float rounding of each other over many steps.
//
// Contract: param and the state arrays are read and written (=); grad is read only.
// All arrays hold n elements. Optional state (nullptr allowed) is noted per function.
#pragma once
#include <cstdint>

namespace cnnfast::cpu {

struct SgdOptions {
  double lr, momentum, dampening, weight_decay;
  bool nesterov, maximize;
  // The first step with momentum copies the (decayed) gradient into the buffer, as torch.
  bool first_step;
};
// momentum_buf: required when momentum != 0, else ignored.
template <class T>
void sgd_step(T* param, const T* grad, T* momentum_buf, int64_t n, const SgdOptions& o);

struct AdamOptions {
  double lr, beta1, beta2, eps, weight_decay;
  int64_t step;  // 1 on the first call
  bool amsgrad, maximize;
  bool decoupled_weight_decay;  // AdamW: param *= 1 - lr * weight_decay before the update
};
// max_exp_avg_sq: required when amsgrad.
template <class T>
void adam_step(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, T* max_exp_avg_sq, int64_t n,
               const AdamOptions& o);

struct AdagradOptions {
  double lr, lr_decay, weight_decay, eps;
  int64_t step;  // 1 on the first call
  bool maximize;
};
template <class T>
void adagrad_step(T* param, const T* grad, T* state_sum, int64_t n, const AdagradOptions& o);

struct RmspropOptions {
  double lr, alpha, eps, weight_decay, momentum;
  bool centered, maximize;
};
// grad_avg: required when centered; momentum_buf: required when momentum > 0.
template <class T>
void rmsprop_step(T* param, const T* grad, T* square_avg, T* grad_avg, T* momentum_buf, int64_t n,
                  const RmspropOptions& o);

struct AdadeltaOptions {
  double lr, rho, eps, weight_decay;
  bool maximize;
};
template <class T>
void adadelta_step(T* param, const T* grad, T* square_avg, T* acc_delta, int64_t n, const AdadeltaOptions& o);

// The AVX2+FMA float32 builds of the same loops (csrc/cpu/optim_kernels.h), each over
// one contiguous chunk; defined in optim_avx2.cpp, called only when AVX2 is usable.
namespace avx2_impl {
#include "cpu/optim_isa_decls.inc"
}  // namespace avx2_impl
// The AVX-512 build of the same loops (optim_avx512.cpp).
namespace avx512_impl {
#include "cpu/optim_isa_decls.inc"
}  // namespace avx512_impl

}  // namespace cnnfast::cpu
