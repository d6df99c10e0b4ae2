// 64-byte aligned scratch buffers for packed GEMM panels and other workspaces.
#pragma once
#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>

#include "core/checked_math.h"

namespace cnnfast {

constexpr std::size_t kAlignment = 64;  // one cache line; also a multiple of the AVX2 width

struct AlignedFree {
  void operator()(void* p) const noexcept { std::free(p); }
};

template <class T>
using AlignedPtr = std::unique_ptr<T[], AlignedFree>;

// count comes from products of problem sizes: checked, so a wrapped product
// cannot turn into a small buffer that the kernel then overruns.
template <class T>
AlignedPtr<T> aligned_alloc_array(int64_t count) {
  std::size_t bytes = checked_bytes(count, sizeof(T), "workspace");
  CNNFAST_CHECK(bytes <= SIZE_MAX - kAlignment, ValueError, "workspace: ", count, " elements overflow the size");
  bytes = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  if (bytes == 0) bytes = kAlignment;
  void* p = std::aligned_alloc(kAlignment, bytes);
  if (!p) throw AllocationError(cat("workspace: could not allocate ", bytes, " bytes"));
  return AlignedPtr<T>(static_cast<T*>(p));
}

}  // namespace cnnfast
