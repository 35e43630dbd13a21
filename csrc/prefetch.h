// Asking for memory ahead of its use, so that a walk's misses overlap with its scoring.
#pragma once

#include <cstddef>

namespace amips {

// Prefetches every cache line of `bytes` from `data`, so that they arrive while other work runs.
inline void ask_for(const void* data, std::size_t bytes) {
    const char* start = static_cast<const char*>(data);
    for (std::size_t line = 0; line < bytes; line += 64) __builtin_prefetch(start + line);
}

}  // namespace amips
