// Beam search over an HNSW graph with one byte per dimension for the walk and the float32 keys for
// the final ranking. The graph is a copy of an hnswlib graph (HierarchicalNSW's links, read by the
// Python layer), or one built here by inserting keys (graph_build.cpp).
//
// The walk is hnswlib's: greedy descent through the upper levels, then a beam of ef on level 0,
// elements marked deleted passed through but never kept. What differs is what it reads: a key's
// 8-bit code (one 64-byte line at d <= 64) instead of its float32 row beside its links, so that
// the codes of all keys stay in cache far longer; every neighbour of an expanded element is asked
// for before the first is scored (four at a time), and with them the links of the next one to
// expand; and the ef best by code are ranked again by their exact inner product, so the codes'
// rounding changes which keys are visited, never the returned scores. With a basis (r, d), the
// codes are those of the keys' r components along it (and the walk scores the query's): at d in
// the hundreds, fewer bytes a key for the walk to read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "beam.h"
#include "huge_pages.h"
#include "projection.h"

namespace amips {

// The elements a walk has seen: one bit each, cleared by the list of those set.
class VisitedSet {
public:
    VisitedSet() = default;
    explicit VisitedSet(std::size_t n) : bits_((n + 63) / 64) {}

    // Room for elements 0 .. n - 1 (none marked when cleared before).
    void fit(std::size_t n) {
        if (bits_.size() < (n + 63) / 64) bits_.resize((n + 63) / 64, 0);
    }

    // True the first time e is asked for since the last clear().
    bool first_visit(std::uint32_t e) {
        std::uint64_t& word = bits_[e >> 6];
        const std::uint64_t bit = std::uint64_t(1) << (e & 63);
        if (word & bit) return false;
        word |= bit;
        touched_.push_back(e);
        return true;
    }

    // Marks elements (count), writing those not marked before into fresh in order; returns how
    // many. Without a branch on the marks, which a walk cannot predict.
    std::size_t first_visits(const std::uint32_t* elements, std::size_t count, std::uint32_t* fresh) {
        std::size_t found = 0;
        for (std::size_t j = 0; j < count; ++j) {
            const std::uint32_t e = elements[j];
            std::uint64_t& word = bits_[e >> 6];
            const std::uint64_t bit = std::uint64_t(1) << (e & 63);
            fresh[found] = e;
            found += (word & bit) == 0;
            word |= bit;
        }
        touched_.insert(touched_.end(), fresh, fresh + found);
        return found;
    }

    void clear() {
        for (const std::uint32_t e : touched_) bits_[e >> 6] = 0;
        touched_.clear();
    }

private:
    std::vector<std::uint64_t> bits_;
    std::vector<std::uint32_t> touched_;
};

class GraphSearch {
public:
    // keys (n, d) by element; links0 (n, max_m0 + 1): each element's level-0 count (low 16 bits)
    // then its links; upper: the blocks (max_m + 1 words, same form) of level 1, 2, ... of element
    // i from upper_offsets[i] (words) for levels[i] levels; deleted (n): 1 where marked deleted.
    // Codes span each dimension's range over the keys, or code_low + code_scale * [0, 255] where
    // given (d each: a graph's own, so that a copy walks as it did). keys may be null where codes
    // (n, r) and their ranges are given: a graph that holds codes only (see below). basis (r, d)
    // or none (r = d). Throws std::invalid_argument when a link, block or the entry point lies
    // outside the graph.
    GraphSearch(const float* keys, std::size_t n, std::size_t d, const std::uint32_t* links0,
                std::size_t max_m0, const std::uint32_t* upper, std::size_t upper_words,
                const std::int64_t* upper_offsets, const std::int32_t* levels, std::size_t max_m,
                std::uint32_t entry, const std::uint8_t* deleted, const float* code_low = nullptr,
                const float* code_scale = nullptr, const std::uint8_t* codes = nullptr,
                const float* basis = nullptr, std::size_t basis_rows = 0);
    // An empty graph of dimension d: max_m links per element on the upper levels, 2 max_m on
    // level 0, as hnswlib's M. Without keep_keys it holds only codes (a quarter of the bytes) and
    // ranks what a walk finds by the values the codes stand for (so it takes no basis). basis
    // (basis_rows, d) or none.
    GraphSearch(std::size_t d, std::size_t max_m, bool keep_keys = true,
                const float* basis = nullptr, std::size_t basis_rows = 0);

