// AVX2+FMA float32 build of the optimizer loops in optim_kernels.h: the same source
// as the scalar reference, compiled with -mavx2 -mfma so the compiler vectorises
// each update 8 floats wide (sqrt and division included). FMA contraction can move
// the result by an ulp relative to the reference; tests compare both with torch.
#include "cpu/optim.h"
#include "cpu/optim_kernels.h"

namespace cnnfast::cpu::avx2_impl {

void sgd(float* param, const float* grad, float* buf, int64_t n, float lr, float momentum, float damp, float wd,
         bool use_momentum, bool nesterov, bool maximize, bool first_step) {
  CNNFAST_ISA_NS::optim_kernels::sgd<float>(param, grad, buf, n, lr, momentum, damp, wd, use_momentum, nesterov, maximize,
                            first_step);
}

void adam(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, float* max_sq, int64_t n,
          float neg_step_size, float bc2_sqrt, float w1, float beta2, float w2, float eps, float decay, float l2,
          bool decoupled, bool amsgrad, bool maximize) {
  CNNFAST_ISA_NS::optim_kernels::adam<float>(param, grad, exp_avg, exp_avg_sq, max_sq, n, neg_step_size, bc2_sqrt, w1, beta2, w2,
                             eps, decay, l2, decoupled, amsgrad, maximize);
}

void adagrad(float* param, const float* grad, float* state_sum, int64_t n, float neg_clr, float wd, float eps,
             bool maximize) {
  CNNFAST_ISA_NS::optim_kernels::adagrad<float>(param, grad, state_sum, n, neg_clr, wd, eps, maximize);
}

void rmsprop(float* param, const float* grad, float* square_avg, float* grad_avg, float* buf, int64_t n,
             float neg_lr, float alpha, float w, float eps, float wd, float momentum, bool centered,
             bool use_momentum, bool maximize) {
  CNNFAST_ISA_NS::optim_kernels::rmsprop<float>(param, grad, square_avg, grad_avg, buf, n, neg_lr, alpha, w, eps, wd, momentum,
                                centered, use_momentum, maximize);
}

void adadelta(float* param, const float* grad, float* square_avg, float* acc_delta, int64_t n, float neg_lr,
              float rho, float w, float eps, float wd, bool maximize) {
  CNNFAST_ISA_NS::optim_kernels::adadelta<float>(param, grad, square_avg, acc_delta, n, neg_lr, rho, w, eps, wd, maximize);
}

}  // namespace cnnfast::cpu::avx2_impl
