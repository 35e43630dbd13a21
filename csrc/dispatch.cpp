#include <cstdlib>
#include <stdexcept>
#include <string>

#include "kernels.h"

namespace amips {

Isa detected_isa() {
#if defined(__x86_64__)
    // __builtin_cpu_supports also checks that the OS saves the wider registers (XGETBV).
    if (__builtin_cpu_supports("avx512f")) return Isa::avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
#endif
    return Isa::scalar;
}

Isa active_isa() {
    const Isa best = detected_isa();
    const char* env = std::getenv("AMIPS_SIMD");
    if (env == nullptr || *env == '\0') return best;
    const std::string cap(env);
    Isa wanted;
    if (cap == "scalar") {
        wanted = Isa::scalar;
    } else if (cap == "avx2") {
        wanted = Isa::avx2;
    } else if (cap == "avx512") {
        wanted = Isa::avx512;
    } else {
        throw std::invalid_argument("AMIPS_SIMD must be scalar, avx2 or avx512, got '" + cap + "'");
    }
    return wanted < best ? wanted : best;
}

const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::avx512: return "avx512";
        case Isa::avx2: return "avx2";
        default: return "scalar";
    }
}

Kernels kernels_for(Isa isa) {
#if defined(__x86_64__)
    if (isa == Isa::avx512) return {isa, pack_avx512, dot_tile_avx512};
    if (isa == Isa::avx2) return {isa, pack_avx2, dot_tile_avx2};
#endif
    return {Isa::scalar, pack_scalar, dot_tile_scalar};
}

}  // namespace amips
