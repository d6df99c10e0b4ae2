// Helpers shared by every kernel family's dispatch code, defined once.
//
// CNNFAST_ISA_NS names the namespace that code shared between levels (a header of
// plain loops included by the generic .cpp and by an -mavx2/-mavx512f .cpp) is
// compiled into: CMake defines it per ISA source file (avx2_isa, avx512_isa, ...),
// and everything else gets generic_isa. Two builds of one loop therefore never share
// a mangled name, and the linker cannot hand the wide copy to a narrower CPU.
#pragma once
#include <type_traits>

#include "core/cpu_features.h"

#ifndef CNNFAST_ISA_NS
#define CNNFAST_ISA_NS generic_isa
#endif

namespace cnnfast {

// Float32 is the only type with vector kernels; float64 always takes the scalar
// reference (it exists for finite-difference checks).
template <class T>
inline constexpr bool is_f32 = std::is_same_v<T, float>;

}  // namespace cnnfast
