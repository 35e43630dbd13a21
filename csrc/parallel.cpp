#include "parallel.h"

#include <condition_variable>
#include <cstdlib>
#include <system_error>
#include <string>

#include <pthread.h>
#if defined(__linux__)
#include <sched.h>
#endif

namespace amips {
namespace {

class Pool {
public:
    // As many workers as the system lets start, up to `workers`.
    explicit Pool(int workers) {
        threads_.reserve(std::size_t(std::max(workers, 0)));
        for (int i = 0; i < workers; ++i) {
            try {
                threads_.emplace_back([this, i] { serve(i); });
            } catch (const std::system_error&) {
                break;
            }
        }
    }

    int size() const { return static_cast<int>(threads_.size()); }
    std::mutex& busy() { return busy_; }

    // Caller holds busy(). Runs work on the caller and `helpers` workers, and waits for them.
    void run(const std::function<void()>& work, int helpers) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            job_ = &work;
            helpers_ = helpers;
            finished_.store(0, std::memory_order_relaxed);
            generation_.fetch_add(1, std::memory_order_release);
        }
        wake_.notify_all();
        work();
        while (finished_.load(std::memory_order_acquire) < helpers) std::this_thread::yield();
    }

private:
    void serve(int index) {
        std::uint64_t seen = 0;
        for (;;) {
            const std::function<void()>* job = nullptr;
            {
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock, [&] { return generation_.load(std::memory_order_relaxed) != seen; });
                seen = generation_.load(std::memory_order_relaxed);
                // The next job is published only after every helper of this one has finished, so
                // a helper always sees its own job here.
                if (index < helpers_) job = job_;
            }
            if (job) {
                (*job)();
                finished_.fetch_add(1, std::memory_order_release);
            }
        }
    }

    std::vector<std::thread> threads_;
    std::mutex busy_;   // one job at a time
    std::mutex mutex_;  // guards the job fields below together with the generation bump
    std::condition_variable wake_;
    std::atomic<std::uint64_t> generation_{0};
    const std::function<void()>* job_ = nullptr;
    int helpers_ = 0;
    std::atomic<int> finished_{0};
};

std::atomic<bool> forked_child{false};

// Created on first use and never destroyed: its workers just end with the process.
Pool* pool() {
    static Pool* p = [] {
        pthread_atfork(nullptr, nullptr, [] { forked_child = true; });  // a child has no workers
        return new Pool(default_threads() - 1);
    }();
    return p;
}

// `work` takes tasks until none are left, so when a thread cannot start (no memory for its stack,
// a process limit) the ones that did, and the caller, still finish the job.
void run_on_new_threads(const std::function<void()>& work, int helpers) {
    std::vector<std::thread> threads;
    threads.reserve(std::size_t(std::max(helpers, 0)));
    for (int i = 0; i < helpers; ++i) {
        try {
            threads.emplace_back(work);
        } catch (const std::system_error&) {
            break;
        }
    }
    work();
    for (auto& t : threads) t.join();
}

// A positive count from an environment variable ("4", or OpenMP's "4,2": the first entry), or 0.
int threads_from_env(const char* name) {
    const char* value = std::getenv(name);
    if (value == nullptr) return 0;
    char* end = nullptr;
    const long n = std::strtol(value, &end, 10);
    return end != value && n > 0 && n < 4096 ? static_cast<int>(n) : 0;
}

}  // namespace

int default_threads() {
    for (const char* name : {"AMIPS_NUM_THREADS", "OMP_NUM_THREADS"}) {
        if (const int n = threads_from_env(name)) return n;
    }
#if defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
#endif
    return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

void run_on_threads(const std::function<void()>& work, int helpers) {
    if (forked_child) return run_on_new_threads(work, helpers);
    Pool* p = pool();
    std::unique_lock<std::mutex> busy(p->busy(), std::try_to_lock);
    if (!busy.owns_lock() || helpers > p->size()) return run_on_new_threads(work, helpers);
    p->run(work, helpers);
}

}  // namespace amips
