// A small persistent thread pool: the caller works too, tasks are taken from an atomic counter
// (a slow thread never holds the others back), and a second concurrent caller runs its tasks
// inline instead of waiting, so searches from many Python threads never queue behind each other.
#pragma once
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace hashpivot {

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

  static int hardware_threads() {
    return std::max(1u, std::thread::hardware_concurrency());
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
    const int n = hardware_threads() - 1;
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

// Threads for a job of `work` code comparisons: waking a thread costs tens of microseconds on a
// VM, so each one must get at least ~256k comparisons; never more than asked.
inline int threads_for(int requested, int64_t work) {
  const int cap = requested > 0 ? requested : ThreadPool::hardware_threads();
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(cap, work >> 18)));
}

}  // namespace hashpivot
