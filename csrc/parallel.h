// Task parallelism for the kernels: a process-wide pool of workers that sleep between jobs. They do
// not spin after a job as OpenMP's workers do: beside torch's or faiss's pools in one process,
// spinning for 2 ms doubled the time of a loop alternating a search and a torch product, and
// saved at most a quarter on loops of back-to-back tiny searches.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace amips {

// The most threads one call may ask for.
constexpr int kMaxThreads = 1 << 16;

// Threads a call uses when it names none: AMIPS_NUM_THREADS, else OMP_NUM_THREADS (its first
// entry), else the CPUs this process may run on (its affinity mask, which container limits and
// taskset narrow). Read on every call.
int default_threads();

// Threads worth using for `multiply_adds` of work, at most `requested` (<= 0: default_threads()).
inline int threads_for(int requested, double multiply_adds) {
    if (requested <= 0) requested = default_threads();
    // Waking a worker costs microseconds; a million multiply-adds (4 MB of keys for one query)
    // takes about a hundred.
    const double by_work = std::max(1.0, multiply_adds / 1e6);
    return static_cast<int>(std::min<double>(requested, by_work));
}

// Runs `work` on the calling thread and on up to `helpers` other threads; returns when all are
// done. Uses the pool when it is free, else (another caller holds it, or this is a forked child)
// threads started for this call.
void run_on_threads(const std::function<void()>& work, int helpers);

// Runs fn(task) for every task in [0, num_tasks), handed out in order to up to num_threads
// threads, the calling thread among them. The first exception thrown by a task is rethrown here,
// after the remaining tasks are skipped and every thread has finished.
template <class Fn>
void parallel_for(std::size_t num_tasks, int num_threads, Fn&& fn) {
    const std::size_t threads = std::min<std::size_t>(std::max(1, num_threads), num_tasks);
    std::atomic<std::size_t> next{0};
    std::atomic<bool> failed{false};
    std::exception_ptr error;
    std::mutex error_mutex;
    auto work = [&] {
        for (std::size_t t; !failed.load(std::memory_order_relaxed) && (t = next++) < num_tasks;) {
            try {
                fn(t);
            } catch (...) {
                std::lock_guard<std::mutex> lock(error_mutex);
                if (!error) error = std::current_exception();
                failed = true;
            }
        }
    };
    if (threads <= 1) {
        work();
    } else {
        run_on_threads(work, static_cast<int>(threads) - 1);
    }
    if (error) std::rethrow_exception(error);
}

}  // namespace amips
