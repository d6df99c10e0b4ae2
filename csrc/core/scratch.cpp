#include "core/scratch.h"

#include <atomic>
#include <cstring>

#include "core/error.h"
#include "core/memory.h"
#include "core/workspace.h"

namespace cnnfast {

namespace {
// Bumped by scratch_release(); a buffer made under an older generation is dropped the
// next time its own thread asks for that slot (never before: a kernel may still be
// reading another slot of the same thread).
std::atomic<uint64_t> g_generation{0};

void drop_if_stale(AlignedPtr<float>& buf, int64_t& cap, uint64_t& gen) {
  const uint64_t now = g_generation.load(std::memory_order_relaxed);
  if (gen == now) return;
  gen = now;
  if (cap == 0) return;
  buf.reset();
  workspace_note_scratch(-cap * int64_t(sizeof(float)));
  cap = 0;
}
}  // namespace

void scratch_release() { g_generation.fetch_add(1, std::memory_order_relaxed); }

float* thread_scratch_floats(int slot, int64_t count) {
  CNNFAST_CHECK(slot >= 0 && slot < kScratchSlots, ValueError, "scratch slot ", slot, " out of range");
  thread_local AlignedPtr<float> buf[kScratchSlots];
  thread_local int64_t cap[kScratchSlots] = {};
  thread_local uint64_t gen[kScratchSlots] = {};
  drop_if_stale(buf[slot], cap[slot], gen[slot]);
  if (cap[slot] < count) {
    buf[slot] = aligned_alloc_array<float>(count);
    workspace_note_scratch((count - cap[slot]) * int64_t(sizeof(float)));
    cap[slot] = count;
  }
  return buf[slot].get();
}

const float* thread_zero_floats(int64_t count) {
  thread_local AlignedPtr<float> buf;
  thread_local int64_t cap = 0;
  thread_local uint64_t gen = 0;
  drop_if_stale(buf, cap, gen);
  if (cap < count) {
    buf = aligned_alloc_array<float>(count);
    std::memset(buf.get(), 0, static_cast<size_t>(count) * sizeof(float));
    workspace_note_scratch((count - cap) * int64_t(sizeof(float)));
    cap = count;
  }
  return buf.get();
}

}  // namespace cnnfast
