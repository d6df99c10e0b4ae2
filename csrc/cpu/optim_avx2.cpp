// AVX2+FMA float32 build of the optimizer loops in optim_kernels.h: the same source
// as the scalar reference, compiled with -mavx2 -mfma so the compiler vectorises
// each update 8 floats wide (sqrt and division included). FMA contraction can move
// the result by an ulp relative to the reference; tests compare both with torch.
#include "cpu/optim.h"
#include "cpu/optim_kernels.h"

namespace cnnfast::cpu::avx2_impl {
#include "cpu/optim_isa.inc"
}  // namespace cnnfast::cpu::avx2_impl
