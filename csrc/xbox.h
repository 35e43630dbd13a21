// The MIPS -> nearest-neighbour transform (Bachrach et al. 2014) with an incremental max norm, as
// Vespa's dotproduct metric keeps it: key x -> [x, sqrt(M^2 - |x|^2)], query q -> [q, 0], so
// |q~ - x~|^2 = |q|^2 + M^2 - 2 q.x and the L2 nearest neighbour is the MIPS answer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>

namespace amips {

class XboxTransform {
public:
    explicit XboxTransform(std::size_t dim);

    // Raises the max norm to cover x (n, dim) and writes the augmented keys (n, dim + 1) to out,
    // computed with the max norm after this batch. Norms are summed in double.
    void add_keys(const float* x, std::size_t n, float* out);
    // Writes [q, 0] for every query: (n, dim + 1).
    void transform_queries(const float* q, std::size_t n, float* out) const;

    std::size_t dim() const { return dim_; }
    double max_norm() const;
    std::int64_t count() const;
    // Restores a saved state (from max_norm() and count()).
    void set_state(double max_norm, std::int64_t count);

private:
    std::size_t dim_;
    mutable std::mutex mutex_;
    // M itself is the state (not M^2), so a saved and restored transform gives identical keys.
    double max_norm_ = 0.0;
    std::int64_t count_ = 0;
};

}  // namespace amips
