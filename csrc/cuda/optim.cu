// CUDA optimizer kernels: one thread per element (grid-stride), each the loop
// body of optim_kernels.h. The arithmetic goes through round-to-nearest
// intrinsics (add/mul/div/sqrt _rn), which the compiler never contracts into
// FMAs, so every intermediate rounds exactly as in the CPU's scalar loop; the
// hyper-parameter scalars are derived on the host exactly as in optim.cpp.
#include <cmath>

#include "cuda/common.cuh"
#include "cuda/optim.cuh"

namespace cnnfast::cuda {
namespace {

__device__ __forceinline__ float add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float dv(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double dv(double a, double b) { return __ddiv_rn(a, b); }
__device__ __forceinline__ float sq(float a) { return __fsqrt_rn(a); }
__device__ __forceinline__ double sq(double a) { return __dsqrt_rn(a); }

// torch.lerp's two-sided formula.
template <class T>
__device__ __forceinline__ T lerp(T self, T end, T w) {
  return fabs(w) < T(0.5) ? add(self, mul(w, add(end, -self))) : add(end, -mul(add(end, -self), add(T(1), -w)));
}

#define CNNFAST_GRID_LOOP(i, n) \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); i += int64_t(blockDim.x) * gridDim.x)

template <class T>
__global__ void sgd_kernel(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ buf, int64_t n, T lr,
                           T momentum, T damp, T wd, bool use_momentum, bool nesterov, bool maximize,
                           bool first_step) {
  CNNFAST_GRID_LOOP(i, n) {
    T g = maximize ? -grad[i] : grad[i];
    g = add(g, mul(wd, param[i]));
    if (use_momentum) {
      const T m = first_step ? g : add(mul(buf[i], momentum), mul(damp, g));
      buf[i] = m;
      g = nesterov ? add(g, mul(momentum, m)) : m;
    }
    param[i] = add(param[i], mul(-lr, g));
  }
}

template <class T>
__global__ void adam_kernel(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ exp_avg,
                            T* __restrict__ exp_avg_sq, T* __restrict__ max_sq, int64_t n, T neg_step_size,
                            T bc2_sqrt, T w1, T beta2, T w2, T eps, T decay, T l2, bool decoupled, bool amsgrad,
                            bool maximize) {
  CNNFAST_GRID_LOOP(i, n) {
    T p = param[i];
    if (decoupled) p = mul(p, decay);
    T g = maximize ? -grad[i] : grad[i];
    g = add(g, mul(l2, p));
    const T m = lerp(exp_avg[i], g, w1);
    exp_avg[i] = m;
    const T v = add(mul(exp_avg_sq[i], beta2), mul(mul(w2, g), g));
    exp_avg_sq[i] = v;
    T vmax = v;
    if (amsgrad) {
      vmax = max_sq[i] > v ? max_sq[i] : v;
      max_sq[i] = vmax;
    }
    const T denom = add(dv(sq(vmax), bc2_sqrt), eps);
    param[i] = add(p, mul(neg_step_size, dv(m, denom)));
  }
}

template <class T>
__global__ void adagrad_kernel(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ state_sum,
                               int64_t n, T neg_clr, T wd, T eps, bool maximize) {
  CNNFAST_GRID_LOOP(i, n) {
    T g = maximize ? -grad[i] : grad[i];
    g = add(g, mul(wd, param[i]));
    const T s = add(state_sum[i], mul(g, g));
    state_sum[i] = s;
    param[i] = add(param[i], mul(neg_clr, dv(g, add(sq(s), eps))));
  }
}

template <class T>
__global__ void rmsprop_kernel(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ square_avg,
                               T* __restrict__ grad_avg, T* __restrict__ buf, int64_t n, T neg_lr, T alpha, T w, T eps,
                               T wd, T momentum, bool centered, bool use_momentum, bool maximize) {
  CNNFAST_GRID_LOOP(i, n) {
    T g = maximize ? -grad[i] : grad[i];
    g = add(g, mul(wd, param[i]));
    const T s2 = add(mul(square_avg[i], alpha), mul(mul(w, g), g));
    square_avg[i] = s2;
    T avg;
    if (centered) {
      const T ga = lerp(grad_avg[i], g, w);
      grad_avg[i] = ga;
      avg = sq(add(s2, mul(mul(T(-1), ga), ga)));
    } else {
      avg = sq(s2);
    }
    avg = add(avg, eps);
    if (use_momentum) {
      const T m = add(mul(buf[i], momentum), dv(g, avg));
      buf[i] = m;
      param[i] = add(param[i], mul(neg_lr, m));
    } else {
      param[i] = add(param[i], mul(neg_lr, dv(g, avg)));
    }
  }
}

#undef CNNFAST_GRID_LOOP

constexpr int kThreads = 256;

}  // namespace

template <class T>
void sgd_step(T* param, const T* grad, T* buf, int64_t n, const SgdOptions& o) {
  if (n == 0) return;
  sgd_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, current_stream()>>>(
      param, grad, buf, n, T(o.lr), T(o.momentum), T(1.0 - o.dampening), T(o.weight_decay), o.momentum != 0.0,
      o.nesterov, o.maximize, o.first_step);
  check_launch("sgd_kernel");
}

template <class T>
void adam_step(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, T* max_sq, int64_t n, const AdamOptions& o) {
  if (n == 0) return;
  const double bias_correction1 = 1.0 - std::pow(o.beta1, double(o.step));
  const double bias_correction2 = 1.0 - std::pow(o.beta2, double(o.step));
  const T neg_step_size = T(-(o.lr / bias_correction1));
  const T bc2_sqrt = T(std::sqrt(bias_correction2));
  const T decay = T(1.0 - o.lr * o.weight_decay);
  const T l2 = o.decoupled_weight_decay ? T(0) : T(o.weight_decay);
  const bool decoupled = o.decoupled_weight_decay && o.weight_decay != 0.0;
  adam_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, current_stream()>>>(
      param, grad, exp_avg, exp_avg_sq, max_sq, n, neg_step_size, bc2_sqrt, T(1.0 - o.beta1), T(o.beta2),
      T(1.0 - o.beta2), T(o.eps), decay, l2, decoupled, o.amsgrad, o.maximize);
  check_launch("adam_kernel");
}

template <class T>
void adagrad_step(T* param, const T* grad, T* state_sum, int64_t n, const AdagradOptions& o) {
  if (n == 0) return;
  const T neg_clr = T(-(o.lr / (1.0 + double(o.step - 1) * o.lr_decay)));
  adagrad_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, current_stream()>>>(
      param, grad, state_sum, n, neg_clr, T(o.weight_decay), T(o.eps), o.maximize);
  check_launch("adagrad_kernel");
}

template <class T>
void rmsprop_step(T* param, const T* grad, T* square_avg, T* grad_avg, T* buf, int64_t n,
                  const RmspropOptions& o) {
  if (n == 0) return;
  rmsprop_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, current_stream()>>>(
      param, grad, square_avg, grad_avg, buf, n, T(-o.lr), T(o.alpha), T(1.0 - o.alpha), T(o.eps),
      T(o.weight_decay), T(o.momentum), o.centered, o.momentum > 0.0, o.maximize);
  check_launch("rmsprop_kernel");
}

#define CNNFAST_INSTANTIATE(T)                                                                        \
  template void sgd_step<T>(T*, const T*, T*, int64_t, const SgdOptions&);                       \
  template void adam_step<T>(T*, const T*, T*, T*, T*, int64_t, const AdamOptions&);             \
  template void adagrad_step<T>(T*, const T*, T*, int64_t, const AdagradOptions&);               \
  template void rmsprop_step<T>(T*, const T*, T*, T*, T*, int64_t, const RmspropOptions&);
CNNFAST_INSTANTIATE(float)
CNNFAST_INSTANTIATE(double)
#undef CNNFAST_INSTANTIATE

}  // namespace cnnfast::cuda
