// AVX2 + FMA kernels. 16 ymm registers: tiles of up to 8 accumulators (4 queries x 2 keys).
#if defined(__x86_64__)
#pragma GCC target("avx2,fma")
#include "tile_kernel.h"

namespace amips {
namespace {

struct Avx2 {
    using Vec = __m256;
    using Mask = __m256i;
    static constexpr std::size_t kLanes = 8;
    static Vec zero() { return _mm256_setzero_ps(); }
    static Vec load(const float* p) { return _mm256_loadu_ps(p); }
    static Mask tail_mask(std::size_t r) {
        return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(r)),
                                  _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    }
    static Vec load_tail(const float* p, Mask m) { return _mm256_maskload_ps(p, m); }
    static Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
    // Lanes are summed as (i, i + 4), then ((0 + 1) + (2 + 3)), in both.
    static float reduce_one(Vec v) {
        const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        const __m128 s2 = _mm_hadd_ps(s4, s4);
        return _mm_cvtss_f32(_mm_hadd_ps(s2, s2));
    }
    // A transposing tree: 8 vectors in, one vector of their 8 sums out.
    static void reduce_group(const Vec* in, float* out) {
        // The tree leaves the sum of f[2s + L] in lane 4L + s; feed it transposed to get lane p = in[p].
        Vec f[8];
        for (int i = 0; i < 8; ++i) f[i] = in[(i % 2) * 4 + i / 2];
        Vec l1[4];
        for (int i = 0; i < 4; ++i) {  // (i, i + 4): [a.lo + a.hi | b.lo + b.hi]
            l1[i] = _mm256_add_ps(_mm256_permute2f128_ps(f[2 * i], f[2 * i + 1], 0x20),
                                  _mm256_permute2f128_ps(f[2 * i], f[2 * i + 1], 0x31));
        }
        const Vec l2a = _mm256_hadd_ps(l1[0], l1[1]), l2b = _mm256_hadd_ps(l1[2], l1[3]);
        _mm256_storeu_ps(out, _mm256_hadd_ps(l2a, l2b));
    }
};

}  // namespace

void dot_tile_avx2(const float* q, std::size_t nq, const float* x, std::size_t nx,
                   std::size_t d, float* out, std::size_t ldo, bool from_memory) {
    dot_tile_impl<Avx2>(q, nq, x, nx, d, out, ldo, from_memory);
}

float dot_avx2(const float* a, const float* b, std::size_t d) { return dot_impl<Avx2>(a, b, d); }

}  // namespace amips
#endif
