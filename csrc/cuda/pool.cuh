// CUDA pooling: the functions of csrc/cpu/pool.h for device pointers, same
// names, arguments, index convention and NaN/tie rules. The *_backward scatter
// kernels and max_unpool return -1 or the flat position of the first bad index
// (read back from the device, so they synchronise the library stream).
// Differences from the CPU: gradient sums where windows overlap use atomicAdd,
// so their rounding order is not fixed; max_unpool with duplicate indices keeps
// one of the duplicates (the CPU keeps the last).
#pragma once
#include <cstdint>

#include "cpu/pool.h"

namespace cnnfast::cuda {

using cpu::PoolGeom;

template <class T>
void max_pool_forward(const PoolGeom& g, const T* x, T* y, int64_t* indices);
template <class T>
int64_t max_pool_backward(const PoolGeom& g, const T* grad_y, const int64_t* indices, T* grad_x,
                          bool skip_out_of_range = false);
template <class T>
void avg_pool_forward(const PoolGeom& g, const T* x, T* y, bool count_include_pad, int64_t divisor_override);
template <class T>
void avg_pool_backward(const PoolGeom& g, const T* grad_y, T* grad_x, bool count_include_pad,
                       int64_t divisor_override);
template <class T>
void adaptive_avg_pool_forward(const PoolGeom& g, const T* x, T* y);
template <class T>
void adaptive_avg_pool_backward(const PoolGeom& g, const T* grad_y, T* grad_x);
template <class T>
void adaptive_max_pool_forward(const PoolGeom& g, const T* x, T* y, int64_t* indices);
template <class T>
int64_t max_unpool_forward(const PoolGeom& g, const T* x, const int64_t* indices, T* y);
template <class T>
int64_t max_unpool_backward(const PoolGeom& g, const T* grad_y, const int64_t* indices, T* grad_x);

}  // namespace cnnfast::cuda
