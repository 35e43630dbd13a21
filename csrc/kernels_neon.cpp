// NEON kernels (AArch64, where Advanced SIMD is always present): columns of 4 keys; tiles of 4
// queries x 4 columns (16 of the 32 vector registers accumulate). Multiply-adds are fused
// (vfmaq_f32), as on AVX2 and AVX-512, so the scores are the same bits as theirs.
#if defined(__aarch64__)
#include <arm_neon.h>

#define AMIPS_TARGET
#include "tile_kernel.h"

namespace amips {
namespace {

struct Neon {
    using Vec = float32x4_t;
    static constexpr std::size_t kLanes = 4;
    static constexpr int kColumnsPerTile = 4;
    static Vec zero() { return vdupq_n_f32(0.f); }
    static Vec load(const float* p) { return vld1q_f32(p); }
    static Vec load(const std::uint16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
    static void store(float* p, Vec v) { vst1q_f32(p, v); }
    static Vec broadcast(const float* p) { return vld1q_dup_f32(p); }
    static Vec fma(Vec a, Vec b, Vec c) { return vfmaq_f32(c, a, b); }
    static Vec codes(const std::uint8_t* p) {
        std::uint32_t word;
        __builtin_memcpy(&word, p, sizeof word);
        return vcvtq_f32_u32(vmovl_u16(vget_low_u16(vmovl_u8(vcreate_u8(word)))));
    }
    static float sum(Vec v) { return vaddvq_f32(v); }
    // 4 x 4: 32-bit transposes of row pairs, then 64-bit ones across the pairs.
    static void transpose(Vec* v) {
        const float32x4_t t0 = vtrn1q_f32(v[0], v[1]), t1 = vtrn2q_f32(v[0], v[1]);
        const float32x4_t t2 = vtrn1q_f32(v[2], v[3]), t3 = vtrn2q_f32(v[2], v[3]);
        const float64x2_t a0 = vreinterpretq_f64_f32(t0), a1 = vreinterpretq_f64_f32(t1);
        const float64x2_t a2 = vreinterpretq_f64_f32(t2), a3 = vreinterpretq_f64_f32(t3);
        v[0] = vreinterpretq_f32_f64(vtrn1q_f64(a0, a2));
        v[1] = vreinterpretq_f32_f64(vtrn1q_f64(a1, a3));
        v[2] = vreinterpretq_f32_f64(vtrn2q_f64(a0, a2));
        v[3] = vreinterpretq_f32_f64(vtrn2q_f64(a1, a3));
    }
};

}  // namespace

AMIPS_DEFINE_KERNELS(neon, Neon)

}  // namespace amips
#endif
