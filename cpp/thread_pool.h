// A small persistent thread pool: the caller works too, tasks are taken from an atomic counter
// (a slow thread never holds the others back), and a second concurrent caller runs its tasks
// inline instead of waiting, so searches from many Python threads never queue behind each other.
#pragma once
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace hashpivot {

constexpr int kMaxThreads = 1024;  // a bound on HASHPIVOT_NUM_THREADS

// Threads this process may use: HASHPIVOT_NUM_THREADS when set (as faiss honours
// OMP_NUM_THREADS), else the CPUs of its affinity mask (taskset, cgroups' cpusets).
inline int available_threads() {
  if (const char* env = std::getenv("HASHPIVOT_NUM_THREADS")) {
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && v >= 1)
      return static_cast<int>(std::min<long>(v, kMaxThreads));
  }
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

class ThreadPool {
 public:
  // The process-wide pool (recreated in a forked child, whose threads were not copied).
  static ThreadPool& get() {
    static std::mutex m;
    static ThreadPool* pool = nullptr;
    std::lock_guard<std::mutex> lk(m);
    if (!pool || pool->pid_ != getpid()) pool = new ThreadPool();  // old one: leaked on fork
    return *pool;
  }

  // Runs fn(t) for t in [0, n) on up to `threads` threads (the caller included).
  void parallel_for(int64_t n, int threads, const std::function<void(int64_t)>& fn) {
    threads = static_cast<int>(std::min<int64_t>(std::min(threads, max_threads()), n));
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (threads <= 1 || !busy.owns_lock()) {
      for (int64_t t = 0; t < n; ++t) fn(t);
      return;
    }
    {
      std::lock_guard<std::mutex> lk(m_);
      job_ = &fn;
      n_tasks_ = n;
      next_.store(0);
      want_ = threads - 1;
      acks_ = 0;
      error_ = nullptr;
      ++generation_;
    }
    cv_.notify_all();
    run_tasks();
    std::unique_lock<std::mutex> lk(m_);
    done_cv_.wait(lk, [&] { return acks_ == want_; });  // no worker may still hold `fn`
    job_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

  int max_threads() const { return static_cast<int>(workers_.size()) + 1; }

 private:
  ThreadPool() : pid_(getpid()) {
    const int n = available_threads() - 1;
    for (int i = 0; i < n; ++i) workers_.emplace_back([this, i] { loop(i); });
    for (auto& w : workers_) w.detach();  // lives for the process; never joined at exit
  }

  void run_tasks() {
    int64_t t;
    while ((t = next_.fetch_add(1)) < n_tasks_) {
      try {
        (*job_)(t);
      } catch (...) {
        std::lock_guard<std::mutex> lk(m_);
        if (!error_) error_ = std::current_exception();
        next_.store(n_tasks_);
      }
    }
  }

  void loop(int index) {
    uint64_t seen = 0;
    for (;;) {
      std::unique_lock<std::mutex> lk(m_);
      cv_.wait(lk, [&] { return generation_ != seen; });
      seen = generation_;
      if (index >= want_) continue;
      lk.unlock();
      run_tasks();
      lk.lock();
      if (++acks_ == want_) done_cv_.notify_all();
    }
  }

  pid_t pid_;
  std::vector<std::thread> workers_;
  std::mutex busy_, m_;
  std::condition_variable cv_, done_cv_;
  uint64_t generation_ = 0;
  const std::function<void(int64_t)>* job_ = nullptr;
  int64_t n_tasks_ = 0;
  std::atomic<int64_t> next_{0};
  int want_ = 0, acks_ = 0;
  std::exception_ptr error_;
};

// Waking a thread costs tens of microseconds on a VM: each one must get at least this many
// code comparisons' worth of work.
constexpr int64_t kMinWorkPerThread = int64_t(1) << 18;

// Threads for a job of `work` code comparisons: never more than asked (0 = all available).
inline int threads_for(int requested, int64_t work) {
  const int cap = requested > 0 ? requested : ThreadPool::get().max_threads();
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(cap, work / kMinWorkPerThread)));
}

}  // namespace hashpivot
