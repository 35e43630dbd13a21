// Inner-product kernels, one set per instruction set, chosen at run time.
#pragma once

#include <cstddef>

namespace amips {

enum class Isa { scalar = 0, avx2 = 1, avx512 = 2 };

// Largest number of queries one dot_tile call takes.
constexpr std::size_t kTileQueries = 4;

// out[i * ldo + j] = <q_i, x_j> for i < nq (nq <= kTileQueries), j < nx; rows of length d.
// from_memory: these keys are not in cache yet, so the kernel reads rows in order, which the
// hardware prefetcher streams faster (for keys already in cache, rows side by side need fewer loads).
using DotTileFn = void (*)(const float* q, std::size_t nq, const float* x, std::size_t nx,
                           std::size_t d, float* out, std::size_t ldo, bool from_memory);
// <a, b> with the same summation order as DotTileFn, so scores agree bit for bit.
using DotFn = float (*)(const float* a, const float* b, std::size_t d);

struct Kernels {
    Isa isa;
    DotTileFn dot_tile;
    DotFn dot;
};

// Best level the CPU and OS support.
Isa detected_isa();
// Detected level capped by the AMIPS_SIMD environment variable (read on every call, so tests can
// switch paths); an unknown value throws std::invalid_argument.
Isa active_isa();
const char* isa_name(Isa isa);
Kernels kernels_for(Isa isa);

void dot_tile_scalar(const float*, std::size_t, const float*, std::size_t, std::size_t, float*, std::size_t, bool);
float dot_scalar(const float*, const float*, std::size_t);
#if defined(__x86_64__)
void dot_tile_avx2(const float*, std::size_t, const float*, std::size_t, std::size_t, float*, std::size_t, bool);
float dot_avx2(const float*, const float*, std::size_t);
void dot_tile_avx512(const float*, std::size_t, const float*, std::size_t, std::size_t, float*, std::size_t, bool);
float dot_avx512(const float*, const float*, std::size_t);
#endif

}  // namespace amips
