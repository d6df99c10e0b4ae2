// CUDA fused optimizer updates: the functions of csrc/cpu/optim.h for device
// pointers, same names, options structs and in-place contract, with the same
// per-element operation order (options structs of core/op_params.h) as csrc/cpu/optim_kernels.h (no fused multiply-adds,
// so a GPU step rounds like the CPU's scalar step).
#pragma once
#include <cstdint>

#include "core/op_params.h"

namespace cnnfast::cuda {

template <class T>
void sgd_step(T* param, const T* grad, T* momentum_buf, int64_t n, const SgdOptions& o);
template <class T>
void adam_step(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, T* max_exp_avg_sq, int64_t n,
               const AdamOptions& o);
template <class T>
void adagrad_step(T* param, const T* grad, T* state_sum, int64_t n, const AdagradOptions& o);
template <class T>
void rmsprop_step(T* param, const T* grad, T* square_avg, T* grad_avg, T* momentum_buf, int64_t n,
                  const RmspropOptions& o);

}  // namespace cnnfast::cuda
