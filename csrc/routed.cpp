#include "routed.h"

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

namespace amips {
namespace {

// The first `count` distinct lists of each query's walk, then of the centroids' ranking in turn
// with them (in_turn, count > 1), then of the centroids' ranking where a row is still short.
std::vector<std::int64_t> ranked_lists(const float* queries, std::size_t nq, const Routing& routing,
                                       std::size_t count, int num_threads,
                                       std::size_t& pieces_scored) {
    const GraphSearch& graph = *routing.graph;
    const std::size_t found = std::min(routing.beam, graph.size());
    std::vector<float> piece_scores(nq * found);
    std::vector<std::int64_t> pieces(nq * found);
    const std::vector<std::int32_t> beams(nq, std::int32_t(found));
    pieces_scored = graph.search(queries, queries, nq, found, beams.data(), num_threads,
                                 piece_scores.data(), pieces.data());
    for (std::int64_t& e : pieces) {
        if (e < 0) continue;
        e = routing.element_lists[e];
        if (e < 0 || std::size_t(e) >= routing.lists) {
            throw std::invalid_argument("element_lists must lie in [0, " + std::to_string(routing.lists) +
                                        "), found " + std::to_string(e));
        }
    }
    std::vector<std::int64_t> walked(nq * count);
    take_in_turn(pieces.data(), found, nullptr, 0, nq, count, walked.data());

    std::vector<float> centroid_scores;
    std::vector<std::int64_t> centroids;
    const auto rank_centroids = [&] {
        centroid_scores.resize(nq * count), centroids.resize(nq * count);
        topk_dot(queries, nq, routing.centroids, count, num_threads, centroid_scores.data(),
                 centroids.data());
    };
    std::vector<std::int64_t> lists = walked;
    if (routing.in_turn && count > 1) {
        rank_centroids();
        take_in_turn(walked.data(), count, centroids.data(), count, nq, count, lists.data());
    }
    std::vector<std::int64_t> both(2 * count);
    for (std::size_t i = 0; i < nq; ++i) {
        std::int64_t* row = lists.data() + i * count;
        if (count == 0 || row[count - 1] >= 0) continue;  // rows are padded at their end
        if (centroids.empty()) rank_centroids();
        std::copy(row, row + count, both.begin());
        std::copy_n(centroids.data() + i * count, count, both.begin() + count);
        take_in_turn(both.data(), 2 * count, nullptr, 0, 1, count, row);
    }
    return lists;
}

}  // namespace

RoutedCounts routed_search(const float* queries, std::size_t nq, const Routing& routing,
                           std::size_t nprobe, const ListSet& lists, const Deepening& deepening,
                           std::size_t depth, const RawRows& raw, std::size_t k, int num_threads,
                           float* scores, std::int64_t* ids, std::int64_t* reached) {
    RoutedCounts counts;
    const auto start = std::chrono::steady_clock::now();
    const std::vector<std::int64_t> probes =
        ranked_lists(queries, nq, routing, nprobe, num_threads, counts.pieces_scored);
    std::vector<float> offsets;
    if (routing.centroid_rows != nullptr) {
        offsets.resize(nq * nprobe);
        rescore(queries, nq, routing.centroid_rows, lists.d, probes.data(), nprobe, num_threads,
                offsets.data());
    }
    counts.routing_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    const bool rerank = raw.data != nullptr;
    std::vector<float> found_scores(rerank ? nq * depth : 0);
    std::vector<std::int64_t> found_ids(rerank ? nq * depth : 0);
    counts.distances = scan_lists(queries, nq, lists, probes.data(),
                                  offsets.empty() ? nullptr : offsets.data(), nprobe, depth,
                                  &deepening, num_threads, rerank ? found_scores.data() : scores,
                                  rerank ? found_ids.data() : ids, reached);
    for (std::size_t i = 0; i < nq; ++i) {
        const std::int64_t* row = probes.data() + i * nprobe;
        counts.probed += std::size_t(
            std::count_if(row, row + reached[i], [](std::int64_t c) { return c >= 0; }));
    }
    if (rerank) {
        for (const std::int64_t id : found_ids) {
            if (id >= std::int64_t(raw.n)) {
                throw std::invalid_argument("the lists hold id " + std::to_string(id) + ", beyond the " +
                                            std::to_string(raw.n) + " raw keys");
            }
        }
        if (raw.half) {
            rescore(queries, nq, static_cast<const std::uint16_t*>(raw.data), lists.d,
                    found_ids.data(), depth, num_threads, found_scores.data());
        } else {
            rescore(queries, nq, static_cast<const float*>(raw.data), lists.d, found_ids.data(),
                    depth, num_threads, found_scores.data());
        }
        topk_rows(found_scores.data(), nq, depth, k, num_threads, scores, ids, found_ids.data());
    }
    return counts;
}

}  // namespace amips
