// A small thread pool for the custom kernels, used instead of OpenMP's parallel regions.
//
// Why not OpenMP: MindSpore loads libgomp before our libraries, so its default wait policy
// (idle team threads spin) cannot be changed from here, and those spinning threads compete with
// MindSpore's own spinning thread pool for the same cores. MobileNetV2 training at batch 8 on the
// 2-core machine under background load took 5.3 s per step with OpenMP regions in the kernels and
// 1.15 s with OMP_WAIT_POLICY=passive or one thread (bench/RESULTS.md). Here idle workers sleep on
// a condition variable, work is handed out in chunks from an atomic counter (a descheduled thread
// holds up at most one chunk), and a worker that wakes after the work is gone does not take part.
//
// Size: what mnv2_set_kernel_threads() asked for before the first kernel call (mnv2.ops does, from
// OMP_NUM_THREADS as the process saw it at start: the launcher's share per rank), else the CPUs this
// process may run on. Not OMP_NUM_THREADS as read here: MindSpore's runtime sets it to 1 when it is
// unset, which ran every kernel on one thread. A call made while another call is using the pool
// (MindSpore launching two kernels at once), or from a forked child, runs on the calling thread alone.
#pragma once

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace mnv2 {

// The pool size asked for before its first use (0: not asked).
inline std::atomic<int> &requested_threads() {
  static std::atomic<int> threads{0};
  return threads;
}

class Pool {
 public:
  static Pool &instance() {
    // Never destroyed: the workers stay blocked until the process ends (joining them at exit
    // could wait on a kernel still running, and a forked child must not touch them at all).
    static Pool *pool = new Pool();
    return *pool;
  }

  // Calls body(begin, end) over [0, n) in chunks of `grain` items, on up to size() threads.
  // Runs serially when `parallel` is false or there is only one chunk.
  template <class F>
  void parallel_for(int64_t n, int64_t grain, bool parallel, F &&body) {
    grain = std::max<int64_t>(1, grain);
    std::unique_lock<std::mutex> busy(busy_, std::defer_lock);
    if (!parallel || n <= grain || workers_.empty() || getpid() != pid_ || !busy.try_lock()) {
      if (n > 0) body(int64_t{0}, n);
      return;
    }
    using Body = std::remove_reference_t<F>;
    Task task{&invoke<Body>, const_cast<void *>(static_cast<const void *>(&body)), n, grain};
    {
      std::lock_guard<std::mutex> lock(mutex_);
      task_ = &task;
      open_ = true;
      ++generation_;
    }
    wake_.notify_all();
    task.work();
    std::unique_lock<std::mutex> lock(mutex_);
    open_ = false;  // workers that wake from now on leave this task alone
    done_.wait(lock, [&] { return joined_ == 0; });
    task_ = nullptr;
  }

  int size() const { return static_cast<int>(workers_.size()) + 1; }

 private:
  struct Task {
    void (*call)(void *, int64_t, int64_t);
    void *body;
    int64_t n, grain;
    std::atomic<int64_t> next{0};

    Task(void (*c)(void *, int64_t, int64_t), void *b, int64_t n_, int64_t g)
        : call(c), body(b), n(n_), grain(g) {}

    void work() {
      for (;;) {
        const int64_t begin = next.fetch_add(grain, std::memory_order_relaxed);
        if (begin >= n) return;
        call(body, begin, std::min(n, begin + grain));
      }
    }
  };

  template <class Body>
  static void invoke(void *body, int64_t begin, int64_t end) {
    (*static_cast<Body *>(body))(begin, end);
  }

  static int threads_wanted() {
    if (const int asked = requested_threads().load(); asked > 0) return asked;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
    return std::max(1u, std::thread::hardware_concurrency());
  }

  Pool() : pid_(getpid()) {
    const int extra = threads_wanted() - 1;
    for (int i = 0; i < extra; ++i) workers_.emplace_back([this] { loop(); });
  }

  void loop() {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      if (!open_) continue;  // woke too late: the caller finished the work alone
      Task *task = task_;
      ++joined_;
      lock.unlock();
      task->work();
      lock.lock();
      if (--joined_ == 0) done_.notify_one();
    }
  }

  const pid_t pid_;
  std::vector<std::thread> workers_;
  std::mutex busy_;   // one task at a time
  std::mutex mutex_;  // guards the fields below
  std::condition_variable wake_, done_;
  Task *task_ = nullptr;
  uint64_t generation_ = 0;
  int joined_ = 0;
  bool open_ = false;
};

}  // namespace mnv2

// Each library has a pool of its own: mnv2.ops sizes it as it loads the library (no effect once a
// kernel has run), and tests read the size back.
// (`used`: emitted in every library that includes this header, though nothing in it calls them.)
extern "C" __attribute__((used)) inline void mnv2_set_kernel_threads(int threads) {
  mnv2::requested_threads().store(threads);
}
extern "C" __attribute__((used)) inline int mnv2_kernel_threads() { return mnv2::Pool::instance().size(); }

namespace mnv2 {

// body(i) for every item i in [0, n), in chunks of about an eighth of a thread's share (small
// enough to balance when a thread is descheduled, large enough that the counter is not contended).
template <class F>
void parallel_for_each(int64_t n, bool parallel, F &&body) {
  Pool &pool = Pool::instance();
  const int64_t grain = std::max<int64_t>(1, n / (8 * pool.size()));
  pool.parallel_for(n, grain, parallel, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) body(i);
  });
}

// A buffer of at least n values owned by the calling thread and reused across calls, so that no
// kernel call allocates. `Slot` tells apart buffers one call needs at the same time.
template <typename T, int Slot>
T *thread_buffer(size_t n) {
  static thread_local std::vector<T> buf;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

}  // namespace mnv2
