// AVX-512 float32 build of the optimizer loops in optim_kernels.h: the third
// compilation of the same source, 16 floats per instruction, with the loop
// remainders done under masks (-mavx512f lets the vectoriser mask its epilogue).
#include "cpu/optim.h"
#include "cpu/optim_kernels.h"

namespace cnnfast::cpu::avx512_impl {
#include "cpu/optim_isa.inc"
}  // namespace cnnfast::cpu::avx512_impl
