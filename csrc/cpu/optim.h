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

#include "core/op_params.h"

namespace cnnfast::cpu {

// The option structs are shared with the CUDA kernels (core/op_params.h).
using cnnfast::AdadeltaOptions;
using cnnfast::AdagradOptions;
using cnnfast::AdamOptions;
using cnnfast::RmspropOptions;
using cnnfast::SgdOptions;

// momentum_buf: required when momentum != 0, else ignored.
template <class T>
void sgd_step(T* param, const T* grad, T* momentum_buf, int64_t n, const SgdOptions& o);

// max_exp_avg_sq: required when amsgrad.
template <class T>
void adam_step(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, T* max_exp_avg_sq, int64_t n,
               const AdamOptions& o);

template <class T>
void adagrad_step(T* param, const T* grad, T* state_sum, int64_t n, const AdagradOptions& o);

// grad_avg: required when centered; momentum_buf: required when momentum > 0.
template <class T>
void rmsprop_step(T* param, const T* grad, T* square_avg, T* grad_avg, T* momentum_buf, int64_t n,
                  const RmspropOptions& o);

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
