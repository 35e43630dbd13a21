// AVX-512F kernels. 32 zmm registers: tiles of up to 16 accumulators (4 queries x 4 keys); the tail of
// each row is read with a masked load, so no scalar remainder loop.
#if defined(__x86_64__)
#pragma GCC target("avx512f")
#include "tile_kernel.h"

namespace amips {
namespace {

struct Avx512 {
    using Vec = __m512;
    using Mask = __mmask16;
    static constexpr std::size_t kLanes = 16;
    static Vec zero() { return _mm512_setzero_ps(); }
    static Vec load(const float* p) { return _mm512_loadu_ps(p); }
    static Mask tail_mask(std::size_t r) { return static_cast<Mask>((1u << r) - 1u); }
    static Vec load_tail(const float* p, Mask m) { return _mm512_maskz_loadu_ps(m, p); }
    static Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
    // Lanes are summed as (i, i + 8), then (i, i + 4), then ((0 + 1) + (2 + 3)), in both.
    static float reduce_one(Vec v) {
        const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), high256(v));
        const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
        const __m128 s2 = _mm_hadd_ps(s4, s4);
        return _mm_cvtss_f32(_mm_hadd_ps(s2, s2));
    }
    // A transposing tree: 16 vectors in, one vector of their 16 sums out.
    static void reduce_group(const Vec* in, float* out) {
        // The tree leaves the sum of f[4s + L] in lane 4L + s; feed it transposed to get lane p = in[p].
        Vec f[16];
        for (int i = 0; i < 16; ++i) f[i] = in[(i % 4) * 4 + i / 4];
        Vec l1[8], l2[4], l3[2];
        for (int i = 0; i < 8; ++i) {  // (i, i + 8): [a.lo + a.hi | b.lo + b.hi]
            l1[i] = _mm512_add_ps(_mm512_shuffle_f32x4(f[2 * i], f[2 * i + 1], 0x44),
                                  _mm512_shuffle_f32x4(f[2 * i], f[2 * i + 1], 0xEE));
        }
        for (int i = 0; i < 4; ++i) {  // (i, i + 4): four lanes left per vector
            l2[i] = _mm512_add_ps(_mm512_shuffle_f32x4(l1[2 * i], l1[2 * i + 1], 0x88),
                                  _mm512_shuffle_f32x4(l1[2 * i], l1[2 * i + 1], 0xDD));
        }
        for (int i = 0; i < 2; ++i) {  // (0 + 1), (2 + 3) within each 128-bit lane
            l3[i] = _mm512_add_ps(_mm512_shuffle_ps(l2[2 * i], l2[2 * i + 1], 0x88),
                                  _mm512_shuffle_ps(l2[2 * i], l2[2 * i + 1], 0xDD));
        }
        _mm512_storeu_ps(out, _mm512_add_ps(_mm512_shuffle_ps(l3[0], l3[1], 0x88),
                                            _mm512_shuffle_ps(l3[0], l3[1], 0xDD)));
    }

private:
    static __m256 high256(Vec v) {
        return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    }
};

}  // namespace

void dot_tile_avx512(const float* q, std::size_t nq, const float* x, std::size_t nx,
                   std::size_t d, float* out, std::size_t ldo, bool from_memory) {
    dot_tile_impl<Avx512>(q, nq, x, nx, d, out, ldo, from_memory);
}

float dot_avx512(const float* a, const float* b, std::size_t d) { return dot_impl<Avx512>(a, b, d); }

}  // namespace amips
#endif
