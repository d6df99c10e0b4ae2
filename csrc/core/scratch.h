// Per-thread scratch buffers for kernels, grown on demand and kept across calls so
// inner GEMMs and direct kernels do not hit malloc every time.
//
// These live in the generic build on purpose: ISA translation units (-mavx2,
// -mavx512f) call them instead of instantiating std::vector or allocation templates
// themselves, which would emit wide copies of shared weak symbols (see
// cmake/check_isa_symbols.py).
#pragma once
#include <cstdint>

namespace cnnfast {

constexpr int kScratchSlots = 4;

// A 64-byte aligned buffer of at least `count` floats owned by the calling thread;
// its contents are undefined. slot in [0, kScratchSlots) names independent buffers.
float* thread_scratch_floats(int slot, int64_t count);

// At least `count` zeros owned by the calling thread (read-only for the caller).
const float* thread_zero_floats(int64_t count);

}  // namespace cnnfast
