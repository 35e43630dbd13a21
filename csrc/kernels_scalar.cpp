// Portable fallback: four running sums (lane i takes elements i, i+4, ...) so the compiler may keep
// them in one SSE register without reassociating anything.
#include "kernels.h"

namespace amips {

float dot_scalar(const float* a, const float* b, std::size_t d) {
    float s[4] = {0.f, 0.f, 0.f, 0.f};
    std::size_t i = 0;
    for (; i + 4 <= d; i += 4) {
        for (int l = 0; l < 4; ++l) s[l] += a[i + l] * b[i + l];
    }
    for (int l = 0; i < d; ++i, ++l) s[l] += a[i] * b[i];
    return (s[0] + s[1]) + (s[2] + s[3]);
}

void dot_tile_scalar(const float* q, std::size_t nq, const float* x, std::size_t nx, std::size_t d,
                     float* out, std::size_t ldo, bool /*from_memory*/) {
    for (std::size_t i = 0; i < nq; ++i) {
        for (std::size_t j = 0; j < nx; ++j) out[i * ldo + j] = dot_scalar(q + i * d, x + j * d, d);
    }
}

}  // namespace amips
