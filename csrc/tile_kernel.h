// Register-blocked inner products, written once over a vector-traits type V.
// Included only by the per-ISA files after their `#pragma GCC target`; everything here has internal
// linkage so each ISA gets its own copy and no wider instruction can leak into another path.
//
// V provides: Vec, Mask, kLanes, zero(), load(p), tail_mask(r), load_tail(p, m), fma(a, b, c),
// reduce_one(v) (sum of the lanes) and reduce_group(in, out) (out[p] = sum of the lanes of in[p]
// for kLanes vectors at once), both summing the lanes in the same order.
#pragma once

#include <immintrin.h>

#include <cstddef>

#include "kernels.h"

namespace amips {
namespace {

// QT query rows against KT key rows. Every (query, key) pair goes through the same sequence of
// operations whatever the tile shape, so a pair's score never depends on where it falls.
// kRowOrder reads each key row straight through instead of KT rows side by side: better when the
// keys come from memory once (KT interleaved rows are more streams than the hardware prefetcher
// follows well), worse when they are reused from cache (more loads per multiply-add).
template <class V, int QT, int KT, bool kRowOrder>
__attribute__((always_inline)) inline void tile(const float* q, const float* x, std::size_t d,
                                                float* out, std::size_t ldo) {
    constexpr int kAcc = QT * KT;
    typename V::Vec acc[kAcc];
#pragma GCC unroll 32
    for (int a = 0; a < kAcc; ++a) acc[a] = V::zero();

    std::size_t i = 0;
    if constexpr (kRowOrder) {
        const std::size_t full = d / V::kLanes * V::kLanes;
#pragma GCC unroll 16
        for (int j = 0; j < KT; ++j) {
            for (std::size_t t = 0; t < full; t += V::kLanes) {
                const typename V::Vec xv = V::load(x + j * d + t);
#pragma GCC unroll 4
                for (int r = 0; r < QT; ++r) {
                    acc[r * KT + j] = V::fma(V::load(q + r * d + t), xv, acc[r * KT + j]);
                }
            }
        }
        i = full;
    }
    for (; i + V::kLanes <= d; i += V::kLanes) {
        typename V::Vec xv[KT];
#pragma GCC unroll 8
        for (int j = 0; j < KT; ++j) xv[j] = V::load(x + j * d + i);
#pragma GCC unroll 8
        for (int r = 0; r < QT; ++r) {
            const typename V::Vec qv = V::load(q + r * d + i);
#pragma GCC unroll 8
            for (int j = 0; j < KT; ++j) acc[r * KT + j] = V::fma(qv, xv[j], acc[r * KT + j]);
        }
    }
    if (i < d) {
        const typename V::Mask m = V::tail_mask(d - i);
        typename V::Vec xv[KT];
#pragma GCC unroll 8
        for (int j = 0; j < KT; ++j) xv[j] = V::load_tail(x + j * d + i, m);
#pragma GCC unroll 8
        for (int r = 0; r < QT; ++r) {
            const typename V::Vec qv = V::load_tail(q + r * d + i, m);
#pragma GCC unroll 8
            for (int j = 0; j < KT; ++j) acc[r * KT + j] = V::fma(qv, xv[j], acc[r * KT + j]);
        }
    }

    if constexpr (kAcc == 1) {
        *out = V::reduce_one(acc[0]);
    } else {
        // Reduce kLanes accumulators at a time; a short last group repeats its last accumulator.
        constexpr int kGroups = (kAcc + int(V::kLanes) - 1) / int(V::kLanes);
        alignas(64) float sums[kGroups * V::kLanes];
#pragma GCC unroll 4
        for (int g = 0; g < kGroups; ++g) {
            typename V::Vec group[V::kLanes];
#pragma GCC unroll 16
            for (int t = 0; t < int(V::kLanes); ++t) {
                const int a = g * int(V::kLanes) + t;
                group[t] = acc[a < kAcc ? a : kAcc - 1];
            }
            V::reduce_group(group, sums + g * V::kLanes);
        }
#pragma GCC unroll 8
        for (int r = 0; r < QT; ++r) {
#pragma GCC unroll 8
            for (int j = 0; j < KT; ++j) out[r * ldo + j] = sums[r * KT + j];
        }
    }
}

// QT queries against all nx keys, KT keys at a time.
template <class V, int QT, int KT, bool kRowOrder>
inline void dot_rows(const float* q, const float* x, std::size_t nx, std::size_t d, float* out,
                     std::size_t ldo) {
    std::size_t j = 0;
    for (; j + KT <= nx; j += KT) tile<V, QT, KT, kRowOrder>(q, x + j * d, d, out + j, ldo);
    for (; j < nx; ++j) tile<V, QT, 1, kRowOrder>(q, x + j * d, d, out + j, ldo);
}

// Up to kTileQueries queries against nx keys. Each shape takes as many keys per step as fill one
// reduction group (QT * KT <= kLanes), so no tile pays a full reduction for a few sums.
template <class V, bool kRowOrder>
inline void dot_tile_shaped(const float* q, std::size_t nq, const float* x, std::size_t nx,
                            std::size_t d, float* out, std::size_t ldo) {
    static_assert(kTileQueries == 4, "dot_tile_shaped dispatches on up to four queries");
    constexpr int L = int(V::kLanes);
    switch (nq) {
        case 4: dot_rows<V, 4, L / 4, kRowOrder>(q, x, nx, d, out, ldo); break;
        case 3: dot_rows<V, 3, L / 3, kRowOrder>(q, x, nx, d, out, ldo); break;
        case 2: dot_rows<V, 2, L / 2, kRowOrder>(q, x, nx, d, out, ldo); break;
        case 1: dot_rows<V, 1, L, kRowOrder>(q, x, nx, d, out, ldo); break;
        default: break;
    }
}

template <class V>
inline void dot_tile_impl(const float* q, std::size_t nq, const float* x, std::size_t nx,
                          std::size_t d, float* out, std::size_t ldo, bool from_memory) {
    if (from_memory) {
        dot_tile_shaped<V, true>(q, nq, x, nx, d, out, ldo);
    } else {
        dot_tile_shaped<V, false>(q, nq, x, nx, d, out, ldo);
    }
}

template <class V>
inline float dot_impl(const float* a, const float* b, std::size_t d) {
    float s;
    tile<V, 1, 1, true>(a, b, d, &s, 1);
    return s;
}

}  // namespace
}  // namespace amips
