// parallel_for over a persistent thread pool. Work is split statically into one
// contiguous chunk per thread, so a kernel that reduces inside its chunk gets
// the same result for the same thread count on every run; kernels whose result
// must not depend on the thread count at all (dropout masks, reductions that
// tests compare across counts) must reduce in a fixed order themselves.
//
// Calls made from inside a parallel region run inline on the calling thread;
// concurrent calls from several Python threads take turns on the pool.
#pragma once
#include <cstdint>
#include <functional>

namespace cnnfast {

int get_num_threads();
// n >= 1; the pool is rebuilt with n-1 workers (the caller is the n-th).
void set_num_threads(int n);
bool in_parallel_region();

// fn(chunk_begin, chunk_end) is called for disjoint chunks covering [begin, end).
// grain: the smallest chunk worth a thread; below 2*grain everything runs inline.
void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& fn);

}  // namespace cnnfast
