// Loss functions, forward and backward: L1, MSE, Huber, Smooth L1, cross-entropy
// from logits (class indices or class probabilities, weights, ignore_index,
// label smoothing), NLL, binary cross-entropy (with logits and on
// probabilities), multi-class hinge (multi_margin) and triplet margin.
// Tensor-free: raw pointers + sizes.
//
// Reductions: the forward writes the per-element (or per-sample) loss into
// `elem` when it is not null ('none') and returns the double sum of all of them
// ('sum'; the caller divides for 'mean'). Sums run over fixed blocks whose
// partial results are added in block order, so they do not depend on the thread
// count. The backward takes the upstream gradient either as one scalar
// (grad_scalar, already divided by the 'mean' denominator; grad_elem null) or per
// element (grad_elem, 'none').
//
// Gradient contract: every gradient here is an activation gradient, written (=).
//
// Layout of class-structured losses: input (N, C, S) with S the product of the
// trailing dims (S = 1 for (N, C)); per-sample arrays (targets, per-sample
// losses, log-sum-exp) are (N, S).
#pragma once
#include <cstdint>

namespace cnnfast::cpu {

enum class Pointwise { L1, MSE, Huber, SmoothL1 };

// param: delta for Huber, beta for SmoothL1 (beta = 0 is L1), unused otherwise.
template <class T>
double pointwise_loss_forward(Pointwise kind, const T* x, const T* t, T* elem, int64_t n, double param);
// grad_x = g * d loss / d x; the target's gradient is its negative.
template <class T>
void pointwise_loss_backward(Pointwise kind, const T* grad_elem, double grad_scalar, const T* x, const T* t,
                             T* grad_x, int64_t n, double param);

// Cross-entropy from logits with class-index targets.
// target: (N, S) int64, checked by the caller to lie in [0, C) or equal ignore_index.
// weight: (C,) or null. lse: (N, S) output, the log-sum-exp of each sample's logits.
// Returns the sum of the per-sample losses; *denom receives the 'mean' divisor
// (the summed weight of the non-ignored targets, or their count).
template <class T>
double cross_entropy_forward(const T* x, const int64_t* target, const T* weight, T* elem, T* lse, int64_t N, int64_t C,
                             int64_t S, int64_t ignore_index, double label_smoothing, double* denom);
template <class T>
void cross_entropy_backward(const T* grad_elem, double grad_scalar, const T* x, const int64_t* target,
                            const T* weight, const T* lse, T* grad_x, int64_t N, int64_t C, int64_t S,
                            int64_t ignore_index, double label_smoothing);
// Class-probability targets: target (N, C, S) of x's dtype; the 'mean' divisor is N*S.
template <class T>
double cross_entropy_prob_forward(const T* x, const T* target, const T* weight, T* elem, T* lse, int64_t N, int64_t C,
                                  int64_t S, double label_smoothing);
template <class T>
void cross_entropy_prob_backward(const T* grad_elem, double grad_scalar, const T* x, const T* target,
                                 const T* weight, const T* lse, T* grad_x, int64_t N, int64_t C, int64_t S,
                                 double label_smoothing);

// NLL on log-probabilities x (N, C, S); same target and denom rules as cross_entropy.
template <class T>
double nll_loss_forward(const T* x, const int64_t* target, const T* weight, T* elem, int64_t N, int64_t C, int64_t S,
                        int64_t ignore_index, double* denom);
template <class T>
void nll_loss_backward(const T* grad_elem, double grad_scalar, const int64_t* target, const T* weight, T* grad_x,
                       int64_t N, int64_t C, int64_t S, int64_t ignore_index);

// Binary cross-entropy. weight / pos_weight: null or a vector of length wn / pn
// that repeats along the flattened input (element i uses weight[i % wn]), which
// covers weights broadcast over leading dims (the binding materialises others).
template <class T>
double bce_logits_forward(const T* x, const T* t, const T* weight, int64_t wn, const T* pos_weight, int64_t pn,
                          T* elem, int64_t n);
template <class T>
void bce_logits_backward(const T* grad_elem, double grad_scalar, const T* x, const T* t, const T* weight, int64_t wn,
                         const T* pos_weight, int64_t pn, T* grad_x, int64_t n);
// On probabilities x in [0, 1] (checked by the caller); logs clamped at -100 as torch.
template <class T>
double bce_forward(const T* x, const T* t, const T* weight, int64_t wn, T* elem, int64_t n);
template <class T>
void bce_backward(const T* grad_elem, double grad_scalar, const T* x, const T* t, const T* weight, int64_t wn,
                  T* grad_x, int64_t n);

// Multi-class hinge: loss_i = sum_{c != y_i} w[y_i] * max(0, margin - x[y_i] + x[c])^p / C.
// x: (N, C), target (N,) checked in range; p is 1 or 2.
template <class T>
double multi_margin_forward(const T* x, const int64_t* target, const T* weight, T* elem, int64_t N, int64_t C, int p,
                            double margin);
template <class T>
void multi_margin_backward(const T* grad_elem, double grad_scalar, const T* x, const int64_t* target,
                           const T* weight, T* grad_x, int64_t N, int64_t C, int p, double margin);

// Triplet margin: loss_i = max(d(a_i, p_i) - d(a_i, n_i) + margin, 0) with
// d(u, v) = ||u - v + eps||_p; swap replaces d(a, n) by min(d(a, n), d(p, n)).
// a, pos, neg: (N, D).
template <class T>
double triplet_margin_forward(const T* a, const T* pos, const T* neg, T* elem, int64_t N, int64_t D, double margin,
                              double p, double eps, bool swap);
template <class T>
void triplet_margin_backward(const T* grad_elem, double grad_scalar, const T* a, const T* pos, const T* neg,
                             T* grad_a, T* grad_p, T* grad_n, int64_t N, int64_t D, double margin, double p,
                             double eps, bool swap);

// The vector float32 kernels, one namespace per level (loss_<isa>.cpp).
namespace avx2_impl {
#include "cpu/loss_isa_decls.inc"
}  // namespace avx2_impl
namespace avx512_impl {
#include "cpu/loss_isa_decls.inc"
}  // namespace avx512_impl

}  // namespace cnnfast::cpu
