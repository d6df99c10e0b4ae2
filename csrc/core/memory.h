// 64-byte aligned scratch buffers for packed GEMM panels and other workspaces.
#pragma once
#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>

namespace cnnfast {

constexpr std::size_t kAlignment = 64;  // one cache line; also a multiple of the AVX2 width

struct AlignedFree {
  void operator()(void* p) const noexcept { std::free(p); }
};

template <class T>
using AlignedPtr = std::unique_ptr<T[], AlignedFree>;

template <class T>
AlignedPtr<T> aligned_alloc_array(std::size_t count) {
  std::size_t bytes = count * sizeof(T);
  bytes = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  if (bytes == 0) bytes = kAlignment;
  void* p = std::aligned_alloc(kAlignment, bytes);
  if (!p) throw std::bad_alloc();
  return AlignedPtr<T>(static_cast<T*>(p));
}

}  // namespace cnnfast
