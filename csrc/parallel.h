// A minimal task runner: no pool, threads live for one call (callers size the work so that the
// start-up cost, tens of microseconds, is negligible).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace amips {

// Threads worth starting for `multiply_adds` of work, at most `requested` (<= 0: all hardware threads).
inline int threads_for(int requested, double multiply_adds) {
    if (requested <= 0) requested = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    // Starting a thread costs tens of microseconds; a million multiply-adds (4 MB of keys for one
    // query) takes about a hundred.
    const double by_work = std::max(1.0, multiply_adds / 1e6);
    return static_cast<int>(std::min<double>(requested, by_work));
}

// Runs fn(task) for every task in [0, num_tasks), handed out in order to up to num_threads threads,
// the calling thread among them. The first exception thrown by a task is rethrown here, after the
// remaining tasks are skipped and every thread has joined.
template <class Fn>
void parallel_for(std::size_t num_tasks, int num_threads, Fn&& fn) {
    const std::size_t workers = std::min<std::size_t>(std::max(1, num_threads), num_tasks);
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
    std::vector<std::thread> threads;
    for (std::size_t w = 1; w < workers; ++w) threads.emplace_back(work);
    work();
    for (auto& t : threads) t.join();
    if (error) std::rethrow_exception(error);
}

}  // namespace amips
