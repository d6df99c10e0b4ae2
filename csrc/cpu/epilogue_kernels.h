// The piecewise-linear epilogues (everything but Sigmoid/SiLU) as plain loops, compiled
// once per SIMD level (epilogue.cpp, epilogue_avx2.cpp, epilogue_avx512.cpp) into that
// level's namespace. Branch-free min/max per element so the compiler vectorises them;
// the activation is a loop-invariant switch outside the loop.
#pragma once
#include <cstdint>

#include "core/simd.h"
#include "cpu/epilogue.h"

namespace cnnfast::cpu::CNNFAST_ISA_NS {

template <class T, class F>
inline void epilogue_loop(T* __restrict y, const T* __restrict r, int64_t n, F f) {
  if (r) {
    for (int64_t i = 0; i < n; ++i) y[i] = f(y[i] + r[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = f(y[i]);
  }
}

template <class T>
inline T clamp(T v, T lo, T hi) {
  v = v < lo ? lo : v;
  return v > hi ? hi : v;
}

// Sigmoid and SiLU are left to the activation kernels (exp); here they only add the residual.
template <class T>
void epilogue_piecewise(T* y, const T* r, int64_t n, EpilogueAct act, T alpha, T beta) {
  switch (act) {
    case EpilogueAct::ReLU:
      return epilogue_loop(y, r, n, [](T v) { return v > T(0) ? v : T(0); });
    case EpilogueAct::LeakyReLU:
      return epilogue_loop(y, r, n, [alpha](T v) { return v > T(0) ? v : v * alpha; });
    case EpilogueAct::Clip:
      return epilogue_loop(y, r, n, [alpha, beta](T v) { return clamp(v, alpha, beta); });
    case EpilogueAct::HardSigmoid:
      return epilogue_loop(y, r, n, [alpha, beta](T v) { return clamp(alpha * v + beta, T(0), T(1)); });
    case EpilogueAct::HardSwish:
      return epilogue_loop(y, r, n, [](T v) { return v * clamp(v * T(1.0 / 6.0) + T(0.5), T(0), T(1)); });
    default:
      if (r) epilogue_loop(y, r, n, [](T v) { return v; });
  }
}

}  // namespace cnnfast::cpu::CNNFAST_ISA_NS
