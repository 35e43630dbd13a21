#include <cstdlib>
#include <stdexcept>
#include <string>

#include "kernels.h"

#if defined(__x86_64__)
#include <cpuid.h>
#endif

namespace amips {
namespace {

#if defined(__x86_64__)
constexpr const char* kFamily = "scalar, avx2, avx512";
#elif defined(__aarch64__)
constexpr const char* kFamily = "scalar, neon";
#else
constexpr const char* kFamily = "scalar";
#endif

#if defined(__x86_64__)
// Half-to-float conversion (F16C), which the AVX2 level's packs of halves use: CPUID leaf 1, ECX
// bit 29 (clang's __builtin_cpu_supports does not know "f16c").
bool has_f16c() {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
}
#endif

bool in_family(Isa isa) {
#if defined(__x86_64__)
    return isa != Isa::neon;
#elif defined(__aarch64__)
    return isa == Isa::scalar || isa == Isa::neon;
#else
    return isa == Isa::scalar;
#endif
}

}  // namespace

Isa detected_isa() {
#if defined(__x86_64__)
    // __builtin_cpu_supports also checks that the OS saves the wider registers (XGETBV).
    if (__builtin_cpu_supports("avx512f")) return Isa::avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c()) {
        return Isa::avx2;
    }
    return Isa::scalar;
#elif defined(__aarch64__)
    return Isa::neon;  // Advanced SIMD is part of every AArch64 CPU
#else
    return Isa::scalar;
#endif
}

Isa active_isa() {
    const Isa best = detected_isa();
    const char* env = std::getenv("AMIPS_SIMD");
    if (env == nullptr || *env == '\0') return best;
    const std::string cap(env);
    Isa wanted = Isa::scalar;
    if (cap == "neon") {
        wanted = Isa::neon;
    } else if (cap == "avx2") {
        wanted = Isa::avx2;
    } else if (cap == "avx512") {
        wanted = Isa::avx512;
    } else if (cap != "scalar") {
        throw std::invalid_argument("AMIPS_SIMD must be scalar, neon, avx2 or avx512, got '" + cap + "'");
    }
    if (!in_family(wanted)) {
        throw std::invalid_argument("AMIPS_SIMD=" + cap + " is not a level of this CPU family (" +
                                    kFamily + ")");
    }
    return wanted < best ? wanted : best;
}

const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::avx512: return "avx512";
        case Isa::avx2: return "avx2";
        case Isa::neon: return "neon";
        default: return "scalar";
    }
}

Kernels kernels_for(Isa isa) {
#if defined(__x86_64__)
    if (isa == Isa::avx512) {
        return {isa, pack_avx512, pack_half_avx512, dot_panels_avx512, dot_rows_avx512,
                dot_rows_half_avx512, dot_codes_avx512, dot_code_rows_avx512};
    }
    if (isa == Isa::avx2) {
        return {isa, pack_avx2, pack_half_avx2, dot_panels_avx2, dot_rows_avx2, dot_rows_half_avx2,
                dot_codes_avx2, dot_code_rows_avx2};
    }
#elif defined(__aarch64__)
    if (isa == Isa::neon) {
        return {isa, pack_neon, pack_half_neon, dot_panels_neon, dot_rows_neon, dot_rows_half_neon,
                dot_codes_neon, dot_code_rows_neon};
    }
#endif
    return {Isa::scalar, pack_scalar, pack_half_scalar, dot_panels_scalar, dot_rows_scalar,
            dot_rows_half_scalar, dot_codes_scalar, dot_code_rows_scalar};
}

}  // namespace amips
