#include "core/scratch.h"

#include <cstring>

#include "core/error.h"
#include "core/memory.h"
#include "core/workspace.h"

namespace cnnfast {

namespace {

// One thread's buffers: kScratchSlots scratch slots and, last, the zero buffer. Each
// remembers the scratch generation it was counted under (workspace.h): after
// workspace_trim() starts a new one, a slot's old buffer is dropped at its thread's next
// request of that slot (never before: a kernel may still be reading another slot), and
// it no longer counts in workspace_stats()["scratch"]. A thread that exits takes its
// buffers' bytes out of the count.
struct ThreadBuffers {
  static constexpr int kSlots = kScratchSlots + 1;
  AlignedPtr<float> buf[kSlots];
  int64_t cap[kSlots] = {};
  uint64_t gen[kSlots] = {};

  ~ThreadBuffers() {
    for (int i = 0; i < kSlots; ++i)
      if (cap[i]) workspace_note_scratch(-cap[i] * int64_t(sizeof(float)), gen[i]);
  }

  // The buffer of `slot`, at least `count` floats; `fresh` tells whether it was (re)made.
  float* get(int slot, int64_t count, bool& fresh) {
    const uint64_t now = workspace_scratch_generation();
    if (gen[slot] != now) {
      buf[slot].reset();
      cap[slot] = 0;
      gen[slot] = now;
    }
    fresh = cap[slot] < count;
    if (fresh) {
      buf[slot] = aligned_alloc_array<float>(count);
      workspace_note_scratch((count - cap[slot]) * int64_t(sizeof(float)), now);
      cap[slot] = count;
    }
    return buf[slot].get();
  }
};

ThreadBuffers& thread_buffers() {
  thread_local ThreadBuffers b;
  return b;
}

}  // namespace

float* thread_scratch_floats(int slot, int64_t count) {
  CNNFAST_CHECK(slot >= 0 && slot < kScratchSlots, ValueError, "scratch slot ", slot, " out of range");
  bool fresh = false;
  return thread_buffers().get(slot, count, fresh);
}

const float* thread_zero_floats(int64_t count) {
  bool fresh = false;
  float* z = thread_buffers().get(kScratchSlots, count, fresh);
  if (fresh) std::memset(z, 0, static_cast<size_t>(count) * sizeof(float));
  return z;
}

}  // namespace cnnfast
