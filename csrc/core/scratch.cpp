#include "core/scratch.h"

#include <cstring>

#include "core/error.h"
#include "core/memory.h"
#include "core/workspace.h"

namespace cnnfast {

float* thread_scratch_floats(int slot, int64_t count) {
  CNNFAST_CHECK(slot >= 0 && slot < kScratchSlots, ValueError, "scratch slot ", slot, " out of range");
  thread_local AlignedPtr<float> buf[kScratchSlots];
  thread_local int64_t cap[kScratchSlots] = {};
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
  if (cap < count) {
    buf = aligned_alloc_array<float>(count);
    std::memset(buf.get(), 0, static_cast<size_t>(count) * sizeof(float));
    workspace_note_scratch((count - cap) * int64_t(sizeof(float)));
    cap = count;
  }
  return buf.get();
}

}  // namespace cnnfast
