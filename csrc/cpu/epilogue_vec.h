// The activations of the epilogue (cpu/epilogue.h) on one SIMD vector, for kernels that
// apply them to their accumulators before the last store (conv_panels_avx2.cpp,
// conv_panels_avx512.cpp). O supplies the vector type V and its operations (zero, one,
// set1, add, mul, min, max, leaky: v > 0 ? v : v * alpha with NaN taking v * alpha,
// sigmoid, sigmoid_flush); include only from a file compiled for O's instruction set.
//
// Operand order matters: MIN/MAX return their second operand when either is NaN, so NaN
// passes through clip and the hard sigmoids as in the scalar epilogue, and ReLU gives 0
// as it does there.
#pragma once
#include "core/simd.h"
#include "cpu/epilogue.h"

namespace cnnfast::cpu::CNNFAST_ISA_NS {

template <class O>
inline typename O::V activate_vec(typename O::V v, EpilogueAct act, typename O::V alpha, typename O::V beta) {
  const typename O::V zero = O::zero(), one = O::one();
  switch (act) {
    case EpilogueAct::ReLU:
      return O::max(v, zero);
    case EpilogueAct::LeakyReLU:
      return O::leaky(v, alpha);
    case EpilogueAct::Clip:
      return O::min(beta, O::max(alpha, v));
    case EpilogueAct::HardSigmoid:
      return O::min(one, O::max(zero, O::add(O::mul(alpha, v), beta)));
    case EpilogueAct::HardSwish: {
      const typename O::V h = O::add(O::mul(v, O::set1(1.0f / 6.0f)), O::set1(0.5f));
      return O::mul(v, O::min(one, O::max(zero, h)));
    }
    case EpilogueAct::Sigmoid:
      return O::sigmoid(v);
    case EpilogueAct::SiLU:
      return O::mul(v, O::sigmoid_flush(v));
    default:
      return v;
  }
}

// The output pass of one vector of y: residual (res, may be null) added, the activation,
// stored through lane mask m. O also supplies M (the mask type), load(m, p) and
// store(p, m, v) (the AVX-512 kernels: simd_math_avx512.h's EpilogueOps).
template <class O>
inline void epilogue_store(typename O::V v, float* y, const float* res, typename O::M m, EpilogueAct act,
                           typename O::V alpha, typename O::V beta) {
  if (res) v = O::add(v, O::load(m, res));
  O::store(y, m, activate_vec<O>(v, act, alpha, beta));
}

}  // namespace cnnfast::cpu::CNNFAST_ISA_NS
