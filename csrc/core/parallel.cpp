#include "core/parallel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <pthread.h>
#include <string>
#include <system_error>
#include <thread>
#include <time.h>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#endif
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

#include "core/error.h"

namespace cnnfast {
namespace {

thread_local bool t_in_region = false;

std::atomic<bool> g_stats_on{false};
ParallelStats g_stats;
std::mutex g_stats_mutex;
double g_clock_cost = 0;  // seconds one thread_cpu_s() read takes (it is a system call)

double thread_cpu_s() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// A careless set_num_threads(10**6) would otherwise spend minutes creating
// threads (or exhaust the process's thread limit); far above any core count.
constexpr int kMaxThreads = 1024;

// Waking a thread blocked on a condition variable costs tens of microseconds (a
// futex wake plus the scheduler), more than a whole small kernel (ReLU on 64K floats
// ran slower on 2 threads than on one; benchmarks/RESULTS.md, "Design measurements"). So workers spin on the job counter
// for a while after each job, and the caller spins on the completion count, before
// either falls back to blocking; ops issued back to back (a training step) then hand
// over in well under a microsecond. CNNFAST_SPIN_US sets the window (0: always block).
std::chrono::microseconds spin_window() {
  long us = 100;
  if (const char* env = std::getenv("CNNFAST_SPIN_US")) us = std::max(0L, std::min(std::atol(env), 100000L));
  return std::chrono::microseconds(us);
}

// Where each worker runs (index w -> CPU), or empty to leave placement to the OS.
// Measured on a 2-vCPU VM (Zen 2, benchmarks/RESULTS.md "Thread placement"): after the
// process idled for ~100 ms, a woken worker was often placed on the caller's CPU and
// the two shared one core for the whole kernel (a 2-thread 3x3 convolution took its
// 1-thread time, 13.6 against 7.7 ms). Pinning the workers (the caller stays free, so
// the scheduler moves it off a busy CPU) removed that: 9.4 ms. Only done when the
// pool has exactly as many threads as the CPUs this process may use, so processes
// that split a machine (mpiexec ranks with fewer threads each) are never stacked on
// the same CPUs; CNNFAST_PIN_THREADS=0 turns it off, =1 pins whenever the threads fit.
std::vector<int> worker_cpus(int threads) {
  const char* env = std::getenv("CNNFAST_PIN_THREADS");
  const std::string mode = env ? env : "";
  if (mode == "0" || threads < 2) return {};
#if defined(__linux__)
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) return {};
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &allowed)) cpus.push_back(c);
  const bool fits = mode == "1" ? int(cpus.size()) >= threads : int(cpus.size()) == threads;
  if (!fits) return {};
  return std::vector<int>(cpus.begin(), cpus.begin() + threads);
#else
  return {};
#endif
}

void pin_thread_to_cpu(pthread_t thread, int cpu) {
#if defined(__linux__)
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpu, &one);
  pthread_setaffinity_np(thread, sizeof(one), &one);  // best effort: a refusal leaves it where it was
#else
  (void)thread;
  (void)cpu;
#endif
}

// The CPU the calling thread runs on now, or -1 where that cannot be asked.
int current_cpu() {
#if defined(__linux__)
  return sched_getcpu();
#else
  return -1;
#endif
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(_M_X64)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// Spins until done() or the window has passed; true when done() became true.
template <class Done>
bool spin_until(Done done, std::chrono::microseconds window) {
  if (window.count() == 0) return done();
  const auto deadline = std::chrono::steady_clock::now() + window;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() >= deadline) return done();
  }
}

int default_thread_count() {
  if (const char* env = std::getenv("CNNFAST_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n >= 1) return std::min(n, kMaxThreads);
  }
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n >= 1) return std::min(n, kMaxThreads);
  }
#endif
  unsigned hc = std::thread::hardware_concurrency();
  return hc ? static_cast<int>(hc) : 1;
}

class Pool {
 public:
  explicit Pool(int threads) : spin_(spin_window()) { start(threads); }
  ~Pool() { stop(); }

  int threads() const { return threads_; }

  void resize(int threads) {
    std::lock_guard<std::mutex> use(use_mutex_);
    stop();
    restart_ = false;
    start(threads);
  }

