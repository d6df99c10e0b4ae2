// CUDA convolution, linear and GEMM: the functions of csrc/cpu/conv.h and
// gemm.h for device pointers, same names and argument order, except that the
// CPU's algorithm choice is replaced by `tf32`: false (the default everywhere)
// is exact FP32/FP64 FFMA, true lets float32 products run on the tensor cores in
// TF32 (10-bit mantissa inputs, FP32 accumulation). double ignores `tf32`.
//
// All three convolution passes are one implicit-GEMM kernel (no im2col buffer):
// the operand tiles are gathered from x / weight / grad_output straight into
// shared memory. Depthwise layers (one input channel per group) use direct
// kernels instead. Gradient contract as on the CPU: conv_backward_data writes
// grad_x (=); conv_backward_weight and bias_backward accumulate (+=).
#pragma once
#include <cstdint>

#include "cpu/conv.h"

namespace cnnfast::cuda {

using cpu::ConvShape;

// The process-wide default for callers that do not pass tf32 explicitly.
bool allow_tf32();
void set_allow_tf32(bool on);

// Index ranges the 32-bit in-kernel coordinate arithmetic supports; the binding
// layer rejects larger problems with a ValueError.
bool conv_shape_supported(const ConvShape& s);

template <class T>
void conv_forward(const ConvShape& s, const T* x, const T* w, T* y, bool tf32);
template <class T>
void conv_backward_data(const ConvShape& s, const T* grad_y, const T* w, T* grad_x, bool tf32);
template <class T>
void conv_backward_weight(const ConvShape& s, const T* grad_y, const T* x, T* grad_w, bool tf32);

template <class T>
void bias_forward(T* y, const T* b, int64_t N, int64_t C, int64_t S);
template <class T>
void bias_backward(const T* grad_y, T* grad_b, int64_t N, int64_t C, int64_t S);

template <class T>
void linear_forward(const T* x, const T* w, const T* b, T* y, int64_t M, int64_t in, int64_t out, bool tf32);
template <class T>
void linear_backward(const T* grad_y, const T* x, const T* w, T* grad_x, T* grad_w, T* grad_b, int64_t M, int64_t in,
                     int64_t out, bool tf32);

// C (M x N, ldc) (+)= A(i, k) = A[i*rs_a + k*cs_a] times B(k, j) = B[k*rs_b + j*cs_b].
template <class T>
void gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t rs_a, int64_t cs_a, const T* B, int64_t rs_b,
          int64_t cs_b, T* C, int64_t ldc, bool accumulate, bool tf32);

}  // namespace cnnfast::cuda
