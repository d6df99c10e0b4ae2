// The output pass of an inference convolution or linear layer: after the bias,
// y = act(y + residual), in one pass over y. Frozen graphs (python/cnnfast/inference)
// fold BatchNorm into the weights and hand the following residual add and
// activation to this pass instead of running them as separate ops.
//
// Activations (alpha, beta):
//   None; ReLU; LeakyReLU (alpha = negative slope); Clip (alpha = min, beta = max;
//   ReLU6 is Clip(0, 6)); HardSigmoid (max(0, min(1, alpha * y + beta)), torch uses
//   alpha = 1/6, beta = 1/2); HardSwish (y * HardSigmoid(y) with torch's constants);
//   Sigmoid; SiLU (y * sigmoid(y)).
#pragma once
#include <cstdint>
#include <string>

namespace cnnfast::cpu {

enum class EpilogueAct { None, ReLU, LeakyReLU, Clip, HardSigmoid, HardSwish, Sigmoid, SiLU };

struct Epilogue {
  const void* residual = nullptr;  // same shape and dtype as y, or null
  EpilogueAct act = EpilogueAct::None;
  double alpha = 0.0, beta = 0.0;
  bool empty() const { return residual == nullptr && act == EpilogueAct::None; }
};

EpilogueAct parse_epilogue_act(const std::string& name);  // ValueError for an unknown name

// y[i] = act(y[i] + residual[i]) for i < n (residual may be null), on the thread pool.
template <class T>
void apply_epilogue(T* y, int64_t n, const Epilogue& e);

// The epilogue on a block inside y: `rows` rows of n elements, ld apart, starting
// `offset` elements into y (the residual is read at the same offsets). Serial: for
// kernels that run it on each block of y they just wrote, while it is in cache.
template <class T>
void epilogue_block(T* y, int64_t offset, int64_t rows, int64_t ld, int64_t n, const Epilogue& e);

namespace avx2_impl {
void epilogue_piecewise(float* y, const float* residual, int64_t n, EpilogueAct act, float alpha, float beta);
}
namespace avx512_impl {
void epilogue_piecewise(float* y, const float* residual, int64_t n, EpilogueAct act, float alpha, float beta);
}

}  // namespace cnnfast::cpu
