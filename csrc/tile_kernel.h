// Packing and register-blocked inner products, written once over a vector-traits type V.
// Included only by the per-ISA files, which first define AMIPS_TARGET as their function attribute
// (e.g. __attribute__((target("avx2,fma")))): every function here carries it, and has internal
// linkage, so each ISA gets its own copy. No std header is included after that point, so the
// std functions these call are compiled for the baseline target, the same in every file, and no
// wider instruction can leak into another path through them.
//
// V provides: Vec, kLanes (a divisor of 16), kColumnsPerTile, zero(), load(p) (kLanes floats, or
// kLanes halves' bits as floats), store(p, v),
// broadcast(p), fma(a, b, c), codes(p) (kLanes bytes as floats), sum(v) (of the lanes) and
// transpose(v) (kLanes vectors in place: lane c of v[r] goes to
// lane r of v[c]).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "half.h"
#include "kernels.h"

#ifndef AMIPS_TARGET
#error "define AMIPS_TARGET, the ISA's function attribute, before including tile_kernel.h"
#endif

namespace amips {
namespace {

// See PackFn in kernels.h: rows L at a time, each L x L block turned by an in-register transpose.
// Rows of float32 or of halves (T = std::uint16_t), which pack as the floats they stand for.
template <class V, class T>
AMIPS_TARGET inline void pack_impl(const T* x, std::size_t ld, const std::int64_t* ids,
                                   std::size_t nrows, std::size_t t0, std::size_t dc, float* out) {
    constexpr std::size_t L = V::kLanes;
    // The loads below visit L rows side by side, which the hardware prefetcher follows poorly
    // from memory; rows this far ahead are asked into L2 (measured best).
    constexpr std::size_t kPrefetchRows = 32;
    const auto row = [&](std::size_t i) -> const T* {
        const std::int64_t id = i >= nrows ? -1 : ids ? ids[i] : std::int64_t(i);
        return id < 0 ? nullptr : x + std::size_t(id) * ld + t0;
    };
    const std::size_t filled = (nrows + kPanelQuantum - 1) / kPanelQuantum * kPanelQuantum;
    for (std::size_t g = 0; g < filled; g += L) {
        const T* rows[L];
        for (std::size_t r = 0; r < L; ++r) {
            rows[r] = row(g + r);
            if (const T* ahead = row(g + kPrefetchRows + r)) {
                for (std::size_t b = 0; b < dc; b += 64 / sizeof(T)) __builtin_prefetch(ahead + b, 0, 1);
            }
        }
        float* group = out + g / kPanel * kPanel * dc + g % kPanel;
        std::size_t t = 0;
        for (bool more = dc >= L; more;) {
            typename V::Vec v[L];
#pragma GCC unroll 16
            for (std::size_t r = 0; r < L; ++r) v[r] = rows[r] ? V::load(rows[r] + t) : V::zero();
            V::transpose(v);
#pragma GCC unroll 16
            for (std::size_t c = 0; c < L; ++c) V::store(group + (t + c) * kPanel, v[c]);
            // Past the last whole L columns, the L ending at dc: columns stored again get the
            // same values (a vector turn, where one column at a time cost a fifth of a pack).
            more = t + L < dc;
            t = t + 2 * L <= dc ? t + L : dc - L;
        }
        if (dc >= L) t = dc;
        for (; t < dc; ++t) {  // fewer than L columns in all
            for (std::size_t r = 0; r < L; ++r) group[t * kPanel + r] = rows[r] ? to_float(rows[r][t]) : 0.f;
        }
    }
}

// QT queries against KP columns of kLanes keys of one panel chunk, from column j0: for each pair
// one multiply-add chain over t = 0..dc-1, continued from out (accumulate) or from zero, so a
// pair's score never depends on the tile shape or on how the dimensions were chunked.
template <class V, int QT, int KP, bool Accumulate>
AMIPS_TARGET __attribute__((always_inline)) inline void tile(const float* q, std::size_t ldq,
                                                             std::size_t dc, const float* panel,
                                                             std::size_t j0, float* out,
                                                             std::size_t ldo) {
    constexpr std::size_t L = V::kLanes;
    typename V::Vec acc[QT][KP];
#pragma GCC unroll 8
    for (int r = 0; r < QT; ++r) {
#pragma GCC unroll 8
        for (int p = 0; p < KP; ++p) {
            acc[r][p] = Accumulate ? V::load(out + r * ldo + j0 + p * L) : V::zero();
        }
    }
    const float* column = panel + j0;
    for (std::size_t t = 0; t < dc; ++t) {
        typename V::Vec xv[KP];
#pragma GCC unroll 8
        for (int p = 0; p < KP; ++p) xv[p] = V::load(column + t * kPanel + p * L);
#pragma GCC unroll 8
        for (int r = 0; r < QT; ++r) {
            const typename V::Vec qv = V::broadcast(q + r * ldq + t);
#pragma GCC unroll 8
            for (int p = 0; p < KP; ++p) acc[r][p] = V::fma(qv, xv[p], acc[r][p]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < QT; ++r) {
#pragma GCC unroll 8
        for (int p = 0; p < KP; ++p) V::store(out + r * ldo + j0 + p * L, acc[r][p]);
    }
}

template <class V, int QT, bool Accumulate>
AMIPS_TARGET inline void panel_rows(const float* q, std::size_t ldq, const float* panels,
                                    std::size_t stride, std::size_t ncols, std::size_t dc,
                                    float* out, std::size_t ldo) {
    constexpr std::size_t L = V::kLanes, step = V::kColumnsPerTile * L;
    for (std::size_t first = 0; first < ncols; first += kPanel) {
        const float* panel = panels + first / kPanel * stride;
        const std::size_t cols = (std::min(kPanel, ncols - first) + L - 1) / L * L;
        float* panel_out = out + first;
        std::size_t j = 0;
        for (; j + step <= cols; j += step) {
            tile<V, QT, V::kColumnsPerTile, Accumulate>(q, ldq, dc, panel, j, panel_out, ldo);
        }
        for (; j < cols; j += L) tile<V, QT, 1, Accumulate>(q, ldq, dc, panel, j, panel_out, ldo);
    }
}

template <class V>
AMIPS_TARGET inline void dot_panels_impl(const float* q, std::size_t ldq, std::size_t nq,
                                         const float* panels, std::size_t stride, std::size_t ncols,
                                         std::size_t dc, float* out, std::size_t ldo,
                                         bool accumulate) {
    static_assert(kTileQueries == 4, "dot_panels_impl dispatches on up to four queries");
    static_assert(kPanelQuantum % V::kLanes == 0 && kPanel % (V::kColumnsPerTile * V::kLanes) == 0,
                  "a panel must hold whole tiles");
    const auto rows = [&](auto tag) {
        constexpr int QT = decltype(tag)::value;
        if (accumulate) {
            panel_rows<V, QT, true>(q, ldq, panels, stride, ncols, dc, out, ldo);
        } else {
            panel_rows<V, QT, false>(q, ldq, panels, stride, ncols, dc, out, ldo);
        }
    };
    switch (nq) {
        case 4: rows(std::integral_constant<int, 4>{}); break;
        case 3: rows(std::integral_constant<int, 3>{}); break;
        case 2: rows(std::integral_constant<int, 2>{}); break;
        case 1: rows(std::integral_constant<int, 1>{}); break;
        default: break;
    }
}

// See DotRowsFn in kernels.h: a row at a time, so that memory is read in order, as one stream
// (rows side by side, 4 or 16 at a time, were read 1.3-2x slower from memory).
template <class V, class T>
AMIPS_TARGET inline void dot_rows_impl(const float* q, const T* x, std::size_t d, std::size_t count,
                                       float* out) {
    constexpr std::size_t L = V::kLanes;
    if (d < L) {  // narrower than a vector
        for (std::size_t i = 0; i < count; ++i) {
            float sum = 0.f;
            for (std::size_t t = 0; t < d; ++t) sum += q[t] * to_float(x[i * d + t]);
            out[i] = sum;
        }
        return;
    }
    // The last d - whole dimensions: the row's vector ending at d, times q's there with zeros in
    // the lanes the whole vectors already counted.
    const std::size_t whole = d / L * L;
    float q_end[L];
    for (std::size_t j = 0; j < L; ++j) q_end[j] = d - L + j < whole ? 0.f : q[d - L + j];
    const typename V::Vec q_last = V::load(q_end);
    for (std::size_t i = 0; i < count; ++i) {
        const T* row = x + i * d;
        typename V::Vec acc = V::zero();
        for (std::size_t t = 0; t < whole; t += L) acc = V::fma(V::load(q + t), V::load(row + t), acc);
        if (whole < d) acc = V::fma(q_last, V::load(row + d - L), acc);
        out[i] = V::sum(acc);
    }
}

// See DotCodesFn in kernels.h.
template <class V>
AMIPS_TARGET inline float dot_codes_impl(const float* q, const std::uint8_t* codes, std::size_t dp) {
    static_assert(kCodeQuantum % V::kLanes == 0, "a code row must hold whole vectors");
    typename V::Vec acc = V::zero();
    for (std::size_t t = 0; t < dp; t += V::kLanes) acc = V::fma(V::load(q + t), V::codes(codes + t), acc);
    return V::sum(acc);
}

// See DotCodeRowsFn in kernels.h: four rows at a time, each summed as dot_codes_impl sums it.
template <class V>
AMIPS_TARGET inline void dot_code_rows_impl(const float* q, const std::uint8_t* codes, std::size_t dp,
                                            const std::uint32_t* rows, std::size_t count, float* out) {
    std::size_t i = 0;
    for (; i + 4 <= count; i += 4) {
        const std::uint8_t* c0 = codes + std::size_t(rows[i]) * dp;
        const std::uint8_t* c1 = codes + std::size_t(rows[i + 1]) * dp;
        const std::uint8_t* c2 = codes + std::size_t(rows[i + 2]) * dp;
        const std::uint8_t* c3 = codes + std::size_t(rows[i + 3]) * dp;
        typename V::Vec a0 = V::zero(), a1 = V::zero(), a2 = V::zero(), a3 = V::zero();
        for (std::size_t t = 0; t < dp; t += V::kLanes) {
            const typename V::Vec x = V::load(q + t);
            a0 = V::fma(x, V::codes(c0 + t), a0);
            a1 = V::fma(x, V::codes(c1 + t), a1);
            a2 = V::fma(x, V::codes(c2 + t), a2);
            a3 = V::fma(x, V::codes(c3 + t), a3);
        }
        out[i] = V::sum(a0), out[i + 1] = V::sum(a1), out[i + 2] = V::sum(a2), out[i + 3] = V::sum(a3);
    }
    for (; i < count; ++i) out[i] = dot_codes_impl<V>(q, codes + std::size_t(rows[i]) * dp, dp);
}

}  // namespace
}  // namespace amips

// The ISA's entry points (declared in kernels.h), in namespace amips of the file that includes this.
#define AMIPS_DEFINE_KERNELS(isa, V)                                                              \
    void pack_##isa(const float* x, std::size_t ld, const std::int64_t* ids, std::size_t nrows,   \
                    std::size_t t0, std::size_t dc, float* out) {                                 \
        pack_impl<V>(x, ld, ids, nrows, t0, dc, out);                                             \
    }                                                                                             \
    void pack_half_##isa(const std::uint16_t* x, std::size_t ld, const std::int64_t* ids,         \
                         std::size_t nrows, std::size_t t0, std::size_t dc, float* out) {         \
        pack_impl<V>(x, ld, ids, nrows, t0, dc, out);                                             \
    }                                                                                             \
    void dot_panels_##isa(const float* q, std::size_t ldq, std::size_t nq, const float* panels,   \
                          std::size_t stride, std::size_t ncols, std::size_t dc, float* out,      \
                          std::size_t ldo, bool accumulate) {                                     \
        dot_panels_impl<V>(q, ldq, nq, panels, stride, ncols, dc, out, ldo, accumulate);          \
    }                                                                                             \
    void dot_rows_##isa(const float* q, const float* x, std::size_t d, std::size_t count,         \
                        float* out) {                                                             \
        dot_rows_impl<V>(q, x, d, count, out);                                                    \
    }                                                                                             \
    void dot_rows_half_##isa(const float* q, const std::uint16_t* x, std::size_t d,               \
                             std::size_t count, float* out) {                                     \
        dot_rows_impl<V>(q, x, d, count, out);                                                    \
    }                                                                                             \
    float dot_codes_##isa(const float* q, const std::uint8_t* codes, std::size_t dp) {            \
        return dot_codes_impl<V>(q, codes, dp);                                                   \
    }                                                                                             \
    void dot_code_rows_##isa(const float* q, const std::uint8_t* codes, std::size_t dp,           \
                             const std::uint32_t* rows, std::size_t count, float* out) {          \
        dot_code_rows_impl<V>(q, codes, dp, rows, count, out);                                    \
    }
