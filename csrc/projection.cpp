#include "projection.h"

#include <algorithm>

#include "kernels.h"

namespace amips {

Projection::Projection(const float* basis, std::size_t r, std::size_t d)
    : r_(r), d_(d), basis_(basis, basis + r * d) {
    const Kernels kern = kernels_for(active_isa());
    for (std::size_t t0 = 0; t0 < d; t0 += kChunk) {
        const std::size_t dc = std::min(kChunk, d - t0);
        const std::size_t at = packed_.size();
        packed_.resize(at + packed_floats(r, dc));
        kern.pack(basis, d, nullptr, r, t0, dc, packed_.data() + at);
    }
}

void Projection::apply(const Kernels& kern, const float* rows, std::size_t count, float* out) const {
    // The kernels write whole vectors: past r, into a tile, unless r is a whole number of them.
    const bool direct = r_ % kPanelQuantum == 0;
    const std::size_t ld = (r_ + kPanelQuantum - 1) / kPanelQuantum * kPanelQuantum;
    thread_local std::vector<float> tile;  // a walk projects one query at a time: no allocation each
    if (!direct) tile.resize(kTileQueries * ld);
    for (std::size_t i = 0; i < count; i += kTileQueries) {
        const std::size_t nq = std::min(kTileQueries, count - i);
        float* dest = direct ? out + i * r_ : tile.data();
        const float* chunk = packed_.data();
        for (std::size_t t0 = 0; t0 < d_; t0 += kChunk) {
            const std::size_t dc = std::min(kChunk, d_ - t0);
            kern.dot_panels(rows + i * d_ + t0, d_, nq, chunk, kPanel * dc, r_, dc, dest, ld, t0 > 0);
            chunk += packed_floats(r_, dc);
        }
        for (std::size_t q = 0; q < nq && !direct; ++q) {
            std::copy(tile.data() + q * ld, tile.data() + q * ld + r_, out + (i + q) * r_);
        }
    }
}

}  // namespace amips
