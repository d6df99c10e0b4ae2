#include <cuda_runtime.h>

#include "core/error.h"
#include "cuda/runtime.h"

namespace cnnfast::cuda {

int device_count() {
  int n = 0;
  // No driver or no device is an answer (0), not an error.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

std::string device_name(int index) {
  CNNFAST_CHECK(index >= 0 && index < device_count(), ValueError, "index: expected a device index in [0, ",
                device_count(), "), got ", index);
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, index) != cudaSuccess) return "";
  return prop.name;
}

}  // namespace cnnfast::cuda
