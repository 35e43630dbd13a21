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
    static void store(float* p, Vec v) { *p = v; }
    static Vec broadcast(const float* p) { return *p; }
    static Vec fma(Vec a, Vec b, Vec c) { return a * b + c; }
    static void transpose(Vec*) {}
};

}  // namespace

void pack_scalar(const float* x, const std::int64_t* ids, std::size_t n, std::size_t d, float* out) {
    pack_impl<Scalar>(x, ids, n, d, out);
}

void dot_tile_scalar(const float* q, std::size_t nq, const float* packed, std::size_t n,
                     std::size_t d, float* out, std::size_t ldo) {
    dot_tile_impl<Scalar>(q, nq, packed, n, d, out, ldo);
}

}  // namespace amips
