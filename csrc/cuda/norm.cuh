// CUDA normalisation layers: the functions of csrc/cpu/norm.h for device
// pointers, same names, arguments and contracts (grad_x written, parameter
// gradients accumulated; weight/bias may be null). Statistics are two-pass with
// double accumulators and warp-shuffle block reductions, as accurate as the CPU's.
#pragma once
#include <cstdint>

namespace cnnfast::cuda {

template <class T>
void batch_norm_forward(const T* x, T* y, int64_t N, int64_t C, int64_t S, const T* weight, const T* bias,
                        T* running_mean, T* running_var, bool training, double momentum, double eps, T* save_mean,
                        T* save_rstd);
template <class T>
void batch_norm_backward(const T* grad_y, const T* x, T* grad_x, int64_t N, int64_t C, int64_t S, const T* weight,
                         const T* save_mean, const T* save_rstd, bool training, T* grad_weight, T* grad_bias);
template <class T>
void group_norm_forward(const T* x, T* y, int64_t N, int64_t C, int64_t S, int64_t G, const T* weight,
                        const T* bias, double eps, T* mean, T* rstd, T* var_out);
template <class T>
void group_norm_backward(const T* grad_y, const T* x, T* grad_x, int64_t N, int64_t C, int64_t S, int64_t G,
                         const T* weight, const T* mean, const T* rstd, T* grad_weight, T* grad_bias);
// InstanceNorm's running statistics from group_norm_forward's (N, C) mean and
// biased variance: r = (1 - momentum) r + momentum * batch average (variance unbiased by S/(S-1)).
template <class T>
void instance_norm_update_running(const T* mean, const T* var, T* running_mean, T* running_var, int64_t N, int64_t C,
                                  int64_t S, double momentum);
template <class T>
void layer_norm_forward(const T* x, T* y, int64_t R, int64_t L, const T* weight, const T* bias, double eps, T* mean,
                        T* rstd);
template <class T>
void layer_norm_backward(const T* grad_y, const T* x, T* grad_x, int64_t R, int64_t L, const T* weight,
                         const T* mean, const T* rstd, T* grad_weight, T* grad_bias);
template <class T>
void lrn_forward(const T* x, T* y, T* denom, int64_t N, int64_t C, int64_t S, int64_t size, double alpha,
                 double beta, double k);
template <class T>
void lrn_backward(const T* grad_y, const T* x, const T* y, const T* denom, T* grad_x, int64_t N, int64_t C,
                  int64_t S, int64_t size, double alpha, double beta);

}  // namespace cnnfast::cuda