    // Inserts keys (count, d) as elements size() .. size() + count - 1, in that order, on up to
    // num_threads threads, the way hnswlib inserts (a level drawn with mult 1 / ln max_m, greedy
    // descent, a beam of ef_construction on each of the element's levels, links chosen by
    // hnswlib's heuristic, neighbours' links pruned by it when full), with every score taken
    // between codes; keys outside the codes' ranges widen them (and every code is made again).
    // An element's level depends on seed and its number only; with one thread
    // the graph depends on nothing else. With fill_lists, every list the heuristic leaves short
    // is filled with the best candidates it passed over (a new element takes 2 max_m on level
    // 0): the same memory, more links. Not to be called while a search runs.
    void add(const float* keys, std::size_t count, std::size_t ef_construction,
             std::uint64_t seed, int num_threads, bool fill_lists = false);
    // Gives elements (count) the keys (count, d) in place, each linked again where its new key
    // lies, as hnswlib's updatePoint: the neighbours it had choose their links again among their
    // neighbours' neighbours, then the element's own links come from a search at its new key.
    // fill_lists as for add. One thread; not to be called while a search runs.
    void update(const std::uint32_t* elements, const float* keys, std::size_t count,
                std::size_t ef_construction, bool fill_lists = false);
    // Adds the level-0 link from[i] -> to[i] for each of count pairs, each source's in order,
    // where from[i] lacks it (a pair of one element is passed over): into the room its list has,
    // then, on a full list, in place of a link the heuristic would not choose there (one that
    // filled the list, the worst first); returns how many were added. Links added so are kept as
    // any other: an insertion may prune them from a full list. Throws std::invalid_argument,
    // changing nothing, when an element lies outside the graph. Not to be called while a search
    // runs.
    std::size_t link(const std::uint32_t* from, const std::uint32_t* to, std::size_t count,
                     int num_threads = 0);
    // Marks an element deleted: walked through, never returned; unmark_deleted undoes it.
    void mark_deleted(std::uint32_t element);
    void unmark_deleted(std::uint32_t element);
    // Room for `capacity` elements, so that adds up to it never move or over-allocate the arrays.
    void reserve(std::size_t capacity);
    // The keys of elements (count) as rows (count, d); the graph must keep its keys.
    void copy_keys(const std::uint32_t* elements, std::size_t count, float* out) const;

    // For each query i: walk the graph by `walk` (nq, d) with a beam of ef[i] >= k, and keep the
    // k found elements of largest exact inner product with `rank` (nq, d): scores and elements
    // (nq, k) best first, ties by lower element; -inf and -1 where fewer than k live elements
    // were found. With `allowed`, only elements it accepts are kept (the others are walked
    // through, as deleted ones); it is called from the search's threads. Returns the number of
    // inner products computed: code scores, then the exact ones of the ranking.
    using Filter = std::function<bool(std::uint32_t)>;
    std::size_t search(const float* walk, const float* rank, std::size_t nq, std::size_t k,
                       const std::int32_t* ef, int num_threads, float* scores,
                       std::int64_t* ids, const Filter* allowed = nullptr) const;

    std::size_t size() const { return n_; }
    std::size_t dim() const { return d_; }
    std::size_t max_m() const { return max_m_; }
    std::size_t max_m0() const { return max_m0_; }
    std::uint32_t entry() const { return entry_; }
    // The constructor's arrays, as they stand (keys: null for a graph of codes only).
    bool keeps_keys() const { return keep_keys_; }
    const float* keys() const { return keep_keys_ ? keys_.data() : nullptr; }
    const std::uint8_t* codes() const { return codes_.data(); }
    std::size_t code_dim() const { return code_dim_; }
    // Components a code holds: the basis's rows, or d.
    std::size_t code_values() const { return r_; }
    const Projection& basis() const { return basis_; }
    const std::uint32_t* links0() const { return links0_.data(); }
    const std::uint32_t* upper() const { return upper_.data(); }
    std::size_t upper_words() const { return upper_.size(); }
    const std::int64_t* upper_offsets() const { return upper_offsets_.data(); }
    const std::int32_t* levels() const { return levels_.data(); }
    const std::uint8_t* deleted() const { return deleted_.data(); }
    const float* code_low() const { return low_.data(); }
    const float* code_scale() const { return scale_.data(); }
    // Bytes held: links, codes, keys and basis.
    std::size_t memory_bytes() const;

private:
    class Walk;
    class Builder;

    // rows (count, d) as the codes see them (count, r): along the basis into scratch, or rows.
    const float* code_space(const Kernels& kern, const float* rows, std::size_t count,
                            std::vector<float>& scratch) const;
    // each(values, first, m) for rows [first, first + m) of rows (count, d), 1,024 at a time (so
    // that scratch stays small), values (m, r) as the codes see them.
    void along_basis(const float* rows, std::size_t count,
                     const std::function<void(const float*, std::size_t, std::size_t)>& each) const;
    // The codes' ranges: over rows (count, d), or as given.
    void set_code_ranges(const float* rows, std::size_t count, const float* low, const float* scale);
    // Widens the ranges to take in rows (count, d), making every code again; true when they
    // changed.
    bool widen_code_ranges(const float* rows, std::size_t count);
    // Widens low_ and high to take in rows (count, d) along the basis.
    void span(const float* rows, std::size_t count, std::vector<float>& high);
    void set_scales(const std::vector<float>& high);
    // Codes of elements [first, first + count) from their rows (count, d).
    void encode(std::size_t first, std::size_t count, const float* rows);
    // The code of values (r), in code space.
    void quantize(const float* values, std::uint8_t* code) const;

    std::size_t n_, d_, r_, code_dim_, max_m0_, max_m_;
    std::uint32_t entry_;
    int max_level_;  // -1 while empty
    bool keep_keys_;  // else keys_ stays empty
    HugeVector<std::uint32_t> links0_, upper_;
    std::vector<std::int64_t> upper_offsets_;
    std::vector<std::int32_t> levels_;
    HugeVector<std::uint8_t> codes_;
    std::vector<std::uint8_t> deleted_;
    bool any_deleted_;
    Projection basis_;
    std::vector<float> low_, scale_;  // code c of component t stands for low_t + c * scale_t
    HugeVector<float> keys_;
};

}  // namespace amips
