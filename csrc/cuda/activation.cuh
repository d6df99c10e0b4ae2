// CUDA activations: the functions of csrc/cpu/activation.h for device pointers,
// same names, same argument order, same saved-tensor contract.
#pragma once
#include <cstdint>

#include "cpu/activation.h"

namespace cnnfast::cuda {

using cpu::Activation;

template <class T>
void activation_forward(Activation act, const T* x, T* y, int64_t n, double param);
template <class T>
void activation_backward(Activation act, const T* grad_y, const T* saved, T* grad_x, int64_t n, double param);
template <class T>
void softmax_forward(const T* x, T* y, int64_t outer, int64_t dim, int64_t inner, bool log);
template <class T>
void softmax_backward(const T* grad_y, const T* y, T* grad_x, int64_t outer, int64_t dim, int64_t inner, bool log);

}  // namespace cnnfast::cuda
