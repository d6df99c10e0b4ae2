#include "core/workspace.h"

#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <pthread.h>
#include <string>

#include "core/checked_math.h"
#include "core/error.h"
#include "core/memory.h"

namespace cnnfast {
namespace {

// Sizes round up to 1/8 of their power of two (and to the cache line), so blocks of
// nearly equal requests (the same layer at another batch tail) are interchangeable
// while a reused block wastes at most 12.5%.
std::size_t round_size(std::size_t bytes) {
  if (bytes <= kAlignment) return kAlignment;
  std::size_t top = std::size_t(1) << (63 - __builtin_clzll(bytes));
  std::size_t step = std::max<std::size_t>(kAlignment, top / 8);
  return (bytes + step - 1) / step * step;
}

int64_t limit_from_env() {
  const char* v = std::getenv("CNNFAST_WORKSPACE_CACHE_MB");
  if (!v || !*v) return int64_t(64) << 20;
  char* end = nullptr;
  long long mb = std::strtoll(v, &end, 10);
  return (end && *end == '\0' && mb >= 0) ? int64_t(mb) << 20 : int64_t(64) << 20;
}

// An idle block not borrowed again within this many borrows is freed: a training step
// borrows the same sizes every step (a few hundred to a few thousand borrows), so what
// outlives that belongs to a model or batch size no longer in use.
constexpr int64_t kMaxIdleBorrows = 8192;

struct Idle {
  void* p;
  int64_t since;  // borrow count when it was handed back
};

struct Pool {
  std::mutex mu;
  std::multimap<std::size_t, Idle> idle;  // size -> block
  int64_t clock = 0;                      // borrows ever (st.borrows restarts with the peaks)
  WorkspaceStats st;
  Pool() { st.cache_limit = limit_from_env(); }

  void note_peaks() {
    if (st.in_use > st.peak_in_use) st.peak_in_use = st.in_use;
    if (st.in_use + st.cached > st.peak_total) st.peak_total = st.in_use + st.cached;
  }
  // Frees the smallest idle blocks until `room` more bytes fit under the limit.
  void make_room(int64_t room) {
    while (!idle.empty() && st.cached + room > st.cache_limit) {
      auto it = idle.begin();
      st.cached -= static_cast<int64_t>(it->first);
      std::free(it->second.p);
      idle.erase(it);
    }
  }
  void drop_stale() {
    for (auto it = idle.begin(); it != idle.end();) {
      if (clock - it->second.since > kMaxIdleBorrows) {
        st.cached -= static_cast<int64_t>(it->first);
        std::free(it->second.p);
        it = idle.erase(it);
      } else {
        ++it;
      }
    }
  }
};

Pool& pool() {
  // Never destroyed: kernels on other threads may run at exit. The mutex is held across
  // fork() (data-loader workers fork), so a child never inherits it locked by a thread
  // that does not exist there.
  static Pool* p = [] {
    Pool* q = new Pool;
    pthread_atfork([] { pool().mu.lock(); }, [] { pool().mu.unlock(); }, [] { pool().mu.unlock(); });
    return q;
  }();
  return *p;
}

}  // namespace

std::size_t workspace_bytes(int64_t count, std::size_t elem) {
  std::size_t bytes = checked_bytes(count, elem, "workspace");
  CNNFAST_CHECK(bytes <= SIZE_MAX / 2, ValueError, "workspace: ", count, " elements overflow the size");
  return bytes;
}

WorkspaceBlock::WorkspaceBlock(std::size_t bytes) {
  const std::size_t size = round_size(bytes);
  Pool& P = pool();
  {
    std::lock_guard<std::mutex> lock(P.mu);
    ++P.st.borrows;
    if ((++P.clock & 255) == 0) P.drop_stale();
    // The smallest idle block that fits; one more than twice the size would be
    // better left for a request that needs it.
    auto it = P.idle.lower_bound(size);
    if (it != P.idle.end() && it->first <= 2 * size) {
      p_ = it->second.p;
      size_ = it->first;
      P.idle.erase(it);
      P.st.cached -= static_cast<int64_t>(size_);
      P.st.in_use += static_cast<int64_t>(size_);
      ++P.st.reused;
      P.note_peaks();
      return;
    }
  }
  void* p = std::aligned_alloc(kAlignment, size);
  if (!p) {
    // Idle blocks may be what stands in the way: give them back and try once more.
    workspace_trim();
    p = std::aligned_alloc(kAlignment, size);
    if (!p) throw AllocationError(cat("workspace: could not allocate ", size, " bytes"));
  }
  p_ = p;
  size_ = size;
  std::lock_guard<std::mutex> lock(P.mu);
  P.st.in_use += static_cast<int64_t>(size_);
  P.note_peaks();
}

void WorkspaceBlock::release() noexcept {
  if (!p_) return;
  Pool& P = pool();
  std::lock_guard<std::mutex> lock(P.mu);
  P.st.in_use -= static_cast<int64_t>(size_);
  const int64_t sz = static_cast<int64_t>(size_);
  if (sz <= P.st.cache_limit) {
    P.make_room(sz);
    P.idle.emplace(size_, Idle{p_, P.clock});
    P.st.cached += sz;
  } else {
    std::free(p_);
  }
  p_ = nullptr;
  size_ = 0;
}

WorkspaceStats workspace_stats() {
  Pool& P = pool();
  std::lock_guard<std::mutex> lock(P.mu);
  return P.st;
}

void workspace_reset_peak() {
  Pool& P = pool();
  std::lock_guard<std::mutex> lock(P.mu);
  P.st.peak_in_use = P.st.in_use;
  P.st.peak_total = P.st.in_use + P.st.cached;
  P.st.borrows = P.st.reused = 0;
}

void workspace_trim() {
  Pool& P = pool();
  std::lock_guard<std::mutex> lock(P.mu);
  for (auto& kv : P.idle) std::free(kv.second.p);
  P.idle.clear();
  P.st.cached = 0;
}

void set_workspace_cache_limit(int64_t bytes) {
  CNNFAST_CHECK(bytes >= 0, ValueError, "set_workspace_cache_limit: expected bytes >= 0, got ", bytes);
  Pool& P = pool();
  std::lock_guard<std::mutex> lock(P.mu);
  P.st.cache_limit = bytes;
  P.make_room(0);
}

namespace {
std::atomic<uint64_t> g_scratch_generation{0};
}

void workspace_note_scratch(int64_t delta_bytes, uint64_t generation) {
  Pool& P = pool();
  std::lock_guard<std::mutex> lock(P.mu);
  if (generation == g_scratch_generation.load(std::memory_order_relaxed)) P.st.scratch += delta_bytes;
}

uint64_t workspace_scratch_generation() { return g_scratch_generation.load(std::memory_order_relaxed); }

void workspace_scratch_new_generation() {
  Pool& P = pool();
  std::lock_guard<std::mutex> lock(P.mu);
  g_scratch_generation.fetch_add(1, std::memory_order_relaxed);
  P.st.scratch = 0;
}

}  // namespace cnnfast
