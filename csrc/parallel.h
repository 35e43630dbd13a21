// Task parallelism for the kernels: a process-wide pool of workers that spin briefly after a job
// (back-to-back calls then find them awake, as OpenMP's do) and sleep after that.
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

// Threads worth using for `multiply_adds` of work, at most `requested` (<= 0: all hardware threads).
inline int threads_for(int requested, double multiply_adds) {
    if (requested <= 0) requested = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
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
