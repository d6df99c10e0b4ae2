// Activation functions: ReLU, Leaky ReLU, ELU, sigmoid, tanh, SiLU (Swish),
// softmax and log-softmax over one axis. Tensor-free: raw pointers + sizes.
//
// Gradient contract: activation gradients are written (=), never accumulated.
// What each backward needs saved from the forward:
//   relu, leaky_relu, elu, silu  -> the input x
//   sigmoid, tanh, softmax, log_softmax -> the output y
//
// Softmax views its input as (outer, dim, inner) with the reduction over dim,
// which covers "any axis" of a C-contiguous array without a transpose.
#pragma once
#include <cstdint>

namespace cnnfast::cpu {

enum class Activation { ReLU, LeakyReLU, ELU, Sigmoid, Tanh, SiLU };

// param: negative_slope for LeakyReLU, alpha for ELU, unused otherwise.
template <class T>
void activation_forward(Activation act, const T* x, T* y, int64_t n, double param);
template <class T>
void activation_backward(Activation act, const T* grad_y, const T* saved, T* grad_x, int64_t n, double param);

template <class T>
void softmax_forward(const T* x, T* y, int64_t outer, int64_t dim, int64_t inner, bool log);
template <class T>
void softmax_backward(const T* grad_y, const T* y, T* grad_x, int64_t outer, int64_t dim, int64_t inner, bool log);

// The AVX2 float32 kernels, each over one contiguous range; defined in
// activation_avx2.cpp and called only when cpu_features says AVX2 is usable.
// stream: write the output with non-temporal stores (for outputs too large to
// stay in cache, where they save the read that a normal store does first).
namespace avx2_impl {
void activation_forward(Activation act, const float* x, float* y, int64_t n, float param, bool stream);
void activation_backward(Activation act, const float* grad_y, const float* saved, float* grad_x, int64_t n, float param,
                         bool stream);
void softmax_rows_forward(const float* x, float* y, int64_t rows, int64_t dim, bool log);
void softmax_rows_backward(const float* grad_y, const float* y, float* grad_x, int64_t rows, int64_t dim, bool log);
void softmax_inner_forward(const float* x, float* y, int64_t dim, int64_t inner, bool log);
void softmax_inner_backward(const float* grad_y, const float* y, float* grad_x, int64_t dim, int64_t inner, bool log);
}  // namespace avx2_impl

// The AVX-512 float32 kernels (activation_avx512.cpp), same contracts. The
// elementwise ones return false for an activation they have no kernel for, and
// the caller then takes the AVX2 one.
namespace avx512_impl {
bool activation_forward(Activation act, const float* x, float* y, int64_t n, float param, bool stream);
bool activation_backward(Activation act, const float* grad_y, const float* saved, float* grad_x, int64_t n,
                         float param, bool stream);
void softmax_rows_forward(const float* x, float* y, int64_t rows, int64_t dim, bool log);
void softmax_rows_backward(const float* grad_y, const float* y, float* grad_x, int64_t rows, int64_t dim, bool log);
void softmax_inner_forward(const float* x, float* y, int64_t dim, int64_t inner, bool log);
void softmax_inner_backward(const float* grad_y, const float* y, float* grad_x, int64_t dim, int64_t inner, bool log);
}  // namespace avx512_impl

}  // namespace cnnfast::cpu
