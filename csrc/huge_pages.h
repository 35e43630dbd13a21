// An allocator for the large arrays a graph walk reads at random (links, codes, keys): on Linux it
// asks for transparent huge pages, so that the walk's scattered reads miss the TLB far less often
// (hnswlib's and faiss's graphs use ordinary pages). Small arrays, and other systems, get malloc.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace amips {

template <class T>
struct HugePageAllocator {
    using value_type = T;

    HugePageAllocator() = default;
    template <class U>
    HugePageAllocator(const HugePageAllocator<U>&) noexcept {}

    T* allocate(std::size_t n) {
        const std::size_t bytes = n * sizeof(T);
        void* p = nullptr;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
        constexpr std::size_t kHugePage = std::size_t(2) << 20;
        if (bytes >= kHugePage) {
            const std::size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
            if (posix_memalign(&p, kHugePage, rounded) != 0) throw std::bad_alloc();
            madvise(p, rounded, MADV_HUGEPAGE);  // advice: where refused, ordinary pages
            return static_cast<T*>(p);
        }
#endif
        if (!(p = std::malloc(bytes ? bytes : 1))) throw std::bad_alloc();
        return static_cast<T*>(p);
    }
    void deallocate(T* p, std::size_t) noexcept { std::free(p); }

    template <class U>
    bool operator==(const HugePageAllocator<U>&) const noexcept { return true; }
    template <class U>
    bool operator!=(const HugePageAllocator<U>&) const noexcept { return false; }
};

template <class T>
using HugeVector = std::vector<T, HugePageAllocator<T>>;

}  // namespace amips
