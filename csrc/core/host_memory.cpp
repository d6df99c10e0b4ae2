#include "core/host_memory.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace cnnfast {

namespace {
std::atomic<bool> g_tuned{false};
}

bool tune_host_allocator() {
#if defined(__GLIBC__)
  const bool mmap_ok = mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1;
  const bool trim_ok = mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1;
  if (mmap_ok && trim_ok) g_tuned = true;
  return mmap_ok && trim_ok;
#else
  return false;
#endif
}

bool host_allocator_tuned() { return g_tuned; }

void tune_host_allocator_if_requested() {
  const char* env = std::getenv("CNNFAST_HOST_ALLOCATOR");
  if (env && std::strcmp(env, "tuned") == 0) tune_host_allocator();
}

}  // namespace cnnfast
