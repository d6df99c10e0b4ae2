// CUDA dropout kernels: one thread per element (grid-stride), the keep bit from
// dropout_keep of core/op_params.h, the very function the CPU evaluates (lowbias32
// twice on the 64-bit mask position), so nothing is stored between forward and
// backward and the mask does not depend on the launch shape. Scale 1/(1-p) is
// rounded to T on the host as on the CPU.
#include "cuda/common.cuh"
#include "cuda/dropout.cuh"

namespace cnnfast::cuda {
namespace {

template <class T>
__global__ void dropout_kernel(const T* x, T* y, int64_t n, int64_t inner, DropoutKey key, T scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    const uint64_t pos = static_cast<uint64_t>(inner == 1 ? i : i / inner);
    // x * 0 (not a select) so NaN and inf stay NaN, as PyTorch's input * noise.
    y[i] = x[i] * (dropout_keep(key, pos) ? scale : T(0));
  }
}

__global__ void dropout_mask_kernel(uint8_t* mask, int64_t n, DropoutKey key) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x)
    mask[i] = dropout_keep(key, static_cast<uint64_t>(i)) ? 1 : 0;
}

}  // namespace

template <class T>
void dropout_apply(const T* x, T* y, int64_t n, int64_t inner, double p, const DropoutKey& key) {
  if (n == 0) return;
  const T scale = key.drop_all ? T(0) : T(1) / static_cast<T>(1.0 - p);
  dropout_kernel<T><<<blocks_for(n, 256), 256, 0, current_stream()>>>(x, y, n, inner, key, scale);
  check_launch("dropout_kernel");
}

void dropout_mask(uint8_t* mask, int64_t n, const DropoutKey& key) {
  if (n == 0) return;
  dropout_mask_kernel<<<blocks_for(n, 256), 256, 0, current_stream()>>>(mask, n, key);
  check_launch("dropout_mask_kernel");
}

template void dropout_apply<float>(const float*, float*, int64_t, int64_t, double, const DropoutKey&);
template void dropout_apply<double>(const double*, double*, int64_t, int64_t, double, const DropoutKey&);

}  // namespace cnnfast::cuda
