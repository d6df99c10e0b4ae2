// CUDA fused optimizer updates: the functions of csrc/cpu/optim.h for device
// pointers, same names, options structs and in-place contract, with the same
// per-element operation order as csrc/cpu/optim_kernels.h (no fused multiply-adds,
// so a GPU step rounds like the CPU's scalar step).
#pragma once
#include <cstdint>

#include "cpu/optim.h"

namespace cnnfast::cuda {

template <class T>
void sgd_step(T* param, const T* grad, T* momentum_buf, int64_t n, const cpu::SgdOptions& o);
template <class T>
void adam_step(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, T* max_exp_avg_sq, int64_t n,
               const cpu::AdamOptions& o);
template <class T>
void adagrad_step(T* param, const T* grad, T* state_sum, int64_t n, const cpu::AdagradOptions& o);
template <class T>
void rmsprop_step(T* param, const T* grad, T* square_avg, T* grad_avg, T* momentum_buf, int64_t n,
                  const cpu::RmspropOptions& o);

}  // namespace cnnfast::cuda
