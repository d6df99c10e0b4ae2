// Channel shuffle: each output plane is one memcpy of its source plane, threaded
// over output planes (they never overlap). Dtype-free: it moves bytes.
#include "cpu/shuffle.h"

#include <algorithm>
#include <cstring>

#include "core/parallel.h"

namespace cnnfast::cpu {

void channel_shuffle(const void* x, void* y, int64_t N, int64_t g, int64_t k, int64_t S, int64_t elem) {
  const int64_t C = g * k, plane = S * elem;
  const auto* src = static_cast<const char*>(x);
  auto* dst = static_cast<char*>(y);
  // A task copies at least ~64 KiB, so a thread's start-up stays small next to its copy.
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(1, plane));
  parallel_for(0, N * C, grain, [&](int64_t b, int64_t e) {
    for (int64_t o = b; o < e; ++o) {
      const int64_t n = o / C, c = o % C;
      const int64_t j = c / g, i = c % g;  // output channel j*g + i reads input channel i*k + j
      std::memcpy(dst + o * plane, src + (n * C + i * k + j) * plane, static_cast<size_t>(plane));
    }
  });
}

}  // namespace cnnfast::cpu
