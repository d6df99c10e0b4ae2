// Dynamic task distribution for the convolution kernels: the pool's threads take
// task indices from shared counters instead of fixed ranges, so a thread that the
// OS deschedules (the benchmark machine is shared) does not hold the others back.
// Two ways of dealing: Interleaved (one shared counter, tasks dealt in order to
// whichever thread is free: the split rules of even_parts and the tap paths assume
// it) and Contiguous (each thread works through its own contiguous range, then takes
// what is left of the others'), for tasks that are neighbouring column blocks of the
// same output rows reading the same image: dealing those alternately to two threads
// cost 15-25% of the two-thread time on a Zen 2 (AlexNet 5x5 C96->256 forward
// 47.7 -> 41.2 ms, one thread 80.6; CIFAR 5x5 6.0 -> 4.6, one thread 9.3). Only for
// tasks whose results do not depend on which thread runs them (disjoint outputs);
// reductions keep the pool's static ranges.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

#include "core/parallel.h"

namespace cnnfast::cpu {

// make_state() -> per-thread scratch (e.g. an im2col buffer), made once per
// thread; body(task, state) for every task in [0, n).
enum class Dealing { Interleaved, Contiguous };

template <class MakeState, class Body>
void dynamic_tasks(int64_t n, MakeState&& make_state, Body&& body, Dealing dealing = Dealing::Interleaved) {
  if (n <= 0) return;
  const int64_t threads = in_parallel_region() ? 1 : std::min<int64_t>(get_num_threads(), n);
  if (threads <= 1) {
    auto state = make_state();
    for (int64_t t = 0; t < n; ++t) body(t, state);
    return;
  }
  if (parallel_stats_on()) {  // measuring the split (core/parallel.h)
    // Each clock read is a system call (~1 us): its cost is taken out of every task,
    // or the 1024 tiny plane tasks of a depthwise layer looked twice their size.
    const double start = thread_cpu_seconds(), read = thread_cpu_clock_cost();
    std::vector<double> free_at(size_t(threads), 0.0);
    double total = 0;
    auto state = make_state();
    for (int64_t t = 0; t < n; ++t) {
      const double t0 = thread_cpu_seconds();
      body(t, state);
      const double dt = std::max(0.0, thread_cpu_seconds() - t0 - read);
      total += dt;
      *std::min_element(free_at.begin(), free_at.end()) += dt;
    }
    const double span = *std::max_element(free_at.begin(), free_at.end());
    record_parallel_job(thread_cpu_seconds() - start - 2 * read * double(n), span, total);
    return;
  }
  if (dealing == Dealing::Interleaved) {
    std::atomic<int64_t> next{0};
    parallel_for(0, threads, 1, [&](int64_t, int64_t) {
      auto state = make_state();
      for (int64_t t = next.fetch_add(1, std::memory_order_relaxed); t < n;
           t = next.fetch_add(1, std::memory_order_relaxed))
        body(t, state);
    });
    return;
  }
  struct alignas(64) Cursor {
    std::atomic<int64_t> next{0};
  };
  std::vector<Cursor> cursor(static_cast<size_t>(threads));
  for (int64_t r = 0; r < threads; ++r) cursor[size_t(r)].next.store(n * r / threads, std::memory_order_relaxed);
  parallel_for(0, threads, 1, [&](int64_t own, int64_t) {
    auto state = make_state();
    for (int64_t k = 0; k < threads; ++k) {  // its own range first, then the others' leftovers
      const int64_t r = (own + k) % threads, end = n * (r + 1) / threads;
      std::atomic<int64_t>& next = cursor[size_t(r)].next;
      for (int64_t t = next.fetch_add(1, std::memory_order_relaxed); t < end;
           t = next.fetch_add(1, std::memory_order_relaxed))
        body(t, state);
    }
  });
}

// Planes per task for per-plane kernels (depthwise): a MobileNet 14x14 plane is ~0.1 us
// of work, less than the shared task counter's cache line takes to cross between cores,
// so one plane a task made the 2-thread depthwise layers slower than 1 thread (384
// channels at 14x14, 4 layers: 0.18 ms on 1 thread, 0.17 on 2). Tasks of >= ~4K outputs,
// still >= 4 per thread where the layer has that many planes.
inline int64_t planes_per_task(int64_t planes, int64_t plane_outputs) {
  const int64_t threads = in_parallel_region() ? 1 : get_num_threads();
  const int64_t by_size = std::max<int64_t>(1, 4096 / std::max<int64_t>(plane_outputs, 1));
  const int64_t by_count = std::max<int64_t>(1, planes / (4 * threads));
  return std::min(by_size, by_count);
}

// How many parts to cut each of `tasks` tasks into (at most max_parts) so that the
// threads get even shares, the tasks dealt in order to whichever thread is free
// first: 1 when that is already within 10% of even. The tasks are equal but for the
// last, `last` (0, 1] of the others (a chunk of the leftover columns). Batch 1 or an
// odd batch otherwise left a thread idle for a whole task (one Winograd chunk of a
// 14x14 map: one of two threads did it all). Every part costs some work twice (the
// chunk's input transform or columns), so no more parts than that.
inline int64_t even_parts(int64_t tasks, int64_t max_parts, double last = 1.0) {
  const int64_t threads = in_parallel_region() ? 1 : get_num_threads();
  if (threads <= 1 || tasks <= 0) return 1;
  const double total = double(tasks - 1) + last;
  int64_t parts = 1;
  for (; parts < max_parts && tasks * parts < 8 * threads; ++parts) {
    std::vector<double> free_at(size_t(threads), 0.0);
    for (int64_t t = 0; t < tasks; ++t)
      for (int64_t q = 0; q < parts; ++q)
        *std::min_element(free_at.begin(), free_at.end()) += (t + 1 == tasks ? last : 1.0) / double(parts);
    if (*std::max_element(free_at.begin(), free_at.end()) * double(threads) <= 1.1 * total) break;
  }
  return parts;
}

// Tasks of a block of cb column tiles by a chunk of rc row blocks (per image when
// `images` > 1), the pieces halved (row chunks first) until each thread has per_thread.
struct TaskGrid {
  int64_t cb, rc, nb, nr;
};
inline TaskGrid task_grid(int64_t images, int64_t tiles, int64_t cb, int64_t rows, int64_t rc,
                          int64_t per_thread = 4) {
  const int64_t threads = in_parallel_region() ? 1 : get_num_threads();
  auto count = [&] { return images * ((tiles + cb - 1) / cb) * ((rows + rc - 1) / rc); };
  while (threads > 1 && count() < per_thread * threads && (rc > 1 || cb > 1)) {
    if (rc > 1) rc = (rc + 1) / 2;
    else cb = (cb + 1) / 2;
  }
  return {cb, rc, (tiles + cb - 1) / cb, (rows + rc - 1) / rc};
}

// Task t of a task_grid over the channel-vector tiles (prepack.cpp's kvec driver and
// conv_nchw16c.cpp's 1x1 one): its image, then the input channels `depth` at a time, its
// row groups, its column tiles. w: the weights as (groups, CK, rows) blocks. Calls
// tile(n, c0, c1, g, q, wnext) with wnext the weight slice this loop order takes next,
// given to the first tile of each group only (it fetches that slice meanwhile), else null.
template <class Tile>
inline void for_grid_task_tiles(const TaskGrid& grid, int64_t t, int64_t tiles, int64_t groups, int64_t CK,
                                int64_t depth, const float* w, int64_t rows, Tile&& tile) {
  const int64_t r = t % grid.nr, b = (t / grid.nr) % grid.nb, n = t / (grid.nr * grid.nb);
  const int64_t g0 = r * grid.rc, g1 = std::min(groups, (r + 1) * grid.rc);
  const int64_t q0 = b * grid.cb, q1 = std::min(tiles, (b + 1) * grid.cb);
  for (int64_t c0 = 0; c0 < CK; c0 += depth) {
    const int64_t c1 = std::min(CK, c0 + depth);
    for (int64_t g = g0; g < g1; ++g) {
      const float* wnext = g + 1 < g1 ? w + ((g + 1) * CK + c0) * rows
                           : c1 < CK  ? w + (g0 * CK + c1) * rows
                                      : nullptr;
      for (int64_t q = q0; q < q1; ++q) tile(n, c0, c1, g, q, q == q0 ? wnext : nullptr);
    }
  }
}

}  // namespace cnnfast::cpu
