// CUDA losses: the per-element formulas of csrc/cpu/loss.h on device pointers.
// Unlike the CPU functions (which return the host double sum), these keep the
// result on the device: each forward accumulates its sum (and, for class-index
// losses, the 'mean' denominator: the summed weight of the kept targets) into
// acc[0] / acc[1] (device doubles the caller zeroes), writes per-element losses
// when elem is not null, and reports the first out-of-range target in *bad
// (atomicMin of the flat position; the caller initialises it to all ones).
// Backward functions take the upstream gradient on the device: per element
// (grad_elem), or one value grad_scalar[0] divided by denom_host, or by
// *denom_dev when that is not null. Gradients are written (=).
#pragma once
#include <cstdint>

#include "cpu/loss.h"

namespace cnnfast::cuda {

using cpu::Pointwise;

struct LossGrad {
  const void* grad = nullptr;  // T*: per element, or one value
  bool per_elem = false;
  double denom_host = 1.0;
  const double* denom_dev = nullptr;
};

// out[0] = T(acc[0] / (denom_dev ? *denom_dev : denom_host)).
template <class T>
void loss_finalize(const double* acc, const double* denom_dev, double denom_host, T* out);

template <class T>
void pointwise_loss_forward(Pointwise kind, const T* x, const T* t, T* elem, int64_t n, double param, double* acc);
template <class T>
void pointwise_loss_backward(Pointwise kind, const LossGrad& g, const T* x, const T* t, T* grad_x, int64_t n,
                             double param);

template <class T>
void cross_entropy_forward(const T* x, const int64_t* target, const T* weight, T* elem, T* lse, int64_t N, int64_t C,
                           int64_t S, int64_t ignore_index, double label_smoothing, double* acc,
                           unsigned long long* bad);
template <class T>
void cross_entropy_backward(const LossGrad& g, const T* x, const int64_t* target, const T* weight, const T* lse,
                            T* grad_x, int64_t N, int64_t C, int64_t S, int64_t ignore_index, double label_smoothing);

// Class-probability targets (N, C, S) of x's dtype; the 'mean' divisor is N*S.
template <class T>
void cross_entropy_prob_forward(const T* x, const T* target, const T* weight, T* elem, T* lse, int64_t N, int64_t C,
                                int64_t S, double label_smoothing, double* acc);
template <class T>
void cross_entropy_prob_backward(const LossGrad& g, const T* x, const T* target, const T* weight, const T* lse,
                                 T* grad_x, int64_t N, int64_t C, int64_t S, double label_smoothing);

template <class T>
void nll_loss_forward(const T* x, const int64_t* target, const T* weight, T* elem, int64_t N, int64_t C, int64_t S,
                      int64_t ignore_index, double* acc, unsigned long long* bad);
template <class T>
void nll_loss_backward(const LossGrad& g, const int64_t* target, const T* weight, T* grad_x, int64_t N, int64_t C,
                       int64_t S, int64_t ignore_index);

// acc[1] += summed weight of the targets that are not ignore_index (the 'mean' denominator); bad as above.
template <class T>
void index_target_denominator(const int64_t* target, const T* weight, int64_t samples, int64_t C,
                              int64_t ignore_index, double* acc, unsigned long long* bad);

// BCE; logits selects binary_cross_entropy_with_logits. For probabilities, *bad
// receives the first element outside [0, 1].
template <class T>
void bce_forward(bool logits, const T* x, const T* t, const T* weight, int64_t wn, const T* pos_weight, int64_t pn,
                 T* elem, int64_t n, double* acc, unsigned long long* bad);
template <class T>
void bce_backward(bool logits, const LossGrad& g, const T* x, const T* t, const T* weight, int64_t wn,
                  const T* pos_weight, int64_t pn, T* grad_x, int64_t n);

// Multi-class hinge on x (N, C), one thread per sample; *bad as above for targets outside [0, C).
template <class T>
void multi_margin_forward(const T* x, const int64_t* target, const T* weight, T* elem, int64_t N, int64_t C, int p,
                          double margin, double* acc, unsigned long long* bad);
template <class T>
void multi_margin_backward(const LossGrad& g, const T* x, const int64_t* target, const T* weight, T* grad_x,
                           int64_t N, int64_t C, int p, double margin);

// Triplet margin on (N, D) rows, one thread per sample.
template <class T>
void triplet_margin_forward(const T* a, const T* pos, const T* neg, T* elem, int64_t N, int64_t D, double margin,
                            double p, double eps, bool swap, double* acc);
template <class T>
void triplet_margin_backward(const LossGrad& g, const T* a, const T* pos, const T* neg, T* grad_a, T* grad_p,
                             T* grad_n, int64_t N, int64_t D, double margin, double p, double eps, bool swap);

}  // namespace cnnfast::cuda
