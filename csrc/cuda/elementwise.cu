// Grid-stride kernels for csrc/cuda/elementwise.cuh. Arithmetic is one IEEE operation
// per element (no contraction possible), so a float32 add or scale on the GPU equals
// NumPy's on the CPU bit for bit.
#include <type_traits>

#include "cuda/allocator.h"
#include "cuda/common.cuh"
#include "cuda/elementwise.cuh"
#include "cuda/memory.h"
#include "cuda/reduce.cuh"

namespace cnnfast::cuda {
namespace {

template <class F>
void dispatch(Elem t, F&& f) {
  switch (t) {
    case Elem::F32: f(float{}); break;
    case Elem::F64: f(double{}); break;
    case Elem::I32: f(int32_t{}); break;
    case Elem::I64: f(int64_t{}); break;
    case Elem::U8: f(uint8_t{}); break;
    case Elem::Bool: f(bool{}); break;
  }
}

template <class T>
__global__ void binary_kernel(BinaryOp op, const T* a, const T* b, T s, T* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    const T x = a[i], y = b ? b[i] : s;
    switch (op) {
      case BinaryOp::Add: out[i] = x + y; break;
      case BinaryOp::Sub: out[i] = x - y; break;
      case BinaryOp::Mul: out[i] = x * y; break;
      case BinaryOp::Div: out[i] = x / y; break;
      case BinaryOp::RSub: out[i] = y - x; break;
      case BinaryOp::RDiv: out[i] = y / x; break;
    }
  }
}

template <class T>
__global__ void fill_kernel(T* p, T v, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x)
    p[i] = v;
}

template <class T>
using Acc = std::conditional_t<std::is_floating_point_v<T>, double, long long>;

// One block: the sums this layer takes are of losses and small tensors, and one
// block keeps the result deterministic (the same order on every run).
template <class T>
__global__ void sum_kernel(const T* a, T* out, int64_t n) {
  __shared__ Acc<T> shared[32];
  Acc<T> v = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) v += static_cast<Acc<T>>(a[i]);
  v = block_sum(v, shared);
  if (threadIdx.x == 0) *out = static_cast<T>(v);
}

template <class T>
__global__ void nonfinite_kernel(const T* a, int64_t n, unsigned long long* count) {
  unsigned long long local = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x)
    local += isfinite(a[i]) ? 0 : 1;
  if (local) atomicAdd(count, local);
}

template <class S, class D>
__global__ void cast_kernel(const S* a, D* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x)
    out[i] = static_cast<D>(a[i]);
}

}  // namespace

void binary(BinaryOp op, Elem t, const void* a, const void* b, double scalar, void* out, int64_t n) {
  if (n == 0) return;
  dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    binary_kernel<T><<<blocks_for(n, 256), 256, 0, current_stream()>>>(
        op, static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T>(scalar), static_cast<T*>(out), n);
  });
  check_launch("binary_kernel");
}

void fill(Elem t, void* p, double value, int64_t n) {
  if (n == 0) return;
  dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    fill_kernel<T><<<blocks_for(n, 256), 256, 0, current_stream()>>>(static_cast<T*>(p), static_cast<T>(value), n);
  });
  check_launch("fill_kernel");
}

void sum_all(Elem t, const void* a, void* out, int64_t n) {
  dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, bool>) {
      throw CudaError("sum_all: bool arrays are not summed on the device");
    } else {
      sum_kernel<T><<<1, 1024, 0, current_stream()>>>(static_cast<const T*>(a), static_cast<T*>(out), n);
    }
  });
  check_launch("sum_kernel");
}

int64_t count_nonfinite(Elem t, const void* a, int64_t n) {
  if (n == 0 || !(t == Elem::F32 || t == Elem::F64)) return 0;
  auto* count = static_cast<unsigned long long*>(device_malloc(sizeof(unsigned long long)));
  unsigned long long host = 0;
  try {
    memset_device(count, 0, sizeof(unsigned long long));
    if (t == Elem::F32)
      nonfinite_kernel<float><<<blocks_for(n, 256), 256, 0, current_stream()>>>(static_cast<const float*>(a), n, count);
    else
      nonfinite_kernel<double><<<blocks_for(n, 256), 256, 0, current_stream()>>>(static_cast<const double*>(a), n,
                                                                                 count);
    check_launch("nonfinite_kernel");
    copy_to_host(&host, count, sizeof(host));
  } catch (...) {
    device_free(count);
    throw;
  }
  device_free(count);
  return static_cast<int64_t>(host);
}

void cast(Elem from, const void* a, Elem to, void* out, int64_t n) {
  if (n == 0) return;
  dispatch(from, [&](auto src) {
    dispatch(to, [&](auto dst) {
      using S = decltype(src);
      using D = decltype(dst);
      cast_kernel<S, D><<<blocks_for(n, 256), 256, 0, current_stream()>>>(static_cast<const S*>(a),
                                                                          static_cast<D*>(out), n);
    });
  });
  check_launch("cast_kernel");
}

}  // namespace cnnfast::cuda
