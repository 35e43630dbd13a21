// Portable fallback: columns of one key, and a product and a sum per step (-ffp-contract=off keeps
// the compiler from fusing them on targets that have FMA).
#define AMIPS_TARGET
#include "tile_kernel.h"

namespace amips {
namespace {

struct Scalar {
    using Vec = float;
    static constexpr std::size_t kLanes = 1;
    static constexpr int kColumnsPerTile = 4;
    static Vec zero() { return 0.f; }
    static Vec load(const float* p) { return *p; }
    static Vec load(const std::uint16_t* p) { return half_to_float(*p); }
    static void store(float* p, Vec v) { *p = v; }
    static Vec broadcast(const float* p) { return *p; }
    static Vec fma(Vec a, Vec b, Vec c) { return a * b + c; }
    static Vec codes(const std::uint8_t* p) { return float(*p); }
    static float sum(Vec v) { return v; }
    static void transpose(Vec*) {}
};

}  // namespace

AMIPS_DEFINE_KERNELS(scalar, Scalar)

}  // namespace amips
