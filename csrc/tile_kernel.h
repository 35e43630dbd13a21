// Packing and register-blocked inner products, written once over a vector-traits type V.
// Included only by the per-ISA files, which first define AMIPS_TARGET as their function attribute
// (e.g. __attribute__((target("avx2,fma")))): every function here carries it, and has internal
// linkage, so each ISA gets its own copy. No std header is included after that point, so the
// std functions these call are compiled for the baseline target, the same in every file, and no
// wider instruction can leak into another path through them.
//
// V provides: Vec, kLanes (a divisor of kPanel), kColumnsPerTile, zero(), load(p), store(p, v),
// broadcast(p), fma(a, b, c) and transpose(v) (kLanes vectors in place: lane c of v[r] goes to
// lane r of v[c]).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "kernels.h"

#ifndef AMIPS_TARGET
#error "define AMIPS_TARGET, the ISA's function attribute, before including tile_kernel.h"
#endif

namespace amips {
namespace {

// Packs n rows into panels (see kernels.h), kLanes rows at a time with an in-register transpose.
// Groups of kLanes slots past the last row are left as they were: dot_tile never reads them.
template <class V>
AMIPS_TARGET inline void pack_impl(const float* x, const std::int64_t* ids, std::size_t n, std::size_t d,
                      float* out) {
    constexpr std::size_t L = V::kLanes;
    // The loads below visit L rows side by side, which the hardware prefetcher follows poorly
    // from memory; rows this far ahead are asked into L2 (measured best).
    constexpr std::size_t kPrefetchRows = 32;
    const auto row = [&](std::size_t i) -> const float* {
        const std::int64_t id = i >= n ? -1 : ids ? ids[i] : std::int64_t(i);
        return id < 0 ? nullptr : x + std::size_t(id) * d;
    };
    for (std::size_t g = 0; g < n; g += L) {
        const float* rows[L];
        for (std::size_t r = 0; r < L; ++r) {
            rows[r] = row(g + r);
            if (const float* ahead = row(g + kPrefetchRows + r)) {
                for (std::size_t b = 0; b < d; b += 64 / sizeof(float)) __builtin_prefetch(ahead + b, 0, 1);
            }
        }
        float* group = out + g / kPanel * kPanel * d + g % kPanel;
        std::size_t t = 0;
        for (; t + L <= d; t += L) {
            typename V::Vec v[L];
#pragma GCC unroll 16
            for (std::size_t r = 0; r < L; ++r) v[r] = rows[r] ? V::load(rows[r] + t) : V::zero();
            V::transpose(v);
#pragma GCC unroll 16
            for (std::size_t c = 0; c < L; ++c) V::store(group + (t + c) * kPanel, v[c]);
        }
        for (; t < d; ++t) {
            for (std::size_t r = 0; r < L; ++r) group[t * kPanel + r] = rows[r] ? rows[r][t] : 0.f;
        }
    }
}

// QT queries against KP columns of kLanes packed keys from key j0 (a multiple of kLanes): for each
// pair one multiply-add chain over t = 0..d-1, whatever the tile shape, so a pair's score never
// depends on where it falls. Writes the first `valid` scores of each query row.
template <class V, int QT, int KP>
AMIPS_TARGET __attribute__((always_inline)) inline void tile(const float* q, std::size_t d, const float* packed,
                                                std::size_t j0, std::size_t valid, float* out,
                                                std::size_t ldo) {
    constexpr std::size_t L = V::kLanes;
    const float* column[KP];
#pragma GCC unroll 8
    for (int p = 0; p < KP; ++p) {
        const std::size_t j = j0 + p * L;
        column[p] = packed + j / kPanel * kPanel * d + j % kPanel;
    }
    typename V::Vec acc[QT][KP];
#pragma GCC unroll 8
    for (int r = 0; r < QT; ++r) {
#pragma GCC unroll 8
        for (int p = 0; p < KP; ++p) acc[r][p] = V::zero();
    }
    for (std::size_t t = 0; t < d; ++t) {
        typename V::Vec xv[KP];
#pragma GCC unroll 8
        for (int p = 0; p < KP; ++p) xv[p] = V::load(column[p] + t * kPanel);
#pragma GCC unroll 8
        for (int r = 0; r < QT; ++r) {
            const typename V::Vec qv = V::broadcast(q + r * d + t);
#pragma GCC unroll 8
            for (int p = 0; p < KP; ++p) acc[r][p] = V::fma(qv, xv[p], acc[r][p]);
        }
    }
    alignas(64) float part[KP * L];
#pragma GCC unroll 8
    for (int r = 0; r < QT; ++r) {
        if (valid == KP * L) {
#pragma GCC unroll 8
            for (int p = 0; p < KP; ++p) V::store(out + r * ldo + p * L, acc[r][p]);
        } else {
            for (int p = 0; p < KP; ++p) V::store(part + p * L, acc[r][p]);
            std::copy_n(part, valid, out + r * ldo);
        }
    }
}

template <class V, int QT>
AMIPS_TARGET inline void dot_rows(const float* q, const float* packed, std::size_t n, std::size_t d, float* out,
                     std::size_t ldo) {
    constexpr std::size_t L = V::kLanes, step = V::kColumnsPerTile * L;
    std::size_t j = 0;
    for (; j + step <= n; j += step) tile<V, QT, V::kColumnsPerTile>(q, d, packed, j, step, out + j, ldo);
    for (; j < n; j += L) tile<V, QT, 1>(q, d, packed, j, std::min(L, n - j), out + j, ldo);
}

template <class V>
AMIPS_TARGET inline void dot_tile_impl(const float* q, std::size_t nq, const float* packed, std::size_t n,
                          std::size_t d, float* out, std::size_t ldo) {
    static_assert(kTileQueries == 4, "dot_tile_impl dispatches on up to four queries");
    switch (nq) {
        case 4: dot_rows<V, 4>(q, packed, n, d, out, ldo); break;
        case 3: dot_rows<V, 3>(q, packed, n, d, out, ldo); break;
        case 2: dot_rows<V, 2>(q, packed, n, d, out, ldo); break;
        case 1: dot_rows<V, 1>(q, packed, n, d, out, ldo); break;
        default: break;
    }
}

}  // namespace
}  // namespace amips
