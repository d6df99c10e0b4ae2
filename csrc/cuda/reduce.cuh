// Warp-shuffle and block reductions shared by the CUDA norm, loss and pooling
// kernels. Every thread of the block must call block_sum (it synchronises).
#pragma once
#include <cuda_runtime.h>

namespace cnnfast::cuda {

template <class T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Sum over the block; `shared` holds at least 32 T. Returns the total to every thread.
template <class T>
__device__ T block_sum(T v, T* shared) {
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // shared may still be read by a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();  // every warp's partial is in shared
  const int nwarps = (blockDim.x + 31) >> 5;
  T total = lane < nwarps ? shared[lane] : T(0);
  return warp_sum(total);
}

}  // namespace cnnfast::cuda
