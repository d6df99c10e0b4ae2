// Squeeze-and-excitation (MobileNet-V3, EfficientNet) in one call, for frozen
// inference graphs: y = x * act2(W2 act1(W1 mean_hw(x) + b1) + b2), the scale per
// (image, channel). As separate ops it is a global pool, two 1x1 convolutions on a
// 1x1 map, two activations and a broadcast multiply: six Python steps for a few
// microseconds of arithmetic each, sixteen times per EfficientNet-B0.
#pragma once
#include <cstdint>

#include "cpu/epilogue.h"

namespace cnnfast::cpu {

// x, y: (N, C, S) with S the spatial size; w1 (R, C), b1 (R,) or null; w2 (C, R),
// b2 (C,) or null; e1 / e2: the activations after each product (no residual).
template <class T>
void squeeze_excite_forward(const T* x, T* y, int64_t N, int64_t C, int64_t S, const T* w1, const T* b1, int64_t R,
                            const T* w2, const T* b2, const Epilogue& e1, const Epilogue& e2);

// The middle of it: scale (N, C) from the pooled means (N, C), for the blocked layout's
// version (conv_nchw16c.cpp), which pools and scales on its own layout.
void squeeze_excite_scales(const float* pooled, float* scale, int64_t N, int64_t C, const float* w1, const float* b1,
                           int64_t R, const float* w2, const float* b2, const Epilogue& e1, const Epilogue& e2);

}  // namespace cnnfast::cpu
