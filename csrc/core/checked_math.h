// Overflow-checked size arithmetic. Every size that comes from Python (array
// extents, strides, paddings, dilations, requested output sizes) is an int64
// that a caller may have chosen to make a product or a sum wrap around; a
// wrapped size would make a kernel allocate a small buffer and then index past
// it. These helpers compute in 64 bits and throw before anything is allocated:
// ValueError when a size does not fit in int64, AllocationError (a
// std::bad_alloc, which pybind11 turns into MemoryError with this message) when
// a buffer could never be allocated on this machine.
#pragma once
#include <cstddef>
#include <cstdint>
#include <new>
#include <string>
#include <vector>

#include "core/error.h"

namespace cnnfast {

// std::bad_alloc with a message: pybind11 raises MemoryError(what()).
class AllocationError : public std::bad_alloc {
 public:
  explicit AllocationError(std::string msg) : msg_(std::move(msg)) {}
  const char* what() const noexcept override { return msg_.c_str(); }

 private:
  std::string msg_;
};

// a * b, ValueError naming `what` if the product leaves int64.
inline int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  int64_t r;
  CNNFAST_CHECK(!__builtin_mul_overflow(a, b, &r), ValueError, what, ": size ", a, " * ", b,
                " does not fit in a 64-bit integer");
  return r;
}

inline int64_t checked_add(int64_t a, int64_t b, const char* what) {
  int64_t r;
  CNNFAST_CHECK(!__builtin_add_overflow(a, b, &r), ValueError, what, ": size ", a, " + ", b,
                " does not fit in a 64-bit integer");
  return r;
}

inline int64_t checked_sub(int64_t a, int64_t b, const char* what) {
  int64_t r;
  CNNFAST_CHECK(!__builtin_sub_overflow(a, b, &r), ValueError, what, ": size ", a, " - ", b,
                " does not fit in a 64-bit integer");
  return r;
}

// The element count of `shape` (every extent >= 0), ValueError if it overflows int64.
inline int64_t checked_numel(const std::vector<int64_t>& shape, const char* what) {
  int64_t n = 1;
  for (int64_t e : shape) {
    CNNFAST_CHECK(e >= 0, ValueError, what, ": expected non-negative sizes, got shape ", shape_str(shape));
    int64_t r;
    CNNFAST_CHECK(!__builtin_mul_overflow(n, e, &r), ValueError, what, ": shape ", shape_str(shape),
                  " has more elements than fit in a 64-bit integer");
    n = r;
  }
  return n;
}

// Total memory (RAM + swap) of this machine in bytes; 0 when unknown.
uint64_t total_memory_bytes();

// count * elem_size as a byte count; AllocationError when it overflows or
// exceeds this machine's total memory (an allocation that cannot succeed,
// refused before the allocator or the page-fault handler is asked).
inline std::size_t checked_bytes(int64_t count, std::size_t elem_size, const char* what) {
  CNNFAST_CHECK(count >= 0, ValueError, what, ": expected a non-negative element count, got ", count);
  uint64_t bytes;
  if (__builtin_mul_overflow(static_cast<uint64_t>(count), static_cast<uint64_t>(elem_size), &bytes) ||
      bytes > static_cast<uint64_t>(PTRDIFF_MAX))
    throw AllocationError(cat(what, ": ", count, " elements of ", elem_size,
                              " bytes do not fit in the address space; refusing to allocate"));
  const uint64_t total = total_memory_bytes();
  if (total != 0 && bytes > total)
    throw AllocationError(cat(what, ": needs ", bytes, " bytes (", count, " elements of ", elem_size,
                              " bytes), more than this machine's total memory of ", total,
                              " bytes; refusing to allocate"));
  return static_cast<std::size_t>(bytes);
}

}  // namespace cnnfast
