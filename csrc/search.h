// Exact inner-product search over float32 keys. Callers validate arguments (see bindings.cpp);
// these functions assume them valid.
#pragma once

#include <cstddef>
#include <cstdint>

namespace amips {

// Keys in two parts, numbered in this order: n_packed keys already in whole panels (n_packed a
// multiple of kPanel; panel p at panels + p * kPanel * d, see kernels.h), then n_rows row-major
// keys, packed a panel chunk at a time while they are scanned.
struct KeySet {
    const float* panels = nullptr;
    std::size_t n_packed = 0;
    const float* rows = nullptr;
    std::size_t n_rows = 0;
    std::size_t d = 0;

    std::size_t size() const { return n_packed + n_rows; }
};

// Top-k keys by inner product for each query, k <= keys.size(): scores (nq, k) best first, ties
// by lower id.
void topk_dot(const float* queries, std::size_t nq, const KeySet& keys, std::size_t k,
              int num_threads, float* scores, std::int64_t* ids);

// Keys grouped into contiguous segments [offsets[c], offsets[c+1]) of their numbering: the best
// key of every segment for each query, (nq, num_segments), ties by lower id; empty segments give
// -inf and -1.
void segment_max_dot(const float* queries, std::size_t nq, const KeySet& keys,
                     const std::int64_t* offsets, std::size_t num_segments, int num_threads,
                     float* scores, std::int64_t* ids);

// scores[i, j] = <queries[i], keys[ids[i, j]]>, or -inf where ids[i, j] == -1. Keys are float32 or
// IEEE halves (their bits), scored as the floats they stand for.
void rescore(const float* queries, std::size_t nq, const float* keys, std::size_t d,
             const std::int64_t* ids, std::size_t m, int num_threads, float* scores);
void rescore(const float* queries, std::size_t nq, const std::uint16_t* keys, std::size_t d,
             const std::int64_t* ids, std::size_t m, int num_threads, float* scores);

// How a list holds its keys: float32 rows (sizes[c], d), IEEE halves (their bits) or 4-bit
// product-quantization codes in faiss's fast-scan blocks (pq4.h).
enum class ListCodes { floats, halves, pq4 };

// Inverted lists held by their owner (faiss's): list c holds sizes[c] keys, their codes at
// rows[c] and their ids at ids[c]. Codes pq4 are scored approximately, from a query's table for
// the codebook (pq_m, pq_dsub, 16) floats (pq4_table), pq_m2 subquantizers (pq_m rounded up to
// even) a block.
struct ListSet {
    const void* const* rows = nullptr;
    ListCodes codes = ListCodes::floats;
    const std::int64_t* const* ids = nullptr;
    const std::int64_t* sizes = nullptr;
    std::size_t count = 0;
    std::size_t d = 0;
    const float* codebook = nullptr;
    std::size_t pq_m = 0, pq_m2 = 0, pq_dsub = 0;
};

// A query's score over its norm (norm at least 1e-30): the feature that groups the queries of a
// calibrated search.
float score_over_norm(float score, const float* query, std::size_t d);

// How far a calibrated scan goes for each query: it scans its first `first` probes, then the kth
// best score found (1-based; -FLT_MAX where fewer were found), over the query's norm, falls into
// the group of edges (ascending) it reaches, and the query scans nprobe[group] probes in all.
struct Deepening {
    std::size_t first = 1;
    std::size_t kth = 1;
    const double* edges = nullptr;
    std::size_t num_edges = 0;
    const std::int64_t* nprobe = nullptr;  // (num_edges + 1)

    std::size_t nprobe_for(float kth_score, const float* query, std::size_t d) const;
};

// Top-k keys by inner product for each query among the lists it probes (probes (nq, nprobe), -1:
// none), each list's scores plus offsets (nq, nprobe) where given (residual codes: the query's
// score with the list's centroid), as faiss's IVF search returns them: scores and ids (nq, k)
// best first, ties by lower id, padded with (-FLT_MAX, -1). With a deepening, each query scans
// only the probes it reaches (kth <= k, first <= nprobe). reached (nq) gets each query's number
// of probes scanned. A list that at most two queries of a block probe is scored row by row in
// place (dot_rows); the queries of a block that probe a list more share its packing, and their
// scores without offsets are rescore's, bit for bit (pq4 codes: each query scores a list's
// blocks in place). Returns the keys scored.
std::size_t scan_lists(const float* queries, std::size_t nq, const ListSet& lists,
                       const std::int64_t* probes, const float* offsets, std::size_t nprobe,
                       std::size_t k, const Deepening* deepening, int num_threads, float* scores,
                       std::int64_t* ids, std::int64_t* reached);

// Packs n rows x (n, d), n a multiple of kPanel, into the whole panels at packed (kernels.h).
void pack_keys(const float* x, std::size_t n, std::size_t d, float* packed);
// Inverse of pack_keys: the first n keys of whole panels as rows x (n, d).
void unpack_keys(const float* packed, std::size_t n, std::size_t d, float* x);

// The k <= C largest entries of every row of scores (n, C), best first, ties by lower column; NaN
// counts as -inf. top_ids are their columns, or, with labels (n, C), their labels: entries labelled
// negative are passed over, and rows with fewer than k others are padded with (-FLT_MAX, -1), as
// faiss pads a search's results.
void topk_rows(const float* scores, std::size_t n, std::size_t C, std::size_t k, int num_threads,
               float* top_scores, std::int64_t* top_ids, const std::int64_t* labels = nullptr);

// Per row, the first count distinct non-negative entries of a[0], b[0], a[1], b[1], ...: two
// rankings (n, width_a) and (n, width_b) taken in turn; out (n, count), padded with -1.
void take_in_turn(const std::int64_t* a, std::size_t width_a, const std::int64_t* b,
                  std::size_t width_b, std::size_t n, std::size_t count, std::int64_t* out);

}  // namespace amips
