// Host allocator policy, opt-in. NumPy allocates every kernel output with malloc;
// glibc serves blocks above its mmap threshold with fresh mmaps and trims freed heap
// back to the OS, so each new activation-sized array pays a page fault per 4 KiB on
// first touch. Raising the mmap threshold to glibc's maximum (32 MiB) and the trim
// threshold to 1 GiB lets freed blocks be reused, as a caching allocator would; the
// cost is that up to 1 GiB of freed heap stays with the process. mallopt changes the
// allocator of the whole process, not only cnnfast's buffers, so importing cnnfast
// never does it: the host application asks for it (cnnfast.tune_host_allocator(), or
// CNNFAST_HOST_ALLOCATOR=tuned at import). What it buys and costs: benchmarks/RESULTS.md,
// "Host allocator".
#pragma once

namespace cnnfast {
// Applies the policy; true when it took effect (glibc only).
bool tune_host_allocator();
// Whether this process has applied it.
bool host_allocator_tuned();
// Applies it when CNNFAST_HOST_ALLOCATOR=tuned (called once at import).
void tune_host_allocator_if_requested();
}  // namespace cnnfast
