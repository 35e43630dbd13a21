// Beam search over a copy of an hnswlib graph (HierarchicalNSW's links, read by the Python layer)
// with one byte per dimension for the walk and the float32 keys for the final ranking.
//
// The walk is hnswlib's: greedy descent through the upper levels, then a beam of ef on level 0,
// elements marked deleted passed through but never kept. What differs is what it reads: a key's
// 8-bit code (one 64-byte line at d <= 64) instead of its float32 row beside its links, so that
// the codes of all keys stay in cache far longer; every neighbour of an expanded element is asked
// for before the first is scored, and with them the links of the next one to expand; and the ef
// best by code are ranked again by their exact inner product, so the codes' rounding changes
// which keys are visited, never the returned scores.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "huge_pages.h"

namespace amips {

class GraphSearch {
public:
    // keys (n, d) by element; links0 (n, max_m0 + 1): each element's level-0 count (low 16 bits)
    // then its links; upper: the blocks (max_m + 1 words, same form) of level 1, 2, ... of element
    // i from upper_offsets[i] (words) for levels[i] levels; deleted (n): 1 where marked deleted.
    // Throws std::invalid_argument when a link, block or the entry point lies outside the graph.
    GraphSearch(const float* keys, std::size_t n, std::size_t d, const std::uint32_t* links0,
                std::size_t max_m0, const std::uint32_t* upper, std::size_t upper_words,
                const std::int64_t* upper_offsets, const std::int32_t* levels, std::size_t max_m,
                std::uint32_t entry, const std::uint8_t* deleted);

    // For each query i: walk the graph by `walk` (nq, d) with a beam of ef[i] >= k, and keep the
    // k found elements of largest exact inner product with `rank` (nq, d): scores and elements
    // (nq, k) best first, ties by lower element; -inf and -1 where fewer than k live elements
    // were found. Returns the number of code scores computed.
    std::size_t search(const float* walk, const float* rank, std::size_t nq, std::size_t k,
                       const std::int32_t* ef, int num_threads, float* scores,
                       std::int64_t* ids) const;

    std::size_t size() const { return n_; }
    std::size_t dim() const { return d_; }
    // Bytes held: links, codes and keys.
    std::size_t memory_bytes() const;

private:
    class Walk;

    std::size_t n_, d_, code_dim_, max_m0_, max_m_;
    std::uint32_t entry_;
    int max_level_;
    HugeVector<std::uint32_t> links0_, upper_;
    std::vector<std::int64_t> upper_offsets_;
    HugeVector<std::uint8_t> codes_;
    std::vector<std::uint8_t> deleted_;
    bool any_deleted_;
    std::vector<float> scale_;  // code c of dimension t stands for min_t + c * scale_t
    HugeVector<float> keys_;
};

}  // namespace amips
