// IEEE half precision (float16) values, held as their bits: raw keys and training queries kept at
// half the memory of float32.
#pragma once

#include <cstdint>

namespace amips {

// The float a half's bits stand for (exactly: every half is a float). Only builtins, so that the
// ISA files may use it after their target attribute is set (see tile_kernel.h).
inline float half_to_float(std::uint16_t h) {
    const std::uint32_t sign = std::uint32_t(h & 0x8000) << 16;
    const std::uint32_t exponent = (h >> 10) & 0x1F, mantissa = h & 0x3FF;
    if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float
        const float magnitude = float(mantissa) * 0x1p-24f;
        return sign ? -magnitude : magnitude;
    }
    const std::uint32_t bits = exponent == 31 ? sign | 0x7F800000u | (mantissa << 13)
                                              : sign | ((exponent + 112) << 23) | (mantissa << 13);
    float f;
    __builtin_memcpy(&f, &bits, sizeof f);
    return f;
}

inline float to_float(float x) { return x; }
inline float to_float(std::uint16_t h) { return half_to_float(h); }

}  // namespace amips
