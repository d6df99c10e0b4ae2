// Caching device allocator: freed blocks go back to a per-size free list instead
// of cudaFree, so a training loop that allocates the same shapes every step calls
// cudaMalloc only in its first step.
#pragma once
#include <cstddef>
#include <cstdint>

namespace cnnfast::cuda {

void* device_malloc(std::size_t bytes);
void device_free(void* ptr);
std::size_t memory_allocated();  // bytes held by live arrays
std::size_t memory_reserved();   // bytes obtained from cudaMalloc (live + cached)
void empty_cache();              // returns cached blocks to the driver

}  // namespace cnnfast::cuda
