// AVX-512F kernels: columns of 16 keys; tiles of 4 queries x 4 columns, one whole panel (16 of the 32
// zmm registers accumulate).
#if defined(__x86_64__)
#include <immintrin.h>

#define AMIPS_TARGET __attribute__((target("avx512f")))
#include "tile_kernel.h"

namespace amips {
namespace {

struct Avx512 {
    using Vec = __m512;
    static constexpr std::size_t kLanes = 16;
    static constexpr int kColumnsPerTile = 4;
    AMIPS_TARGET static Vec zero() { return _mm512_setzero_ps(); }
    AMIPS_TARGET static Vec load(const float* p) { return _mm512_loadu_ps(p); }
    AMIPS_TARGET static Vec load(const std::uint16_t* p) {
        return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    }
    AMIPS_TARGET static void store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
    AMIPS_TARGET static Vec broadcast(const float* p) { return _mm512_set1_ps(*p); }
    AMIPS_TARGET static Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
    AMIPS_TARGET static Vec codes(const std::uint8_t* p) {
        return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
    }
    AMIPS_TARGET static float sum(Vec v) { return _mm512_reduce_add_ps(v); }
    // 16 x 16 in four rounds of 16 shuffles: 32-bit and 64-bit interleaves within 128-bit lanes
    // leave, in lane L of u[4g + c], column 4L + c of rows 4g..4g+3; two 128-bit shuffles gather
    // each column's four pieces.
    AMIPS_TARGET static void transpose(Vec* v) {
        Vec t[16], u[16];
        for (int i = 0; i < 8; ++i) {
            t[2 * i] = _mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]);
        }
        for (int g = 0; g < 4; ++g) {
            const __m512d a = _mm512_castps_pd(t[4 * g]), b = _mm512_castps_pd(t[4 * g + 1]);
            const __m512d c = _mm512_castps_pd(t[4 * g + 2]), e = _mm512_castps_pd(t[4 * g + 3]);
            u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
            u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
            u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, e));
            u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, e));
        }
        for (int c = 0; c < 4; ++c) {
            // Rows 0-7 then 8-15: [column c | 8 + c | c | 8 + c] and [4 + c | 12 + c | 4 + c | 12 + c].
            const Vec a0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88);
            const Vec b0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xDD);
            const Vec a1 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88);
            const Vec b1 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xDD);
            v[c] = _mm512_shuffle_f32x4(a0, a1, 0x88);
            v[8 + c] = _mm512_shuffle_f32x4(a0, a1, 0xDD);
            v[4 + c] = _mm512_shuffle_f32x4(b0, b1, 0x88);
            v[12 + c] = _mm512_shuffle_f32x4(b0, b1, 0xDD);
        }
    }
};

}  // namespace

AMIPS_DEFINE_KERNELS(avx512, Avx512)

}  // namespace amips
#endif
