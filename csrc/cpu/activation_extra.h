// The activations of today's efficient CNNs: GELU (exact, erf form, and the tanh
// approximation) and erf itself (ONNX's Erf, exact GELU as exported), Hardswish and Hardsigmoid (MobileNetV3), ReLU6 (MobileNetV2),
// Mish and Softplus. Elementwise and tensor-free: raw pointers + a count.
//
// Gradient contract: activation gradients are written (=), never accumulated.
// Every backward takes the forward's input x (none of these is cheaper from y).
// Boundary conventions follow PyTorch: Hardswish's slope is 0 at x = -3 and 1 at
// x = 3; Hardsigmoid's is 0 at +-3; ReLU6's is 0 at 0 and 6; Softplus returns x
// where beta * x > threshold.
#pragma once
#include <cstdint>

namespace cnnfast::cpu {

enum class ExtraActivation { GELU, GELUTanh, Hardswish, Hardsigmoid, ReLU6, Mish, Softplus, Erf };

// beta, threshold: Softplus only (ignored by the others).
template <class T>
void extra_activation_forward(ExtraActivation act, const T* x, T* y, int64_t n, double beta, double threshold);
template <class T>
void extra_activation_backward(ExtraActivation act, const T* grad_y, const T* x, T* grad_x, int64_t n, double beta,
                               double threshold);

// AVX2+FMA float32 kernels over one contiguous range (activation_extra_avx2.cpp).
namespace avx2_impl {
void extra_activation_forward(ExtraActivation act, const float* x, float* y, int64_t n, float beta, float threshold);
void extra_activation_backward(ExtraActivation act, const float* grad_y, const float* x, float* grad_x, int64_t n,
                               float beta, float threshold);
}  // namespace avx2_impl

// AVX-512 float32 kernels over one contiguous range (activation_extra_avx512.cpp); stream:
// the output's aligned body with non-temporal stores.
namespace avx512_impl {
void extra_activation_forward(ExtraActivation act, const float* x, float* y, int64_t n, float beta, float threshold,
                              bool stream);
void extra_activation_backward(ExtraActivation act, const float* grad_y, const float* x, float* grad_x, int64_t n,
                               float beta, float threshold, bool stream);
}  // namespace avx512_impl

}  // namespace cnnfast::cpu
