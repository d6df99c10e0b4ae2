// CUDA activation kernels, then their host launchers. Elementwise kernels use a
// grid-stride loop; softmax uses one block per line when the reduced axis is
// contiguous (inner == 1) and one thread per line otherwise, where neighbouring
// threads read neighbouring addresses.
#include <cmath>

#include "cuda/activation.cuh"
#include "cuda/common.cuh"

namespace cnnfast::cuda {
namespace {

template <class T>
__device__ __forceinline__ T sigmoid_d(T x) {
  return T(1) / (T(1) + exp(-x));
}

template <class T>
__global__ void activation_forward_kernel(Activation act, const T* __restrict__ x, T* __restrict__ y, int64_t n,
                                          T param) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    const T v = x[i];
    T r;
    switch (act) {
      case Activation::ReLU: r = v < T(0) ? T(0) : v; break;
      case Activation::LeakyReLU: r = v < T(0) ? v * param : v; break;
      case Activation::ELU: r = v > T(0) ? v : param * expm1(v); break;
      case Activation::Sigmoid: r = sigmoid_d(v); break;
      case Activation::Tanh: r = tanh(v); break;
      default: r = v * sigmoid_d(v); break;
    }
    y[i] = r;
  }
}

template <class T>
__global__ void activation_backward_kernel(Activation act, const T* __restrict__ gy, const T* __restrict__ s,
                                           T* __restrict__ gx, int64_t n, T param) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    const T g = gy[i], v = s[i];
    T r;
    switch (act) {
      case Activation::ReLU: r = v > T(0) ? g : T(0); break;
      case Activation::LeakyReLU: r = v > T(0) ? g : g * param; break;
      case Activation::ELU: r = v > T(0) ? g : g * param * exp(v); break;
      case Activation::Sigmoid: r = g * v * (T(1) - v); break;
      case Activation::Tanh: r = g * (T(1) - v * v); break;
      default: {
        T sg = sigmoid_d(v);
        r = g * sg * (T(1) + v * (T(1) - sg));
      }
    }
    gx[i] = r;
  }
}

constexpr int kRowThreads = 256;

template <class T>
__device__ T block_reduce(T v, T* shared, bool is_max) {
  // Warp shuffle first, then one value per warp through shared memory.
  for (int off = 16; off > 0; off >>= 1) {
    T o = __shfl_down_sync(0xffffffffu, v, off);
    v = is_max ? (o > v || isnan(o) ? o : v) : v + o;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) shared[warp] = v;
  __syncthreads();  // every warp's partial is in shared before warp 0 reads them
  if (warp == 0) {
    v = lane < (blockDim.x >> 5) ? shared[lane] : (is_max ? -INFINITY : T(0));
    for (int off = 16; off > 0; off >>= 1) {
      T o = __shfl_down_sync(0xffffffffu, v, off);
      v = is_max ? (o > v || isnan(o) ? o : v) : v + o;
    }
    if (lane == 0) shared[0] = v;
  }
  __syncthreads();  // the total is visible to the whole block
  T total = shared[0];
  __syncthreads();  // shared may be reused by the next reduction
  return total;
}

template <class T>
__global__ void softmax_rows_forward_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t dim, bool log) {
  __shared__ T shared[32];
  const T* xr = x + blockIdx.x * dim;
  T* yr = y + blockIdx.x * dim;
  T mx = -INFINITY;
  for (int64_t k = threadIdx.x; k < dim; k += blockDim.x) mx = (xr[k] > mx || isnan(xr[k])) ? xr[k] : mx;
  mx = block_reduce(mx, shared, true);
  if (isinf(mx) && mx < 0) mx = T(0);  // all -inf: 0/0 gives NaN, as on the CPU
  T sum = 0;
  for (int64_t k = threadIdx.x; k < dim; k += blockDim.x) sum += exp(xr[k] - mx);
  sum = block_reduce(sum, shared, false);
  if (log) {
    const T lse = mx + ::log(sum);
    for (int64_t k = threadIdx.x; k < dim; k += blockDim.x) yr[k] = xr[k] - lse;
  } else {
    const T inv = T(1) / sum;
    for (int64_t k = threadIdx.x; k < dim; k += blockDim.x) yr[k] = exp(xr[k] - mx) * inv;
  }
}

template <class T>
__global__ void softmax_rows_backward_kernel(const T* __restrict__ gy, const T* __restrict__ y, T* __restrict__ gx,
                                             int64_t dim, bool log) {
  __shared__ T shared[32];
  const int64_t off = blockIdx.x * dim;
  T acc = 0;
  for (int64_t k = threadIdx.x; k < dim; k += blockDim.x) acc += log ? gy[off + k] : gy[off + k] * y[off + k];
  acc = block_reduce(acc, shared, false);
  for (int64_t k = threadIdx.x; k < dim; k += blockDim.x)
    gx[off + k] = log ? gy[off + k] - exp(y[off + k]) * acc : y[off + k] * (gy[off + k] - acc);
}

