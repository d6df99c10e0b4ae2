#include "core/host_memory.h"

#include <cstdlib>
#include <cstring>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace cnnfast {

bool tune_host_allocator() {
#if defined(__GLIBC__)
  const char* env = std::getenv("CNNFAST_HOST_ALLOCATOR");
  if (env && std::strcmp(env, "system") == 0) return false;
  const bool mmap_ok = mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1;
  const bool trim_ok = mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1;
  return mmap_ok && trim_ok;
#else
  return false;
#endif
}

}  // namespace cnnfast
