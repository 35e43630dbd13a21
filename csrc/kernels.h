// Inner-product kernels, one set per instruction set, chosen at run time.
//
// Keys are packed into panels of kPanel keys: a panel holds, dimension by dimension, that component
// of each of its keys side by side (d x kPanel floats), so one vector load gives one dimension of
// several keys. A kernel call scores up to kTileQueries queries against one panel over a chunk of
// dimensions, continuing each pair's multiply-add chain from the previous chunk's value: a pair's
// score is one chain over the dimensions in order, fused where the ISA has FMA, the same bits
// whatever the chunking, tile shape, batch or call (topk_dot, segment_max_dot and rescore agree
// exactly). The layout is the same for every ISA, so keys packed once serve any of them.
#pragma once

#include <cstddef>
#include <cstdint>

namespace amips {

// Levels of one CPU family rank by value: x86-64 scalar < avx2 < avx512, AArch64 scalar < neon.
enum class Isa { scalar = 0, neon = 1, avx2 = 2, avx512 = 3 };

// Largest number of queries one dot_panels call takes.
constexpr std::size_t kTileQueries = 4;
// Keys per panel: four AVX-512 vectors, so that the widest tile reads a single stream from memory
// (panels of 16 read as four streams were up to 1.5x slower at d = 50).
constexpr std::size_t kPanel = 64;
// A partly filled panel is zero-filled up to a multiple of this (the widest vector), so that every
// kernel's loads stay in the packed, initialised part.
constexpr std::size_t kPanelQuantum = 16;
// Dimensions a scan takes at a time: one panel's chunk (kPanel x kChunk floats, at most 256 KB)
// stays in L2 while every query tile of a chunk of queries passes over it, and scratch for packing
// stays bounded whatever d. (Chunks of 128 dimensions were 1.15x slower at d = 384.)
constexpr std::size_t kChunk = 1024;

// Floats a pack of n keys of dimension d takes (whole panels).
inline std::size_t packed_floats(std::size_t n, std::size_t d) {
    return (n + kPanel - 1) / kPanel * kPanel * d;
}

// Packs columns [t0, t0 + dc) of nrows rows (row i is x + ids[i] * ld, or x + i * ld without ids;
// an id < 0 gives zeros) into ceil(nrows / kPanel) consecutive panel chunks at out, each dc x kPanel
// floats: row i's column t0 + t lands at out[(i / kPanel) * kPanel * dc + t * kPanel + i % kPanel].
// The last chunk's slots past nrows are zeroed up to a multiple of kPanelQuantum.
using PackFn = void (*)(const float* x, std::size_t ld, const std::int64_t* ids, std::size_t nrows,
                        std::size_t t0, std::size_t dc, float* out);
// PackFn for rows of IEEE halves (their bits): each packs as the float it stands for, so the panel
// is the one PackFn makes of those floats.
using PackHalfFn = void (*)(const std::uint16_t* x, std::size_t ld, const std::int64_t* ids,
                            std::size_t nrows, std::size_t t0, std::size_t dc, float* out);
// For r < nq <= kTileQueries and the first ncols keys of consecutive panel chunks (dc x kPanel
// each, chunk c at panels + c * stride; key j in chunk j / kPanel):
// out[r * ldo + j] = (accumulate ? out[r * ldo + j] : 0) + sum over t < dc of
// q[r * ldq + t] * chunk[t * kPanel + j % kPanel], one multiply-add at a time in order of t.
// Writes whole vectors: columns past ncols, up to a multiple of kPanelQuantum, get scores of the
// zero padding, so ldo must leave room for them.
using DotPanelsFn = void (*)(const float* q, std::size_t ldq, std::size_t nq, const float* panels,
                             std::size_t stride, std::size_t ncols, std::size_t dc, float* out,
                             std::size_t ldo, bool accumulate);

// out[i] = the inner product of q (d floats) with row i of x (count rows of d floats, or of d IEEE
// halves' bits), for i < count, read in place: each row's products a vector of dimensions at a
// time (the last vector ending at d), its lanes summed at the end. The sums run in another order
// than dot_panels' chains, and differ between ISAs in the last bits: for rows that one query or a
// few score, where packing them would cost more than scoring them.
using DotRowsFn = void (*)(const float* q, const float* x, std::size_t d, std::size_t count, float* out);
using DotRowsHalfFn = void (*)(const float* q, const std::uint16_t* x, std::size_t d,
                               std::size_t count, float* out);

// Codes of a graph walk: one byte per dimension, rows padded with zeros to a multiple of this.
constexpr std::size_t kCodeQuantum = 16;
// sum over t < dp of q[t] * codes[t], dp a multiple of kCodeQuantum, in the ISA's own order: an
// approximate score that only steers a walk, never one that is returned.
using DotCodesFn = float (*)(const float* q, const std::uint8_t* codes, std::size_t dp);
// out[i] = the DotCodesFn score of q against codes row rows[i] (rows of dp bytes), the same
// value, for i < count: several rows at a time, so that their sums overlap.
using DotCodeRowsFn = void (*)(const float* q, const std::uint8_t* codes, std::size_t dp,
                               const std::uint32_t* rows, std::size_t count, float* out);

struct Kernels {
    Isa isa;
    PackFn pack;
    PackHalfFn pack_half;
    DotPanelsFn dot_panels;
    DotRowsFn dot_rows;
    DotRowsHalfFn dot_rows_half;
    DotCodesFn dot_codes;
    DotCodeRowsFn dot_code_rows;
};

// Best level the CPU and OS support.
Isa detected_isa();
// Detected level capped by the AMIPS_SIMD environment variable (read on every call, so tests can
// switch paths); an unknown value, or one of the other CPU family, throws std::invalid_argument.
Isa active_isa();
const char* isa_name(Isa isa);
Kernels kernels_for(Isa isa);

#define AMIPS_DECLARE_KERNELS(isa)                                                                \
    void pack_##isa(const float*, std::size_t, const std::int64_t*, std::size_t, std::size_t,     \
                    std::size_t, float*);                                                         \
    void pack_half_##isa(const std::uint16_t*, std::size_t, const std::int64_t*, std::size_t,     \
                         std::size_t, std::size_t, float*);                                       \
    void dot_panels_##isa(const float*, std::size_t, std::size_t, const float*, std::size_t,      \
                          std::size_t, std::size_t, float*, std::size_t, bool);                 \
    void dot_rows_##isa(const float*, const float*, std::size_t, std::size_t, float*);           \
    void dot_rows_half_##isa(const float*, const std::uint16_t*, std::size_t, std::size_t, float*); \
    float dot_codes_##isa(const float*, const std::uint8_t*, std::size_t);                       \
    void dot_code_rows_##isa(const float*, const std::uint8_t*, std::size_t, const std::uint32_t*, \
                             std::size_t, float*);
AMIPS_DECLARE_KERNELS(scalar)
#if defined(__x86_64__)
AMIPS_DECLARE_KERNELS(avx2)
AMIPS_DECLARE_KERNELS(avx512)
#endif
#if defined(__aarch64__)
AMIPS_DECLARE_KERNELS(neon)
#endif
#undef AMIPS_DECLARE_KERNELS

}  // namespace amips
