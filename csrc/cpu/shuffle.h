// Channel shuffle (ShuffleNet): a permutation of the channel axis, so one copy of
// whole planes; the backward is the inverse permutation, i.e. the shuffle with the
// roles of the two factors swapped.
#pragma once
#include <cstdint>

namespace cnnfast::cpu {

// x, y: (N, g*k, S) of `elem`-byte items; y[n, j*g + i, :] = x[n, i*k + j, :]
// for i < g, j < k. y must not overlap x.
void channel_shuffle(const void* x, void* y, int64_t N, int64_t g, int64_t k, int64_t S, int64_t elem);

}  // namespace cnnfast::cpu
