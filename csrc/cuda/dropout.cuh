// CUDA dropout: the functions of csrc/cpu/dropout.h for device pointers. The key
// (dropout_key, made on the host) and the keep test (dropout_keep) are the shared
// definitions of core/op_params.h, so a GPU mask equals the CPU mask bit for bit.
#pragma once
#include <cstdint>

#include "core/op_params.h"

namespace cnnfast::cuda {

template <class T>
void dropout_apply(const T* x, T* y, int64_t n, int64_t inner, double p, const DropoutKey& key);
void dropout_mask(uint8_t* mask, int64_t n, const DropoutKey& key);

}  // namespace cnnfast::cuda
