#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "cuda/allocator.h"
#include "cuda/common.cuh"

namespace cnnfast::cuda {
namespace {

// Sizes are rounded so nearby requests share blocks: 512 B granules below 1 MiB,
// 2 MiB granules above (big activations differ by a few rows between layers).
std::size_t round_size(std::size_t bytes) {
  const std::size_t small = 512, large = 2u << 20;
  if (bytes < (1u << 20)) return (bytes + small - 1) / small * small;
  return (bytes + large - 1) / large * large;
}

struct Cache {
  std::mutex m;
  std::multimap<std::size_t, void*> free_blocks;  // size -> block, best fit by lower_bound
  std::unordered_map<void*, std::size_t> live;
  std::size_t allocated = 0, reserved = 0;
};

Cache& cache() {
  static Cache* c = new Cache();  // leaked: freeing at exit can race the driver's teardown
  return *c;
}

}  // namespace

void* device_malloc(std::size_t bytes) {
  Cache& c = cache();
  const std::size_t size = round_size(bytes ? bytes : 1);
  std::lock_guard<std::mutex> lk(c.m);
  auto it = c.free_blocks.lower_bound(size);
  // Reuse only blocks at most twice the request, so small arrays do not pin huge blocks.
  if (it != c.free_blocks.end() && it->first <= 2 * size) {
    void* p = it->second;
    std::size_t got = it->first;
    c.free_blocks.erase(it);
    c.live[p] = got;
    c.allocated += got;
    return p;
  }
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, size);
  if (err == cudaErrorMemoryAllocation && !c.free_blocks.empty()) {
    cudaGetLastError();
    for (auto& kv : c.free_blocks) cudaFree(kv.second), c.reserved -= kv.first;
    c.free_blocks.clear();
    err = cudaMalloc(&p, size);
  }
  check(err, "cudaMalloc");
  c.live[p] = size;
  c.allocated += size;
  c.reserved += size;
  return p;
}

void device_free(void* ptr) {
  if (!ptr) return;
  Cache& c = cache();
  std::lock_guard<std::mutex> lk(c.m);
  auto it = c.live.find(ptr);
  if (it == c.live.end()) return;
  c.allocated -= it->second;
  c.free_blocks.emplace(it->second, ptr);
  c.live.erase(it);
}

std::size_t memory_allocated() {
  std::lock_guard<std::mutex> lk(cache().m);
  return cache().allocated;
}

std::size_t memory_reserved() {
  std::lock_guard<std::mutex> lk(cache().m);
  return cache().reserved;
}

void empty_cache() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lk(c.m);
  cudaStreamSynchronize(current_stream());
  for (auto& kv : c.free_blocks) {
    cudaFree(kv.second);
    c.reserved -= kv.first;
  }
  c.free_blocks.clear();
}

cudaStream_t current_stream() {
  static std::mutex m;
  static std::vector<cudaStream_t> streams;
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  std::lock_guard<std::mutex> lk(m);
  if (static_cast<int>(streams.size()) <= dev) streams.resize(dev + 1, nullptr);
  if (!streams[dev]) check(cudaStreamCreateWithFlags(&streams[dev], cudaStreamNonBlocking), "cudaStreamCreate");
  return streams[dev];
}

}  // namespace cnnfast::cuda
