#include "cuda/common.cuh"
#include "cuda/memory.h"

namespace cnnfast::cuda {

void copy_to_device(void* dst, const void* src, std::size_t bytes) {
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, current_stream()), "cudaMemcpy host->device");
  // The host buffer may be freed by Python right after this call returns.
  check(cudaStreamSynchronize(current_stream()), "cudaStreamSynchronize");
}

void copy_to_host(void* dst, const void* src, std::size_t bytes) {
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, current_stream()), "cudaMemcpy device->host");
  check(cudaStreamSynchronize(current_stream()), "cudaStreamSynchronize");
}

void copy_device_to_device(void* dst, const void* src, std::size_t bytes) {
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, current_stream()), "cudaMemcpy device->device");
}

void memset_device(void* dst, int value, std::size_t bytes) {
  check(cudaMemsetAsync(dst, value, bytes, current_stream()), "cudaMemsetAsync");
}

void synchronize() { check(cudaStreamSynchronize(current_stream()), "cudaStreamSynchronize"); }

void wait_for_foreign_stream(long long handle) {
  // 1 and 2 are the legacy and per-thread default streams in both protocols,
  // and also CUDA's own special handle values.
  check(cudaStreamSynchronize(reinterpret_cast<cudaStream_t>(handle)), "cudaStreamSynchronize(foreign stream)");
}

void* stream_handle() { return current_stream(); }

}  // namespace cnnfast::cuda
