// Shared by every .cu file: error checks that name the failing call or kernel,
// the library stream, and a grid-size helper. Launchers call check_launch()
// right after every <<<...>>> so an error is pinned to the kernel that caused it.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace cnnfast::cuda {

struct CudaError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later calls are not blamed
    throw CudaError(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(err));
  }
}

inline void check_launch(const char* kernel) { check(cudaGetLastError(), kernel); }

// The one stream per device that every cnnfast kernel and copy uses.
cudaStream_t current_stream();

inline unsigned blocks_for(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  // A grid-stride loop covers the rest; 65535*8 blocks keeps every SM busy.
  return static_cast<unsigned>(b < 65535 * 8 ? (b > 0 ? b : 1) : 65535 * 8);
}

}  // namespace cnnfast::cuda
