// Kernel workspaces (im2col column matrices, Winograd transforms, re-laid-out weights,
// per-thread partial gradients) borrowed from one process-wide pool instead of a fresh
// allocation per call. A block handed back is kept for the next call of any kernel on
// any thread (under a mutex: a handful of borrows per kernel call), so a training step
// stops paying an mmap, a page fault per 4 KiB and an munmap for every convolution.
// What the pool keeps idle is capped (CNNFAST_WORKSPACE_CACHE_MB, default 64 MiB;
// set_workspace_cache_limit; the largest idle blocks are kept first) and a block not
// borrowed again within 8,192 borrows (a few training steps) is freed, so the pool adds at
// most that cap to a step's peak, and in practice what one step's convolutions use.
//
// The per-thread packing buffers of the GEMM (core/scratch.h) are a separate, older
// mechanism: they are owned by a thread for the whole run and are counted in the
// statistics below as "scratch".
//
// Like scratch.h, this lives in the generic build: ISA translation units must not
// instantiate allocation templates (cmake/check_isa_symbols.py).
#pragma once
#include <cstddef>
#include <cstdint>
#include <utility>

namespace cnnfast {

// A borrowed block of at least `bytes` bytes, 64-byte aligned, contents undefined.
class WorkspaceBlock {
 public:
  WorkspaceBlock() = default;
  explicit WorkspaceBlock(std::size_t bytes);
  WorkspaceBlock(WorkspaceBlock&& o) noexcept : p_(std::exchange(o.p_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  WorkspaceBlock& operator=(WorkspaceBlock&& o) noexcept {
    if (this != &o) {
      release();
      p_ = std::exchange(o.p_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  WorkspaceBlock(const WorkspaceBlock&) = delete;
  WorkspaceBlock& operator=(const WorkspaceBlock&) = delete;
  ~WorkspaceBlock() { release(); }
  void* data() const { return p_; }

 private:
  void release() noexcept;
  void* p_ = nullptr;
  std::size_t size_ = 0;  // the pool's (rounded) size of the block
};

// Typed view of a borrowed block with AlignedPtr's get(), so a kernel swaps one for the other.
template <class T>
class Workspace {
 public:
  Workspace() = default;
  explicit Workspace(WorkspaceBlock b) : b_(std::move(b)) {}
  T* get() const { return static_cast<T*>(b_.data()); }
  T& operator[](int64_t i) const { return get()[i]; }

 private:
  WorkspaceBlock b_;
};

// Bytes for `count` elements of `elem` bytes, overflow-checked (a wrapped product
// must not become a small buffer that the kernel then overruns).
std::size_t workspace_bytes(int64_t count, std::size_t elem);

template <class T>
Workspace<T> workspace_array(int64_t count) {
  return Workspace<T>(WorkspaceBlock(workspace_bytes(count, sizeof(T))));
}

struct WorkspaceStats {
  int64_t in_use = 0;          // bytes lent out now
  int64_t cached = 0;          // bytes kept idle for reuse
  int64_t peak_in_use = 0;     // since the last reset
  int64_t peak_total = 0;      // in_use + cached, since the last reset
  int64_t borrows = 0;         // since the last reset
  int64_t reused = 0;          // borrows served from the cache
  int64_t cache_limit = 0;
  int64_t scratch = 0;         // per-thread GEMM packing buffers (core/scratch.h), all threads
};

WorkspaceStats workspace_stats();
void workspace_reset_peak();
// Frees every idle block (in_use is untouched).
void workspace_trim();
void set_workspace_cache_limit(int64_t bytes);

// scratch.cpp reports its per-thread buffers here, each under the scratch generation it
// was counted in: workspace_trim() starts a new generation and zeroes the count, and notes
// for buffers of an older generation are ignored (scratch.cpp drops those buffers at
// their thread's next request), so "scratch" counts what was asked for since the trim.
void workspace_note_scratch(int64_t delta_bytes, uint64_t generation);
uint64_t workspace_scratch_generation();
// Called with workspace_trim() from Python (between steps), not on the allocation-failure
// path: the threads' buffers then shrink to what they ask for next.
void workspace_scratch_new_generation();

}  // namespace cnnfast
