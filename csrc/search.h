// Exact inner-product search over row-major float32 matrices. Callers validate arguments (see
// bindings.cpp); these functions assume them valid.
#pragma once

#include <cstddef>
#include <cstdint>

namespace amips {

// Top-k keys by inner product for each query: scores (nq, k) best first, ties by lower id;
// positions beyond n hold score -inf and id -1. keys are row-major, or packed (see pack_keys).
void topk_dot(const float* queries, std::size_t nq, const float* keys, bool keys_packed, std::size_t n,
              std::size_t d, std::size_t k, int num_threads, float* scores, std::int64_t* ids);

// Keys grouped into contiguous segments [offsets[c], offsets[c+1]): the best key of every segment
// for each query, (nq, num_segments); empty segments give -inf and -1.
void segment_max_dot(const float* queries, std::size_t nq, const float* keys, std::size_t n,
                     std::size_t d, const std::int64_t* offsets, std::size_t num_segments,
                     int num_threads, float* scores, std::int64_t* ids);

// scores[i, j] = <queries[i], keys[ids[i, j]]>, or -inf where ids[i, j] == -1.
void rescore(const float* queries, std::size_t nq, const float* keys, std::size_t d,
             const std::int64_t* ids, std::size_t m, int num_threads, float* scores);

// Writes rows x (n, d) into key slots first .. first + n - 1 of the panel layout of kernels.h;
// packed must hold packed_floats(first + n, d) floats.
void pack_keys(const float* x, std::size_t n, std::size_t d, float* packed, std::size_t first);
// Inverse of pack_keys: the first n keys as rows x (n, d).
void unpack_keys(const float* packed, std::size_t n, std::size_t d, float* x);

// The k largest entries of every row of scores (n, C), best first, ties by lower column; NaN
// counts as -inf; positions beyond C hold -inf and -1.
void topk_rows(const float* scores, std::size_t n, std::size_t C, std::size_t k, int num_threads,
               float* top_scores, std::int64_t* top_ids);

}  // namespace amips