  void run(int64_t begin, int64_t end, int chunks, const std::function<void(int64_t, int64_t)>& fn) {
    std::lock_guard<std::mutex> use(use_mutex_);
    if (restart_) {  // first job in a forked child: its workers were not copied by fork()
      restart_ = false;
      quit_ = false;
      quit_flag_.store(false);
      start(threads_);
    }
    chunks = std::min(chunks, threads_);
    if (chunks > 1) keep_caller_cpu_free();
    const bool stats = g_stats_on.load(std::memory_order_relaxed);
    const double caller0 = stats ? thread_cpu_s() : 0.0;
    if (stats) chunk_cpu_.assign(size_t(chunks), 0.0);
    uint32_t tag;
    {
      std::lock_guard<std::mutex> lk(m_);
      fn_ = &fn;
      begin_ = begin;
      end_ = end;
      chunks_ = chunks;
      stats_ = stats;
      pending_.store(chunks, std::memory_order_relaxed);
      error_ = nullptr;
      tag = static_cast<uint32_t>(generation_.load(std::memory_order_relaxed) + 1);
      next_chunk_.store(uint64_t(tag) << 32, std::memory_order_release);
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_work_.notify_all();
    // The caller takes chunks too, not only chunk 0: a worker that the OS has not woken
    // yet (it blocked after its spin window, or another process holds its core) leaves
    // its chunk to whoever is free first. The chunks' ranges are fixed by the count, so
    // the results do not depend on which thread ran which.
    for (int c; claim(tag, chunks, c);) {
      run_chunk(c);
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
    if (!spin_until([&] { return pending_.load(std::memory_order_acquire) == 0; }, spin_)) {
      std::unique_lock<std::mutex> lk(m_);
      cv_done_.wait(lk, [&] { return pending_.load(std::memory_order_relaxed) == 0; });
    }
    // Pairs with the workers' unlock after their last write of this job (error_ included).
    std::lock_guard<std::mutex> lk(m_);
    fn_ = nullptr;
    if (stats) {
      std::lock_guard<std::mutex> sl(g_stats_mutex);
      g_stats.jobs += 1;
      g_stats.caller_job_s += thread_cpu_s() - caller0;
      double mx = 0;
      for (double c : chunk_cpu_) {
        mx = std::max(mx, c);
        g_stats.sum_chunk_s += c;
      }
      g_stats.max_chunk_s += mx;
    }
    if (error_) std::rethrow_exception(error_);
  }

  // fork() copies only the calling thread. Holding both locks across it leaves the child
  // with the pool in a consistent, idle state; the child forgets the parent's workers
  // (their std::thread objects are leaked: joining or destroying them would abort) and
  // starts its own at its first job. Without this a child's first parallel job waited
  // forever for workers that do not exist.
  void fork_prepare() {
    use_mutex_.lock();
    m_.lock();
  }
  void fork_parent() {
    m_.unlock();
    use_mutex_.unlock();
  }
  void fork_child() {
    m_.unlock();
    use_mutex_.unlock();
    new std::vector<std::thread>(std::move(workers_));
    workers_.clear();
    restart_ = threads_ > 1;
  }

 private:
  // The caller is left unpinned, and after an idle spell the scheduler often wakes it
  // on a pinned worker's CPU and leaves it there (Zen 5 VM, 2 vCPUs: a 2-thread
  // dilated 3x3 C64 forward after 100 ms of sleep took its 1-thread time, 10.3 ms
  // against 5.4, on every call whose caller sat on the worker's CPU). Before each job
  // the caller checks where it is (a vDSO read, no system call); on a collision that
  // worker swaps CPUs with the caller's slot, one affinity call, only when it moved.
  void keep_caller_cpu_free() {
    if (pins_.empty()) return;
    const int here = current_cpu();
    if (here < 0 || here == pins_[0]) return;
    for (size_t w = 1; w < pins_.size() && w - 1 < workers_.size(); ++w) {
      if (pins_[w] != here) continue;
      std::swap(pins_[0], pins_[w]);
      pin_thread_to_cpu(workers_[w - 1].native_handle(), pins_[w]);
      return;
    }
  }

  void start(int threads) {
    threads_ = std::max(1, threads);
    quit_ = false;
    quit_flag_.store(false);
    // New workers must only answer jobs posted after they exist: a pool rebuilt
    // by set_num_threads() already has a non-zero generation.
    const uint64_t current = generation_.load();
    pins_ = worker_cpus(threads_);
    for (int w = 1; w < threads_; ++w) {
      try {
        const int cpu = pins_.empty() ? -1 : pins_[size_t(w)];
        workers_.emplace_back([this, current] { worker_loop(current); });
        // Pinned from here, not by the new thread itself: placement is then settled when
        // start() returns (the first job may well finish before a new thread runs at all).
        if (cpu >= 0) pin_thread_to_cpu(workers_.back().native_handle(), cpu);
      } catch (const std::system_error& e) {
        // The OS refused a thread: keep the ones that started, so run() never
        // waits for a chunk no worker will take.
        threads_ = w;
        throw ValueError(cat("n: could not start ", threads, " threads (the system refused thread ", w,
                             ": ", e.what(), "); running with ", w));
      }
    }
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lk(m_);
      quit_ = true;
      quit_flag_.store(true);
    }
    cv_work_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  void run_chunk(int index) {
    const int64_t n = end_ - begin_;
    const int64_t lo = begin_ + n * index / chunks_;
    const int64_t hi = begin_ + n * (index + 1) / chunks_;
    const bool was = t_in_region;
    t_in_region = true;
    const double cpu0 = stats_ ? thread_cpu_s() : 0.0;
    try {
      if (lo < hi) (*fn_)(lo, hi);
    } catch (...) {
      std::lock_guard<std::mutex> lk(m_);
      if (!error_) error_ = std::current_exception();
    }
    if (stats_) chunk_cpu_[size_t(index)] = thread_cpu_s() - cpu0;  // each chunk its own slot
    t_in_region = was;
  }

  void worker_loop(uint64_t seen) {
    int chunks = 0;
    for (;;) {
      // The counter is only read here; the job itself is read under the mutex below.
      spin_until([&] { return generation_.load(std::memory_order_acquire) != seen || quit_flag_.load(); }, spin_);
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_work_.wait(lk, [&] { return quit_ || generation_.load(std::memory_order_relaxed) != seen; });
        if (quit_) return;
        seen = generation_.load(std::memory_order_relaxed);
        chunks = chunks_;
      }
      for (int c; claim(static_cast<uint32_t>(seen), chunks, c);) {
        run_chunk(c);
        bool last;
        {
          std::lock_guard<std::mutex> lk(m_);
          last = pending_.fetch_sub(1, std::memory_order_acq_rel) == 1;
        }
        if (last) cv_done_.notify_one();
      }
    }
  }

  // Takes the next unstarted chunk of the job tagged `tag` (the low 32 bits of its
  // generation); false when they are all taken or that job is over. The tag keeps a
  // late worker from taking a chunk of the next job before that job is published.
  bool claim(uint32_t tag, int chunks, int& c) {
    uint64_t cur = next_chunk_.load(std::memory_order_acquire);
    for (;;) {
      if (uint32_t(cur >> 32) != tag || int64_t(cur & 0xffffffffu) >= chunks) return false;
      if (next_chunk_.compare_exchange_weak(cur, cur + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
        c = static_cast<int>(cur & 0xffffffffu);
        return true;
      }
    }
  }

  std::mutex use_mutex_;  // one parallel_for at a time owns the workers
  std::mutex m_;
  std::condition_variable cv_work_, cv_done_;
  std::vector<std::thread> workers_;
  // pins_[w]: the CPU worker w is pinned to (w >= 1); pins_[0] the one left for the
  // caller. Empty when the workers are not pinned. Read and changed under use_mutex_.
  std::vector<int> pins_;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t begin_ = 0, end_ = 0;
  int chunks_ = 0, threads_ = 1;
  std::atomic<int> pending_{0};  // chunks of the current job not yet finished
  std::atomic<uint64_t> next_chunk_{0};  // the current job's tag << 32 | its next unclaimed chunk
  std::atomic<uint64_t> generation_{0};  // bumped (under m_) each time a job is posted
  bool quit_ = false;
  bool restart_ = false;  // set in a forked child: start workers before the next job
  std::atomic<bool> quit_flag_{false};  // quit_ for the spinning workers, who hold no lock
  const std::chrono::microseconds spin_;
  std::exception_ptr error_;
  bool stats_ = false;              // this job records chunk CPU times (set_parallel_stats)
  std::vector<double> chunk_cpu_;   // per chunk of the current job
};

Pool& pool() {
  // Leaked on purpose: joining threads during interpreter shutdown can deadlock.
  static Pool* p = [] {
    Pool* made = new Pool(default_thread_count());
    pthread_atfork([] { pool().fork_prepare(); }, [] { pool().fork_parent(); }, [] { pool().fork_child(); });
    return made;
  }();
  return *p;
}

}  // namespace

int get_num_threads() { return pool().threads(); }

void set_num_threads(int n) {
  CNNFAST_CHECK(n >= 1, ValueError, "n: expected a thread count >= 1, got ", n);
  CNNFAST_CHECK(n <= kMaxThreads, ValueError, "n: expected a thread count <= ", kMaxThreads, ", got ", n);
  CNNFAST_CHECK(!t_in_region, ValueError, "set_num_threads: cannot be called inside a parallel region");
  if (n != pool().threads()) pool().resize(n);
}

bool in_parallel_region() { return t_in_region; }

void set_parallel_stats(bool on) {
  std::lock_guard<std::mutex> lk(g_stats_mutex);
  g_stats = ParallelStats{};
  if (on) {
    const double t0 = thread_cpu_s();
    for (int i = 0; i < 200; ++i) thread_cpu_s();
    g_clock_cost = (thread_cpu_s() - t0) / 201;
  }
  g_stats_on.store(on);
}

bool parallel_stats_on() { return g_stats_on.load(std::memory_order_relaxed); }

double thread_cpu_seconds() { return thread_cpu_s(); }

double thread_cpu_clock_cost() { return g_clock_cost; }

void record_parallel_job(double caller_s, double makespan_s, double total_s) {
  std::lock_guard<std::mutex> lk(g_stats_mutex);
  g_stats.jobs += 1;
  g_stats.caller_job_s += caller_s;
  g_stats.max_chunk_s += makespan_s;
  g_stats.sum_chunk_s += total_s;
}

ParallelStats parallel_stats() {
  std::lock_guard<std::mutex> lk(g_stats_mutex);
  return g_stats;
}

void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& fn) {
  if (end <= begin) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t n = end - begin;
  const int threads = t_in_region ? 1 : pool().threads();
  const int64_t chunks = std::min<int64_t>(threads, n / grain);
  if (chunks <= 1) {
    fn(begin, end);
    return;
  }
  pool().run(begin, end, static_cast<int>(chunks), fn);
}

}  // namespace cnnfast
