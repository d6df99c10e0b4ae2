// CUDA dropout: the functions of csrc/cpu/dropout.h for device pointers. The
// key comes from cpu::dropout_key on the host, and the kernels evaluate the same
// 32-bit counter hash, so a GPU mask equals the CPU mask bit for bit.
#pragma once
#include <cstdint>

#include "cpu/dropout.h"

namespace cnnfast::cuda {

template <class T>
void dropout_apply(const T* x, T* y, int64_t n, int64_t inner, double p, const cpu::DropoutKey& key);
void dropout_mask(uint8_t* mask, int64_t n, const cpu::DropoutKey& key);

}  // namespace cnnfast::cuda
