// The avx2 FMA peak loop (peak.h): the shared source of peak_loop.h at 32-byte vectors.
#include "cpu/peak.h"
#define CNNFAST_PEAK_VECTOR_BYTES 32
#include "cpu/peak_loop.h"

namespace cnnfast::cpu::avx2_impl {

float fma_loop(int64_t iters) { return CNNFAST_ISA_NS::fma_chains(iters); }

}  // namespace cnnfast::cpu::avx2_impl
