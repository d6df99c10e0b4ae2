// Dynamic task distribution for the convolution kernels: the pool's threads
// take task indices from a shared counter instead of fixed ranges, so a thread
// that the OS deschedules (the benchmark machine is shared) does not hold the
// others back. Only for tasks whose results do not depend on which thread runs
// them (disjoint outputs); reductions keep the pool's static ranges.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>

#include "core/parallel.h"

namespace cnnfast::cpu {

// make_state() -> per-thread scratch (e.g. an im2col buffer), made once per
// thread; body(task, state) for every task in [0, n).
template <class MakeState, class Body>
void dynamic_tasks(int64_t n, MakeState&& make_state, Body&& body) {
  if (n <= 0) return;
  const int64_t threads = in_parallel_region() ? 1 : std::min<int64_t>(get_num_threads(), n);
  if (threads <= 1) {
    auto state = make_state();
    for (int64_t t = 0; t < n; ++t) body(t, state);
    return;
  }
  std::atomic<int64_t> next{0};
  parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    auto state = make_state();
    for (int64_t t = next.fetch_add(1, std::memory_order_relaxed); t < n;
         t = next.fetch_add(1, std::memory_order_relaxed))
      body(t, state);
  });
}

}  // namespace cnnfast::cpu
