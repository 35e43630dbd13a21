// AmortizedIVF's calibrated search over lists the core scans, its steps in one call: route, scan,
// re-rank (a one-query search in 0.80x the time of the steps' calls from Python, WordNet +
// MiniLM at recall 0.90). Callers validate arguments (see bindings.cpp).
#pragma once

#include <cstddef>
#include <cstdint>

#include "graph.h"
#include "search.h"

namespace amips {

// How the lists are ranked for a query: a walk of the graph of pieces with a beam of `beam`
// (each element stands for the list element_lists[e]), its lists in the order found; the
// quantizer's centroids (packed, top-k by inner product) taken in turn with them where in_turn,
// and filling the rows the walk leaves short. centroid_rows (count, d): each list's centroid, for
// codes stored as residuals (their scores add q . centroid); null for codes that are not.
struct Routing {
    const GraphSearch* graph = nullptr;
    const std::int64_t* element_lists = nullptr;  // each in [0, lists)
    std::size_t lists = 0;
    std::size_t beam = 1;
    KeySet centroids;
    bool in_turn = false;
    const float* centroid_rows = nullptr;
};

// Raw keys to re-rank the candidates from: float32 rows or IEEE halves (their bits), (n, d); null
// data: the scan's scores are the results.
struct RawRows {
    const void* data = nullptr;
    bool half = false;
    std::size_t n = 0;
};

struct RoutedCounts {
    std::size_t distances = 0;      // keys scanned
    std::size_t probed = 0;         // lists scanned, over all queries
    std::size_t pieces_scored = 0;  // the walk's inner products, over all queries
    double routing_seconds = 0;     // the time spent ranking the lists
};

// For each query: its `nprobe` lists ranked by `routing`, scanned with `deepening` for `depth`
// candidates, and, with raw keys, their best k by exact inner product (else depth == k). scores
// and ids (nq, k) best first, padded with (-FLT_MAX, -1) as faiss pads; reached (nq) the lists
// each query scanned. The results of routing's, scan_lists' and rescore's steps taken one call at
// a time. Throws std::invalid_argument where a piece found stands for no list, or the lists hold
// an id beyond the raw keys.
RoutedCounts routed_search(const float* queries, std::size_t nq, const Routing& routing,
                           std::size_t nprobe, const ListSet& lists, const Deepening& deepening,
                           std::size_t depth, const RawRows& raw, std::size_t k, int num_threads,
                           float* scores, std::int64_t* ids, std::int64_t* reached);

}  // namespace amips
