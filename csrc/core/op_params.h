// Parameters shared by the CPU and the CUDA kernels of an op family, free of any
// device: plain structs, the argument rules both bindings apply, and the few
// functions both devices must compute identically. Functions that run on both are
// marked CNNFAST_HOST_DEVICE: nvcc compiles them for the GPU as well, a C++
// compiler sees ordinary inline functions, so there is one definition to keep right.
// (ATen's pattern: device-neutral parameters and checks, then one kernel per device.)
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define CNNFAST_HOST_DEVICE __host__ __device__
#else
#define CNNFAST_HOST_DEVICE
#endif

namespace cnnfast {

// ---- dropout (the scheme is documented in cpu/dropout.h) ------------------------------

struct DropoutKey {
  uint32_t k0 = 0, k1 = 0;
  uint32_t threshold = 0;
  bool drop_all = false;  // p == 1
};

// The lowbias32 integer hash.
CNNFAST_HOST_DEVICE inline uint32_t dropout_hash32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

// Whether mask position i is kept: the same 32-bit arithmetic on every device, so a GPU
// mask equals the CPU mask bit for bit.
CNNFAST_HOST_DEVICE inline bool dropout_keep(const DropoutKey& k, uint64_t i) {
  if (k.drop_all) return false;
  const uint32_t h = dropout_hash32(dropout_hash32(static_cast<uint32_t>(i) ^ k.k0) ^
                                    (static_cast<uint32_t>(i >> 32) + k.k1));
  return h >= k.threshold;
}

// SplitMix64's output function of x + golden ratio.
inline uint64_t splitmix64(uint64_t x) {
  uint64_t z = x + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// The key of one dropout call (made on the host; p in [0, 1]).
inline DropoutKey dropout_key(uint64_t seed, uint64_t offset, double p) {
  DropoutKey k;
  const uint64_t z = splitmix64(seed ^ splitmix64(offset));
  k.k0 = static_cast<uint32_t>(z);
  k.k1 = static_cast<uint32_t>(z >> 32);
  k.drop_all = p >= 1.0;
  const double t = std::floor(p * 4294967296.0);
  k.threshold = t >= 4294967295.0 ? 0xFFFFFFFFu : static_cast<uint32_t>(std::max(t, 0.0));
  return k;
}

// What one dropout call applies: the key, p, and how many consecutive elements share
// one mask draw (1 elementwise; the plane size H*W*... for channel dropout).
struct DropoutParams {
  DropoutKey key;
  double p = 0.0;
  int64_t inner = 1;
};

// inner for an array of these dims (shape[0..ndim)); channel dropout needs ndim >= 2.
inline int64_t dropout_inner(const int64_t* shape, int ndim, bool feature) {
  int64_t inner = 1;
  if (feature)
    for (int i = 2; i < ndim; ++i) inner *= shape[i];
  return inner;
}


// ---- fused optimizer steps (the arithmetic is documented in cpu/optim.h) --------------

struct SgdOptions {
  double lr, momentum, dampening, weight_decay;
  bool nesterov, maximize;
  // The first step with momentum copies the (decayed) gradient into the buffer, as torch.
  bool first_step;
};

struct AdamOptions {
  double lr, beta1, beta2, eps, weight_decay;
  int64_t step;  // 1 on the first call
  bool amsgrad, maximize;
  bool decoupled_weight_decay;  // AdamW: param *= 1 - lr * weight_decay before the update
};

struct AdagradOptions {
  double lr, lr_decay, weight_decay, eps;
  int64_t step;  // 1 on the first call
  bool maximize;
};

struct RmspropOptions {
  double lr, alpha, eps, weight_decay, momentum;
  bool centered, maximize;
};

struct AdadeltaOptions {
  double lr, rho, eps, weight_decay;
  bool maximize;
};

}  // namespace cnnfast
