// parallel_for over a persistent thread pool. Work is split statically into one
// contiguous chunk per thread (whichever thread is free first, the caller included,
// takes the next unstarted chunk), so a kernel that reduces inside its chunk gets
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

// Opt-in accounting of the pool's jobs, for benchmarks on a shared machine, where
// wall-clock time says more about the other processes than about the split: each
// chunk's thread CPU time is recorded (two clock reads per chunk, so it is off by
// default). A caller's quiet-machine time is then about its own CPU time outside the
// jobs plus, per job, the slowest chunk: cpu - caller_job_s + max_chunk_s.
struct ParallelStats {
  int64_t jobs = 0;           // jobs that ran on the pool (inline runs are not jobs)
  double max_chunk_s = 0;     // sum over jobs of the slowest chunk's CPU time
  double sum_chunk_s = 0;     // sum over jobs of every chunk's CPU time
  double caller_job_s = 0;    // the calling thread's CPU time inside the jobs (its chunk and its wait)
};
// While on, conv_parallel.h's dynamic task lists run on the calling thread, each task
// timed, and are recorded as the job a quiet machine would run (record_parallel_job:
// the tasks dealt in order to whichever thread is free first), not as whichever
// thread the other processes happened to let run.
void set_parallel_stats(bool on);  // also resets the counts
bool parallel_stats_on();
void record_parallel_job(double caller_s, double makespan_s, double total_s);
double thread_cpu_seconds();     // the calling thread's CPU clock
double thread_cpu_clock_cost();  // what one read of it costs (measured when stats are turned on)
ParallelStats parallel_stats();

}  // namespace cnnfast
