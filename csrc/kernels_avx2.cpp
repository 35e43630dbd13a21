// AVX2 + FMA (+ F16C, for halves) kernels: columns of 8 keys; tiles of 4 queries x 2 columns (8 of the 16 ymm registers
// accumulate).
#if defined(__x86_64__)
#include <immintrin.h>

#define AMIPS_TARGET __attribute__((target("avx2,fma,f16c")))
#include "tile_kernel.h"

namespace amips {
namespace {

struct Avx2 {
    using Vec = __m256;
    static constexpr std::size_t kLanes = 8;
    static constexpr int kColumnsPerTile = 2;
    AMIPS_TARGET static Vec zero() { return _mm256_setzero_ps(); }
    AMIPS_TARGET static Vec load(const float* p) { return _mm256_loadu_ps(p); }
    AMIPS_TARGET static Vec load(const std::uint16_t* p) {
        return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    }
    AMIPS_TARGET static void store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
    AMIPS_TARGET static Vec broadcast(const float* p) { return _mm256_broadcast_ss(p); }
    AMIPS_TARGET static Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
    AMIPS_TARGET static Vec codes(const std::uint8_t* p) {
        return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
    }
    AMIPS_TARGET static float sum(Vec v) {
        const __m128 half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        const __m128 pair = _mm_add_ps(half, _mm_movehl_ps(half, half));
        return _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)));
    }
    // 8 x 8: 32-bit and 64-bit interleaves within 128-bit halves leave, in half H of u[4g + c],
    // column 4H + c of rows 4g..4g+3; one 128-bit permute joins the two halves of each column.
    AMIPS_TARGET static void transpose(Vec* v) {
        Vec t[8], u[8];
        for (int i = 0; i < 4; ++i) {
            t[2 * i] = _mm256_unpacklo_ps(v[2 * i], v[2 * i + 1]);
            t[2 * i + 1] = _mm256_unpackhi_ps(v[2 * i], v[2 * i + 1]);
        }
        for (int g = 0; g < 2; ++g) {
            const __m256d a = _mm256_castps_pd(t[4 * g]), b = _mm256_castps_pd(t[4 * g + 1]);
            const __m256d c = _mm256_castps_pd(t[4 * g + 2]), e = _mm256_castps_pd(t[4 * g + 3]);
            u[4 * g] = _mm256_castpd_ps(_mm256_unpacklo_pd(a, c));
            u[4 * g + 1] = _mm256_castpd_ps(_mm256_unpackhi_pd(a, c));
            u[4 * g + 2] = _mm256_castpd_ps(_mm256_unpacklo_pd(b, e));
            u[4 * g + 3] = _mm256_castpd_ps(_mm256_unpackhi_pd(b, e));
        }
        for (int c = 0; c < 4; ++c) {
            v[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
            v[4 + c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
        }
    }
};

}  // namespace

AMIPS_DEFINE_KERNELS(avx2, Avx2)

}  // namespace amips
#endif
