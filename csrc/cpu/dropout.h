// Dropout family: elementwise dropout and channel ("feature") dropout that
// zeroes whole (n, c) planes, forward and backward. Tensor-free.
//
// Inverted scaling: a kept value is multiplied by 1/(1-p) (computed in T, as
// PyTorch does), a dropped one by 0, so NaN/inf stay NaN as in PyTorch's
// input * noise. p = 1 multiplies everything by 0.
//
// The mask comes from a counter-based hash, so it depends only on (seed,
// offset, mask position), never on the thread count or SIMD path, and a CUDA
// kernel reproduces it bit for bit with 32-bit integer arithmetic:
//   z    = splitmix64(seed ^ splitmix64(offset))        (once per call)
//   k0   = low 32 bits of z, k1 = high 32 bits of z
//   h(i) = lowbias32(lowbias32(lo32(i) ^ k0) ^ (hi32(i) + k1))
//   keep(i) = h(i) >= threshold,  threshold = min(floor(p * 2^32), 2^32 - 1)
// with splitmix64(x) the SplitMix64 output function of x + 0x9E3779B97F4A7C15
// and lowbias32 the (x ^= x>>16, x *= 0x7feb352d, x ^= x>>15, x *= 0x846ca68b,
// x ^= x>>16) integer hash. For a fixed key, i -> h(i) is a bijection on each
// block of 2^32 positions, so the kept fraction is 1-p to within 2^-32 plus
// sampling noise. The mask position of element e is e / inner (inner = 1 for
// elementwise dropout, the plane size for channel dropout).
//
// Backward multiplies grad_output by the same mask (recomputed from the key,
// nothing is saved), which is the forward applied to grad_output.
// Gradient contract: activation gradients are written (=).
#pragma once
#include <cstdint>

#include "core/op_params.h"

namespace cnnfast::cpu {

// The key, its hash and dropout_keep are shared with the CUDA kernels (core/op_params.h).
using cnnfast::DropoutKey;
using cnnfast::dropout_hash32;
using cnnfast::dropout_keep;
using cnnfast::dropout_key;

// y[e] = x[e] * (keep(e / inner) ? 1/(1-p) : 0) for e in [0, n). x may equal y.
// Used for both forward (x = input) and backward (x = grad_output).
template <class T>
void dropout_apply(const T* x, T* y, int64_t n, int64_t inner, double p, const DropoutKey& key);

// mask[j] = keep(j) for j in [0, n): the mask itself, for tests and tools.
void dropout_mask(uint8_t* mask, int64_t n, const DropoutKey& key);

namespace avx2_impl {
// Elementwise (inner = 1) float32 apply over [0, n), x[0] being mask position first.
void dropout_apply(const float* x, float* y, int64_t n, uint64_t first, const DropoutKey& key, float scale);
}  // namespace avx2_impl
namespace avx512_impl {
// The same at 16 lanes (dropout_avx512.cpp).
void dropout_apply(const float* x, float* y, int64_t n, uint64_t first, const DropoutKey& key, float scale);
}  // namespace avx512_impl

}  // namespace cnnfast::cpu
