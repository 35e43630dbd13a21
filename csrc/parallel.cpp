#include "parallel.h"

#include <chrono>
#include <condition_variable>

#include <pthread.h>

namespace amips {
namespace {

// Long enough to cover the gap between back-to-back calls from Python, short enough not to hold
// a core that nobody needs.
constexpr auto kSpin = std::chrono::milliseconds(2);

class Pool {
public:
    explicit Pool(int workers) {
        for (int i = 0; i < workers; ++i) threads_.emplace_back([this, i] { serve(i); });
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
            const auto until = std::chrono::steady_clock::now() + kSpin;
            while (generation_.load(std::memory_order_acquire) == seen &&
                   std::chrono::steady_clock::now() < until) {
                std::this_thread::yield();
            }
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
        const int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
        return new Pool(hw - 1);
    }();
    return p;
}

void run_on_new_threads(const std::function<void()>& work, int helpers) {
    std::vector<std::thread> threads;
    for (int i = 0; i < helpers; ++i) threads.emplace_back(work);
    work();
    for (auto& t : threads) t.join();
}

}  // namespace

void run_on_threads(const std::function<void()>& work, int helpers) {
    if (forked_child) return run_on_new_threads(work, helpers);
    Pool* p = pool();
    std::unique_lock<std::mutex> busy(p->busy(), std::try_to_lock);
    if (!busy.owns_lock() || helpers > p->size()) return run_on_new_threads(work, helpers);
    p->run(work, helpers);
}

}  // namespace amips
