// A linear map of rows to fewer dimensions (rows' inner products with r basis vectors), applied
// with the panel kernels: the basis is packed once, rows are taken kTileQueries at a time.
#pragma once

#include <cstddef>
#include <vector>

namespace amips {

struct Kernels;

class Projection {
public:
    Projection() = default;  // none: rows stay as they are
    // basis (r, d) row by row, 0 < r.
    Projection(const float* basis, std::size_t r, std::size_t d);

    bool empty() const { return r_ == 0; }
    std::size_t rows() const { return r_; }
    const float* basis() const { return basis_.data(); }
    std::size_t bytes() const { return (basis_.size() + packed_.size()) * sizeof(float); }

    // out (count, r) = rows (count, d) times the basis's transpose, by kern's dot_panels.
    void apply(const Kernels& kern, const float* rows, std::size_t count, float* out) const;

private:
    std::size_t r_ = 0, d_ = 0;
    std::vector<float> basis_;
    std::vector<float> packed_;  // per chunk of kChunk dimensions, the basis rows packed as keys
};

}  // namespace amips
