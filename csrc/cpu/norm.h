// Normalisation layers: BatchNorm, InstanceNorm, GroupNorm, LayerNorm and
// Local Response Normalisation across channels. Tensor-free: raw pointers + sizes.
//
// Layouts: BatchNorm / InstanceNorm / GroupNorm / LRN see their input as
// x: (N, C, S) with S the product of the spatial sizes (S = 1 for (N, C)).
// LayerNorm sees x: (R, L) with L the product of normalized_shape.
//
// Gradient contract: activation gradients (grad_x) are written (=); parameter
// gradients (grad_weight, grad_bias) accumulate (+=) into what the caller passes,
// so the binding zero-fills them when it returns fresh arrays.
// weight / bias may be nullptr (affine=False): weight is then 1 and bias 0.
//
// Statistics are two-pass (mean, then the sum of squared deviations from it) over
// blocks that stay in L1, merged with Chan et al.'s pairwise update in double, so
// memory is read once and a large mean next to a small spread loses nothing
// (E[x^2] - E[x]^2 would). The forward saves mean and rstd = 1/sqrt(var + eps)
// for the backward, which recomputes x_hat from x instead of storing it.
#pragma once
#include <cstdint>

namespace cnnfast::cpu {

// Training: batch statistics per channel over (N, S); when running_mean /
// running_var are not null they are updated in place with
// r = (1 - momentum) * r + momentum * stat, using the unbiased batch variance.
// Evaluation (training = false): running_mean / running_var are used.
// save_mean, save_rstd: (C,) outputs, the statistics used (batch or running).
template <class T>
void batch_norm_forward(const T* x, T* y, int64_t N, int64_t C, int64_t S, const T* weight, const T* bias,
                        T* running_mean, T* running_var, bool training, double momentum, double eps, T* save_mean,
                        T* save_rstd);
// training selects the batch-statistics gradient (mean and variance depend on x)
// or the evaluation one (they are constants).
template <class T>
void batch_norm_backward(const T* grad_y, const T* x, T* grad_x, int64_t N, int64_t C, int64_t S, const T* weight,
                         const T* save_mean, const T* save_rstd, bool training, T* grad_weight, T* grad_bias);

// GroupNorm: statistics per (n, g) over the C/G channels of group g and S;
// InstanceNorm is G = C. mean, rstd: (N, G) outputs. var_out (N, G), optional:
// the biased variance, for InstanceNorm's running statistics.
template <class T>
void group_norm_forward(const T* x, T* y, int64_t N, int64_t C, int64_t S, int64_t G, const T* weight,
                        const T* bias, double eps, T* mean, T* rstd, T* var_out);
template <class T>
void group_norm_backward(const T* grad_y, const T* x, T* grad_x, int64_t N, int64_t C, int64_t S, int64_t G,
                         const T* weight, const T* mean, const T* rstd, T* grad_weight, T* grad_bias);

// LayerNorm over rows of length L; weight, bias: (L,) elementwise affine.
// mean, rstd: (R,) outputs.
template <class T>
void layer_norm_forward(const T* x, T* y, int64_t R, int64_t L, const T* weight, const T* bias, double eps, T* mean,
                        T* rstd);
template <class T>
void layer_norm_backward(const T* grad_y, const T* x, T* grad_x, int64_t R, int64_t L, const T* weight,
                         const T* mean, const T* rstd, T* grad_weight, T* grad_bias);

// LRN (torch's formula): y = x / d, d = (k + alpha/size * sum_{window} x^2)^beta,
// window over channels [c - size/2, c + (size-1)/2], zero padded.
// denom: (N, C, S) output, k + alpha/size * sum(x^2) (before the power), kept for
// the backward.
template <class T>
void lrn_forward(const T* x, T* y, T* denom, int64_t N, int64_t C, int64_t S, int64_t size, double alpha,
                 double beta, double k);
template <class T>
void lrn_backward(const T* grad_y, const T* x, const T* y, const T* denom, T* grad_x, int64_t N, int64_t C,
                  int64_t S, int64_t size, double alpha, double beta);

// Row primitives over n contiguous elements, AVX2 and AVX-512 float32 versions
// (norm_avx2.cpp, norm_avx512.cpp).
// The scalar versions live in norm.cpp; which one runs is chosen per call.
namespace avx2_impl {
#include "cpu/norm_isa_decls.inc"
}  // namespace avx2_impl
namespace avx512_impl {
#include "cpu/norm_isa_decls.inc"
}  // namespace avx512_impl

}  // namespace cnnfast::cpu
