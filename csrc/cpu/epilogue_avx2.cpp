// The avx2 build of the piecewise epilogues (epilogue_kernels.h).
#include "cpu/epilogue.h"
#include "cpu/epilogue_kernels.h"

namespace cnnfast::cpu::avx2_impl {

void epilogue_piecewise(float* y, const float* residual, int64_t n, EpilogueAct act, float alpha, float beta) {
  CNNFAST_ISA_NS::epilogue_piecewise<float>(y, residual, n, act, alpha, beta);
}

}  // namespace cnnfast::cpu::avx2_impl
