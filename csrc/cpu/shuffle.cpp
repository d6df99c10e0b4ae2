// Channel shuffle: each output plane is one memcpy of its source plane, threaded
// over output planes (they never overlap). Dtype-free: it moves bytes.
#include "cpu/shuffle.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#include <emmintrin.h>
#endif

#include "core/parallel.h"

namespace cnnfast::cpu {
namespace {

// memcpy with non-temporal stores (SSE2, every x86-64): a shuffle's output is larger
// than the caches, so ordinary stores first read each destination line in (and the
// fresh pages of a new array were just zeroed by the kernel): a third stream of
// memory traffic on a copy that is nothing but traffic. One thread on Zen 5,
// (32, 116, 28, 28) forward: 0.53 -> 0.35 ms (torch 0.39).
void copy_streaming(char* dst, const char* src, size_t n) {
#if defined(__x86_64__) || defined(_M_X64)
  const size_t head = std::min(n, (16 - (reinterpret_cast<uintptr_t>(dst) & 15)) & 15);
  std::memcpy(dst, src, head);
  dst += head, src += head, n -= head;
  for (; n >= 64; n -= 64, dst += 64, src += 64) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 16));
    const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 32));
    const __m128i d = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 48));
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst), a);
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + 16), b);
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + 32), c);
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + 48), d);
  }
  std::memcpy(dst, src, n);
#else
  std::memcpy(dst, src, n);
#endif
}

void store_fence() {
#if defined(__x86_64__) || defined(_M_X64)
  _mm_sfence();  // streaming stores are weakly ordered: done before the task reports done
#endif
}

}  // namespace

void channel_shuffle(const void* x, void* y, int64_t N, int64_t g, int64_t k, int64_t S, int64_t elem) {
  const int64_t C = g * k, plane = S * elem;
  const auto* src = static_cast<const char*>(x);
  auto* dst = static_cast<char*>(y);
  // A task copies at least ~64 KiB, so a thread's start-up stays small next to its copy.
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(1, plane));
  // Stream only what cannot stay in a server's last-level cache: below that the
  // next layer reads the output from L3, and streaming sent it to memory instead.
  // Zen 5 (32 MiB L3), 2 threads, (32, 116, 28, 28) forward (11.6 MiB) repeated:
  // streaming past 4 MiB 0.37 ms, past 16 MiB 0.26 ms (torch 0.19-0.46 in bench_ops).
  const bool stream = N * C * plane > (int64_t(16) << 20);
  parallel_for(0, N * C, grain, [&](int64_t b, int64_t e) {
    for (int64_t o = b; o < e; ++o) {
      const int64_t n = o / C, c = o % C;
      const int64_t j = c / g, i = c % g;  // output channel j*g + i reads input channel i*k + j
      const char* from = src + (n * C + i * k + j) * plane;
      if (stream) copy_streaming(dst + o * plane, from, static_cast<size_t>(plane));
      else std::memcpy(dst + o * plane, from, static_cast<size_t>(plane));
    }
    if (stream) store_fence();
  });
}

}  // namespace cnnfast::cpu
