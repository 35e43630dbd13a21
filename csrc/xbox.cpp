#include "xbox.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <stdexcept>
#include <vector>

namespace amips {

XboxTransform::XboxTransform(std::size_t dim) : dim_(dim) {
    if (dim == 0) throw std::invalid_argument("XboxTransform: dim must be positive");
}

void XboxTransform::add_keys(const float* x, std::size_t n, float* out) {
    const std::size_t d = dim_;
    std::vector<double> sq(n);
    double batch_max = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
        double s = 0.0;
        for (std::size_t t = 0; t < d; ++t) s += double(x[i * d + t]) * double(x[i * d + t]);
        sq[i] = s;
        batch_max = std::max(batch_max, s);
    }
    double m2;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        const double grown = std::max(max_norm_, std::sqrt(batch_max));
        // Every augmented key has norm M; past float32's range its extra coordinate cannot be stored.
        if (grown > double(std::numeric_limits<float>::max())) {
            throw std::invalid_argument("keys with norm " + std::to_string(std::sqrt(batch_max)) +
                                        " exceed float32's range: their augmented vectors (norm M)"
                                        " cannot be represented");
        }
        max_norm_ = grown;
        count_ += std::int64_t(n);
        m2 = max_norm_ * max_norm_;
    }
    for (std::size_t i = 0; i < n; ++i) {
        std::copy_n(x + i * d, d, out + i * (d + 1));
        out[i * (d + 1) + d] = float(std::sqrt(std::max(0.0, m2 - sq[i])));
    }
}

void XboxTransform::transform_queries(const float* q, std::size_t n, float* out) const {
    const std::size_t d = dim_;
    for (std::size_t i = 0; i < n; ++i) {
        std::copy_n(q + i * d, d, out + i * (d + 1));
        out[i * (d + 1) + d] = 0.f;
    }
}

double XboxTransform::max_norm() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return max_norm_;
}

std::int64_t XboxTransform::count() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return count_;
}

void XboxTransform::set_state(double max_norm, std::int64_t count) {
    if (!(max_norm >= 0.0) || max_norm > double(std::numeric_limits<float>::max()) || count < 0) {
        throw std::invalid_argument(
            "XboxTransform: max_norm must lie in [0, float32's largest value] and count be >= 0");
    }
    std::lock_guard<std::mutex> lock(mutex_);
    max_norm_ = max_norm;
    count_ = count;
}

}  // namespace amips
