#include "core/checked_math.h"

#if defined(__linux__)
#include <sys/sysinfo.h>
#endif

namespace cnnfast {

uint64_t total_memory_bytes() {
  // Read once: RAM and swap sizes do not change while a process runs, and the
  // check sits on every output allocation.
  static const uint64_t total = [] {
#if defined(__linux__)
    struct sysinfo info;
    if (sysinfo(&info) == 0) {
      uint64_t units = uint64_t(info.totalram) + uint64_t(info.totalswap), bytes;
      if (!__builtin_mul_overflow(units, uint64_t(info.mem_unit), &bytes)) return bytes;
    }
#endif
    return uint64_t(0);
  }();
  return total;
}

}  // namespace cnnfast
