// Host allocator policy. NumPy allocates every kernel output with malloc; glibc
// serves blocks above its mmap threshold with fresh mmaps and trims freed heap
// back to the OS, so each new activation-sized array pays a page fault per 4 KiB
// on first touch (measured: an autograd ReLU forward+backward on 25 MB tensors
// took 15.8 ms instead of 5.9 ms). Raising the mmap threshold to glibc's maximum
// (32 MiB) and the trim threshold to 1 GiB lets freed blocks be reused, as a
// caching allocator would; the cost is that up to 1 GiB of freed heap stays
// with the process. CNNFAST_HOST_ALLOCATOR=system keeps glibc's defaults.
#pragma once

namespace cnnfast {
// Returns true when the policy was applied (glibc, not opted out).
bool tune_host_allocator();
}  // namespace cnnfast