template <class T>
__global__ void softmax_strided_forward_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t outer,
                                               int64_t dim, int64_t inner, bool log) {
  for (int64_t line = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; line < outer * inner;
       line += int64_t(blockDim.x) * gridDim.x) {
    const int64_t base = (line / inner) * dim * inner + line % inner;
    T mx = -INFINITY;
    for (int64_t k = 0; k < dim; ++k) {
      T v = x[base + k * inner];
      mx = (v > mx || isnan(v)) ? v : mx;
    }
    if (isinf(mx) && mx < 0) mx = T(0);
    T sum = 0;
    for (int64_t k = 0; k < dim; ++k) sum += exp(x[base + k * inner] - mx);
    const T lse = mx + ::log(sum), inv = T(1) / sum;
    for (int64_t k = 0; k < dim; ++k) {
      T v = x[base + k * inner];
      y[base + k * inner] = log ? v - lse : exp(v - mx) * inv;
    }
  }
}

template <class T>
__global__ void softmax_strided_backward_kernel(const T* __restrict__ gy, const T* __restrict__ y,
                                                T* __restrict__ gx, int64_t outer, int64_t dim, int64_t inner,
                                                bool log) {
  for (int64_t line = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; line < outer * inner;
       line += int64_t(blockDim.x) * gridDim.x) {
    const int64_t base = (line / inner) * dim * inner + line % inner;
    T acc = 0;
    for (int64_t k = 0; k < dim; ++k) acc += log ? gy[base + k * inner] : gy[base + k * inner] * y[base + k * inner];
    for (int64_t k = 0; k < dim; ++k) {
      const int64_t i = base + k * inner;
      gx[i] = log ? gy[i] - exp(y[i]) * acc : y[i] * (gy[i] - acc);
    }
  }
}

}  // namespace

template <class T>
void activation_forward(Activation act, const T* x, T* y, int64_t n, double param) {
  if (n == 0) return;
  activation_forward_kernel<T><<<blocks_for(n, 256), 256, 0, current_stream()>>>(act, x, y, n, T(param));
  check_launch("activation_forward_kernel");
}

template <class T>
void activation_backward(Activation act, const T* gy, const T* s, T* gx, int64_t n, double param) {
  if (n == 0) return;
  activation_backward_kernel<T><<<blocks_for(n, 256), 256, 0, current_stream()>>>(act, gy, s, gx, n, T(param));
  check_launch("activation_backward_kernel");
}

template <class T>
void softmax_forward(const T* x, T* y, int64_t outer, int64_t dim, int64_t inner, bool log) {
  if (outer * dim * inner == 0) return;
  if (inner == 1) {
    softmax_rows_forward_kernel<T><<<static_cast<unsigned>(outer), kRowThreads, 0, current_stream()>>>(x, y, dim, log);
    check_launch("softmax_rows_forward_kernel");
  } else {
    softmax_strided_forward_kernel<T><<<blocks_for(outer * inner, 256), 256, 0, current_stream()>>>(x, y, outer, dim,
                                                                                                     inner, log);
    check_launch("softmax_strided_forward_kernel");
  }
}

template <class T>
void softmax_backward(const T* gy, const T* y, T* gx, int64_t outer, int64_t dim, int64_t inner, bool log) {
  if (outer * dim * inner == 0) return;
  if (inner == 1) {
    softmax_rows_backward_kernel<T><<<static_cast<unsigned>(outer), kRowThreads, 0, current_stream()>>>(gy, y, gx, dim,
                                                                                                        log);
    check_launch("softmax_rows_backward_kernel");
  } else {
    softmax_strided_backward_kernel<T><<<blocks_for(outer * inner, 256), 256, 0, current_stream()>>>(
        gy, y, gx, outer, dim, inner, log);
    check_launch("softmax_strided_backward_kernel");
  }
}

#define CNNFAST_INSTANTIATE(T)                                                                        \
  template void activation_forward<T>(Activation, const T*, T*, int64_t, double);                   \
  template void activation_backward<T>(Activation, const T*, const T*, T*, int64_t, double);        \
  template void softmax_forward<T>(const T*, T*, int64_t, int64_t, int64_t, bool);                  \
  template void softmax_backward<T>(const T*, const T*, T*, int64_t, int64_t, int64_t, bool);
CNNFAST_INSTANTIATE(float)
CNNFAST_INSTANTIATE(double)
#undef CNNFAST_INSTANTIATE

}  // namespace cnnfast::cuda
