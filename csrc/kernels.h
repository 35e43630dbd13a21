// Inner-product kernels, one set per instruction set, chosen at run time.
//
// Keys are first packed into panels of kPanel keys: a panel holds, dimension by dimension, that
// component of each of its keys side by side (d x kPanel floats; a short last panel is zero-padded to
// a whole vector), so one vector load gives one dimension of several keys. A pair's score is then one
// multiply-add chain over the dimensions in order, fused where the ISA has FMA: the same bits in
// every tile shape, batch and call (topk_dot, segment_max_dot and rescore agree exactly). The
// layout is the same for every ISA, so keys packed once serve any of them.
#pragma once

#include <cstddef>
#include <cstdint>

namespace amips {

// Levels of one CPU family rank by value: x86-64 scalar < avx2 < avx512, AArch64 scalar < neon.
enum class Isa { scalar = 0, neon = 1, avx2 = 2, avx512 = 3 };

// Largest number of queries one dot_tile call takes.
constexpr std::size_t kTileQueries = 4;
// Keys per panel: four AVX-512 vectors, so that the widest tile reads one panel, a single stream
// from memory (panels of 16 read as four streams were up to 1.5x slower at d = 50).
constexpr std::size_t kPanel = 64;

// Floats a pack of n keys of dimension d takes.
inline std::size_t packed_floats(std::size_t n, std::size_t d) {
    return (n + kPanel - 1) / kPanel * kPanel * d;
}

// Packs rows x[ids[i]] (or x[i] when ids is null) for i < n into the panels at out (which hold
// packed_floats(n, d) floats); an id < 0 packs a row of zeros.
using PackFn = void (*)(const float* x, const std::int64_t* ids, std::size_t n, std::size_t d,
                        float* out);
// out[i * ldo + j] = <q_i, key j> for i < nq (nq <= kTileQueries), j < n, keys packed by PackFn.
using DotTileFn = void (*)(const float* q, std::size_t nq, const float* packed, std::size_t n,
                           std::size_t d, float* out, std::size_t ldo);

struct Kernels {
    Isa isa;
    PackFn pack;
    DotTileFn dot_tile;
};

// Best level the CPU and OS support.
Isa detected_isa();
// Detected level capped by the AMIPS_SIMD environment variable (read on every call, so tests can
// switch paths); an unknown value, or one of the other CPU family, throws std::invalid_argument.
Isa active_isa();
const char* isa_name(Isa isa);
Kernels kernels_for(Isa isa);

void pack_scalar(const float*, const std::int64_t*, std::size_t, std::size_t, float*);
void dot_tile_scalar(const float*, std::size_t, const float*, std::size_t, std::size_t, float*, std::size_t);
#if defined(__x86_64__)
void pack_avx2(const float*, const std::int64_t*, std::size_t, std::size_t, float*);
void dot_tile_avx2(const float*, std::size_t, const float*, std::size_t, std::size_t, float*, std::size_t);
void pack_avx512(const float*, const std::int64_t*, std::size_t, std::size_t, float*);
void dot_tile_avx512(const float*, std::size_t, const float*, std::size_t, std::size_t, float*, std::size_t);
#endif
#if defined(__aarch64__)
void pack_neon(const float*, const std::int64_t*, std::size_t, std::size_t, float*);
void dot_tile_neon(const float*, std::size_t, const float*, std::size_t, std::size_t, float*, std::size_t);
#endif

}  // namespace amips
