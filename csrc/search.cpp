#include "search.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "kernels.h"
#include "parallel.h"
#include "pq4.h"

namespace amips {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Cache blocking: a block of keys (about kKeyBlockBytes of one chunk of dimensions) stays in L2
// while every query tile of a chunk of queries passes over it, and the chunk of queries is small
// enough to stay in L2 beside it. Keys come from memory once per chunk of queries.
constexpr std::size_t kKeyBlockBytes = 256 * 1024;
constexpr std::size_t kQueryChunkBytes = 256 * 1024;

std::size_t round_up(std::size_t n, std::size_t m) { return (n + m - 1) / m * m; }

std::size_t queries_per_chunk(std::size_t d) {
    const std::size_t fit = kQueryChunkBytes / (d * sizeof(float));
    return std::clamp<std::size_t>(fit, kTileQueries, 1024) / kTileQueries * kTileQueries;
}

std::size_t num_panels(const KeySet& keys) { return round_up(keys.size(), kPanel) / kPanel; }

// Scores queries [q0, q1) against panels [p0, p1) of keys, a block of panels at a time.
// visit(first_query, num_queries, first_key, num_keys, scores, ld) receives a query tile's scores
// against one block: scores[r * ld + j] for query first_query + r and key first_key + j.
template <class Visit>
void scan(const Kernels& kern, const float* queries, std::size_t q0, std::size_t q1,
          const KeySet& keys, std::size_t p0, std::size_t p1, Visit&& visit) {
    const std::size_t d = keys.d, chunks = (d + kChunk - 1) / kChunk, dc_max = std::min(d, kChunk);
    const std::size_t stored_panels = keys.n_packed / kPanel;
    const std::size_t block = std::clamp<std::size_t>(kKeyBlockBytes / (kPanel * dc_max * sizeof(float)), 1, 32);
    const std::size_t width = std::min(block, p1 - p0) * kPanel;
    // Buffers sized for what this call scans: a single query over a small key set (a router's
    // pieces) would otherwise spend longer clearing them than scoring.
    const std::size_t row_panels = p1 - std::clamp(stored_panels, p0, p1);
    std::vector<float> packed(std::min(block, row_panels) * kPanel * dc_max);
    // With several chunks, every query's scores against the block accumulate here until the last
    // chunk; with one, a tile's scores are visited at once.
    const std::size_t rows = chunks > 1 ? round_up(q1 - q0, kTileQueries) : kTileQueries;
    std::vector<float> scores(rows * width);
    for (std::size_t pb = p0; pb < p1;) {
        // A block is all stored panels or all row-major ones, which are packed here chunk by chunk.
        const std::size_t pe = std::min({p1, pb + block, pb < stored_panels ? stored_panels : p1});
        const std::size_t first = pb * kPanel, count = std::min(pe * kPanel, keys.size()) - first;
        for (std::size_t c = 0; c < chunks; ++c) {
            const std::size_t t0 = c * kChunk, dc = std::min(kChunk, d - t0);
            const float* panels = keys.panels + first * d + t0 * kPanel;
            std::size_t stride = kPanel * d;
            if (pb >= stored_panels) {
                kern.pack(keys.rows + (first - keys.n_packed) * d, d, nullptr, count, t0, dc, packed.data());
                panels = packed.data();
                stride = kPanel * dc;
            }
            for (std::size_t qt = q0; qt < q1; qt += kTileQueries) {
                const std::size_t nt = std::min(kTileQueries, q1 - qt);
                float* out = scores.data() + (chunks > 1 ? (qt - q0) * width : 0);
                kern.dot_panels(queries + qt * d + t0, d, nt, panels, stride, count, dc, out, width, c > 0);
                if (chunks == 1) visit(qt, nt, first, count, static_cast<const float*>(out), width);
            }
        }
        for (std::size_t qt = q0; chunks > 1 && qt < q1; qt += kTileQueries) {
            const std::size_t nt = std::min(kTileQueries, q1 - qt);
            visit(qt, nt, first, count, static_cast<const float*>(scores.data() + (qt - q0) * width), width);
        }
        pb = pe;
    }
}

struct Hit {
    float score;
    std::int64_t id;
};

// Ranking order: higher score first, then lower id.
inline bool better(const Hit& a, const Hit& b) {
    return a.score > b.score || (a.score == b.score && a.id < b.id);
}

// Ranks after every real hit; heaps start full of these, so there is no size to track.
constexpr Hit kNoHit{kNegInf, std::numeric_limits<std::int64_t>::max()};

// heap[0..k) keeps its worst hit at the root. Puts h in place of the root and sifts it down.
inline void replace_worst(Hit* heap, std::size_t k, Hit h) {
    std::size_t i = 0;
    for (;;) {
        std::size_t c = 2 * i + 1;
        if (c >= k) break;
        if (c + 1 < k && better(heap[c], heap[c + 1])) ++c;  // the worse child
        if (!better(h, heap[c])) break;
        heap[i] = heap[c];
        i = c;
    }
    heap[i] = h;
}

// Offers scores[0..n) of keys id_of(0), id_of(1), ... to a heap of size k.
template <class IdOf>
inline void offer(Hit* heap, std::size_t k, const float* scores, std::size_t n, IdOf id_of) {
    float threshold = heap[0].score;
    // A tie with the root displaces it only where its id is lower: >= lets the exact comparison
    // in better() decide.
    auto consider = [&](std::size_t j) {
        if (scores[j] >= threshold) {
            const Hit h{scores[j], id_of(j)};
            if (better(h, heap[0])) {
                replace_worst(heap, k, h);
                threshold = heap[0].score;
            }
        }
    };
    std::size_t j = 0;
#if defined(__SSE2__)
    // Most scores fall below the threshold: test four at a time, look closer only at a hit.
    for (; j + 4 <= n; j += 4) {
        if (_mm_movemask_ps(_mm_cmpge_ps(_mm_loadu_ps(scores + j), _mm_set1_ps(threshold)))) {
            for (std::size_t t = j; t < j + 4; ++t) consider(t);
        }
    }
#endif
    for (; j < n; ++j) consider(j);
}

}  // namespace

void topk_dot(const float* queries, std::size_t nq, const KeySet& keys, std::size_t k,
              int num_threads, float* scores, std::int64_t* ids) {
    const Kernels kern = kernels_for(active_isa());
    const std::size_t n = keys.size(), d = keys.d, panels = num_panels(keys);
    const int threads = threads_for(num_threads, double(nq) * double(n) * double(d));
    // Few queries: every thread takes a share of the panels and the shares are merged at the end.
    // Many queries: every thread takes whole chunks of queries over all keys.
    const std::size_t qc = queries_per_chunk(d);
    std::size_t ranges = nq < std::size_t(threads) * qc ? std::size_t(threads) : 1;
    ranges = std::max<std::size_t>(1, std::min(ranges, panels));
    const std::size_t chunks = (nq + qc - 1) / qc;
    std::vector<Hit> heaps(ranges * nq * k, kNoHit);
    parallel_for(chunks * ranges, threads, [&](std::size_t task) {
        const std::size_t r = task % ranges, chunk = task / ranges;
        const std::size_t q0 = chunk * qc, q1 = std::min(nq, q0 + qc);
        Hit* range_heaps = heaps.data() + r * nq * k;
        scan(kern, queries, q0, q1, keys, panels * r / ranges, panels * (r + 1) / ranges,
             [&](std::size_t qt, std::size_t nt, std::size_t first, std::size_t count, const float* s,
                 std::size_t ld) {
                 for (std::size_t i = 0; i < nt; ++i) {
                     offer(range_heaps + (qt + i) * k, k, s + i * ld, count,
                           [first](std::size_t j) { return std::int64_t(first + j); });
                 }
             });
    });

    // Merge the ranges' heaps of each query and write them best first.
    const std::size_t merge_chunk = 256;
    parallel_for((nq + merge_chunk - 1) / merge_chunk, threads, [&](std::size_t chunk) {
        std::vector<Hit> all(ranges * k);
        for (std::size_t q = chunk * merge_chunk; q < std::min(nq, (chunk + 1) * merge_chunk); ++q) {
            for (std::size_t r = 0; r < ranges; ++r) {
                std::copy_n(heaps.data() + (r * nq + q) * k, k, all.data() + r * k);
            }
            std::partial_sort(all.begin(), all.begin() + k, all.end(), better);
            for (std::size_t j = 0; j < k; ++j) {
                scores[q * k + j] = all[j].score;
                ids[q * k + j] = all[j].id;
            }
        }
    });
}

void segment_max_dot(const float* queries, std::size_t nq, const KeySet& keys,
                     const std::int64_t* offsets, std::size_t num_segments, int num_threads,
                     float* scores, std::int64_t* ids) {
    const Kernels kern = kernels_for(active_isa());
    const std::size_t n = keys.size(), d = keys.d, C = num_segments;
    const int threads = threads_for(num_threads, double(nq) * double(n) * double(d));
    const std::size_t qc = queries_per_chunk(d);
    std::fill_n(scores, nq * C, kNegInf);
    std::fill_n(ids, nq * C, std::int64_t(-1));

    // Few queries: the keys are split into groups of whole panels, one task each. A segment that
    // starts before its group (it straddles the boundary) is kept apart for that group and merged
    // after, in group order, so no two tasks write one output and ties still keep the lower id.
    const std::size_t panels = num_panels(keys);
    const std::size_t groups =
        nq < std::size_t(threads) * qc ? std::min<std::size_t>(threads, panels) : 1;
    std::vector<std::size_t> straddling(groups, C);  // C: none
    for (std::size_t g = 1; g < groups; ++g) {
        const std::int64_t lo = std::int64_t(panels * g / groups * kPanel);
        const std::size_t seg = std::upper_bound(offsets, offsets + C, lo) - offsets - 1;
        if (offsets[seg] < lo) straddling[g] = seg;
    }
    std::vector<float> apart_scores(groups * nq, kNegInf);
    std::vector<std::int64_t> apart_ids(groups * nq, -1);
    const std::size_t chunks = (nq + qc - 1) / qc;

    parallel_for(chunks * groups, threads, [&](std::size_t task) {
        const std::size_t g = task % groups, chunk = task / groups;
        const std::size_t q0 = chunk * qc, q1 = std::min(nq, q0 + qc);
        scan(kern, queries, q0, q1, keys, panels * g / groups, panels * (g + 1) / groups,
             [&](std::size_t qt, std::size_t nt, std::size_t first, std::size_t count, const float* s,
                 std::size_t ld) {
                 const std::int64_t lo = std::int64_t(first), hi = lo + std::int64_t(count);
                 // The last segment starting at or before this block's first key.
                 const std::size_t seg = std::upper_bound(offsets, offsets + C, lo) - offsets - 1;
                 for (std::size_t i = 0; i < nt; ++i) {
                     const float* row = s + i * ld - lo;
                     for (std::size_t c = seg; c < C && offsets[c] < hi; ++c) {
                         const std::int64_t a = std::max(offsets[c], lo), b = std::min(offsets[c + 1], hi);
                         const bool apart = c == straddling[g];
                         float& best = apart ? apart_scores[g * nq + qt + i] : scores[(qt + i) * C + c];
                         std::int64_t& best_id = apart ? apart_ids[g * nq + qt + i] : ids[(qt + i) * C + c];
                         float top = best;
                         std::int64_t top_id = best_id;
                         // Branch-free (segments are short, so a branch would mispredict);
                         // strict, so on ties the earlier (lower) id stays.
                         for (std::int64_t j = a; j < b; ++j) {
                             const bool better = row[j] > top;
                             top = better ? row[j] : top;
                             top_id = better ? j : top_id;
                         }
                         best = top;
                         best_id = top_id;
                     }
                 }
             });
    });
    for (std::size_t g = 1; g < groups; ++g) {
        const std::size_t c = straddling[g];
        for (std::size_t q = 0; c < C && q < nq; ++q) {
            if (apart_scores[g * nq + q] > scores[q * C + c]) {  // strict: earlier groups win ties
                scores[q * C + c] = apart_scores[g * nq + q];
                ids[q * C + c] = apart_ids[g * nq + q];
            }
        }
    }
}

namespace {

// A query of a block probing a list: the list, the query's place in the block, and the probe's
// place among all (q * nprobe + j, for its offset).
struct BlockProbe {
    std::int64_t list;
    std::uint32_t query;
    std::size_t probe;
    bool operator<(const BlockProbe& o) const { return list < o.list || (list == o.list && query < o.query); }
};

// Lists that at most this many queries of a block probe are scored row by row, unpacked
// (packing costs about as much as scoring two queries; 2, 4 and 8 measured alike).
constexpr std::size_t kRowQueries = 2;

// A block of queries (queries, d floats each) scanning lists into their heaps (k a query).
struct ListScan {
    const Kernels& kern;
    const ListSet& lists;
    const float* queries;
    const float* offsets;  // per probe of all, or null
    std::size_t k;
    std::vector<Hit> heaps;
    std::vector<Pq4Table> tables;  // pq4 codes: the block's queries' tables
    std::vector<float> packed, probing, out;

    // The m queries of probes[0..m), all of one list: each reads its rows in place, or, when
    // more probe it, they gather and the list is packed once for them all.
    void list(const BlockProbe* probes, std::size_t m) {
        const std::size_t c = std::size_t(probes[0].list), size = std::size_t(lists.sizes[c]), d = lists.d;
        if (lists.codes == ListCodes::pq4) {
            const std::size_t stride = round_up(size, kPq4Block);
            out.resize(2 * stride);
            const auto* blocks = static_cast<const std::uint8_t*>(lists.rows[c]);
            for (std::size_t i = 0; i < m; i += 2) {  // two queries a pass over the codes
                const std::size_t count = std::min<std::size_t>(2, m - i);
                const Pq4Table* pair[2] = {&tables[probes[i].query], &tables[probes[i + count - 1].query]};
                float* scores[2] = {out.data(), out.data() + stride};
                pq4_scores(pair, count, blocks, size, lists.pq_m2, kern.isa, scores);
                for (std::size_t j = 0; j < count; ++j) take(probes[i + j], scores[j], c, 0, size);
            }
            return;
        }
        const bool halves = lists.codes == ListCodes::halves;
        if (m <= kRowQueries) {
            out.resize(size);
            for (std::size_t i = 0; i < m; ++i) {
                const float* query = queries + probes[i].query * d;
                if (halves) {
                    kern.dot_rows_half(query, static_cast<const std::uint16_t*>(lists.rows[c]), d, size, out.data());
                } else {
                    kern.dot_rows(query, static_cast<const float*>(lists.rows[c]), d, size, out.data());
                }
                take(probes[i], out.data(), c, 0, size);
            }
            return;
        }
        probing.resize(m * d);
        for (std::size_t i = 0; i < m; ++i) std::copy_n(queries + probes[i].query * d, d, probing.data() + i * d);
        packed.resize(kPanel * std::min(d, kChunk));
        out.resize(round_up(m, kTileQueries) * kPanel);
        for (std::size_t p = 0; p < size; p += kPanel) {
            const std::size_t count = std::min(kPanel, size - p);
            for (std::size_t t0 = 0; t0 < d; t0 += kChunk) {
                const std::size_t dc = std::min(kChunk, d - t0);
                if (halves) {
                    const auto* rows = static_cast<const std::uint16_t*>(lists.rows[c]);
                    kern.pack_half(rows + p * d, d, nullptr, count, t0, dc, packed.data());
                } else {
                    const auto* rows = static_cast<const float*>(lists.rows[c]);
                    kern.pack(rows + p * d, d, nullptr, count, t0, dc, packed.data());
                }
                for (std::size_t i = 0; i < m; i += kTileQueries) {
                    kern.dot_panels(probing.data() + i * d + t0, d, std::min(kTileQueries, m - i),
                                    packed.data(), kPanel * dc, count, dc, out.data() + i * kPanel, kPanel,
                                    t0 > 0);
                }
            }
            for (std::size_t i = 0; i < m; ++i) take(probes[i], out.data() + i * kPanel, c, p, count);
        }
    }

    // Offers the scores of keys [first, first + count) of list c to the probing query's heap.
    void take(const BlockProbe& probe, float* scores, std::size_t c, std::size_t first, std::size_t count) {
        if (offsets) {
            const float offset = offsets[probe.probe];
            for (std::size_t j = 0; j < count; ++j) scores[j] += offset;
        }
        offer(heaps.data() + probe.query * k, k, scores, count,
              [ids = lists.ids[c] + first](std::size_t j) { return ids[j]; });
    }
};

template <class Key>
void rescore_rows(const float* queries, std::size_t nq, const Key* keys, std::size_t d,
                  const std::int64_t* ids, std::size_t m, int num_threads, float* scores) {
    const Kernels kern = kernels_for(active_isa());
    const int threads = threads_for(num_threads, double(nq) * double(m) * double(d));
    const std::size_t per_task = 64;
    parallel_for((nq + per_task - 1) / per_task, threads, [&](std::size_t task) {
        std::vector<float> packed(kPanel * std::min(d, kChunk)), partial(kPanel);
        for (std::size_t q = task * per_task; q < std::min(nq, (task + 1) * per_task); ++q) {
            // The same packing and kernel as the searches, so the scores match theirs bit for bit.
            for (std::size_t g = 0; g < m; g += kPanel) {
                const std::size_t count = std::min(kPanel, m - g);
                const std::int64_t* panel_ids = ids + q * m + g;
                for (std::size_t t0 = 0; t0 < d; t0 += kChunk) {
                    const std::size_t dc = std::min(kChunk, d - t0);
                    if constexpr (std::is_same_v<Key, float>) {
                        kern.pack(keys, d, panel_ids, count, t0, dc, packed.data());
                    } else {
                        kern.pack_half(keys, d, panel_ids, count, t0, dc, packed.data());
                    }
                    kern.dot_panels(queries + q * d + t0, d, 1, packed.data(), kPanel * dc, count, dc,
                                    partial.data(), kPanel, t0 > 0);
                }
                for (std::size_t j = 0; j < count; ++j) {
                    scores[q * m + g + j] = panel_ids[j] < 0 ? kNegInf : partial[j];
                }
            }
        }
    });
}

}  // namespace

void rescore(const float* queries, std::size_t nq, const float* keys, std::size_t d,
             const std::int64_t* ids, std::size_t m, int num_threads, float* scores) {
    rescore_rows(queries, nq, keys, d, ids, m, num_threads, scores);
}

void rescore(const float* queries, std::size_t nq, const std::uint16_t* keys, std::size_t d,
             const std::int64_t* ids, std::size_t m, int num_threads, float* scores) {
    rescore_rows(queries, nq, keys, d, ids, m, num_threads, scores);
}

float score_over_norm(float score, const float* query, std::size_t d) {
    float squares = 0.f;
    for (std::size_t t = 0; t < d; ++t) squares += query[t] * query[t];
    return score / std::max(std::sqrt(squares), 1e-30f);
}

std::size_t Deepening::nprobe_for(float kth_score, const float* query, std::size_t d) const {
    const double feature = score_over_norm(kth_score, query, d);
    return std::size_t(nprobe[std::upper_bound(edges, edges + num_edges, feature) - edges]);
}

std::size_t scan_lists(const float* queries, std::size_t nq, const ListSet& lists,
                       const std::int64_t* probes, const float* offsets, std::size_t nprobe,
                       std::size_t k, const Deepening* deepening, int num_threads, float* scores,
                       std::int64_t* ids, std::int64_t* reached) {
    const Kernels kern = kernels_for(active_isa());
    const std::size_t d = lists.d;
    double probed_keys = 0;  // at most: a deepening scan stops short of some
    for (std::size_t i = 0; i < nq * nprobe; ++i) {
        if (probes[i] >= 0) probed_keys += double(lists.sizes[probes[i]]);
    }
    const int threads = threads_for(num_threads, probed_keys * double(d));
    // Large blocks of queries, so that many of a block probe each list: packing a list's panel
    // costs about as much as scoring one query against it (blocks of 128 queries, about 3-6 a
    // list on GloVe at recall 0.90, spent a quarter of the scan packing).
    constexpr std::size_t kMaxQueriesPerTask = 1024;
    const std::size_t per_task =
        std::clamp<std::size_t>((nq + threads - 1) / std::size_t(threads), 1, kMaxQueriesPerTask);
    const std::size_t tasks = (nq + per_task - 1) / per_task;
    std::vector<std::size_t> scanned(tasks, 0);
    parallel_for(tasks, threads, [&](std::size_t task) {
        const std::size_t q0 = task * per_task, q1 = std::min(nq, q0 + per_task);
        ListScan scan{kern, lists, queries + q0 * d, offsets, k,
                      std::vector<Hit>((q1 - q0) * k, kNoHit)};
        if (lists.codes == ListCodes::pq4) {
            scan.tables.resize(q1 - q0);
            for (std::size_t q = q0; q < q1; ++q) {
                pq4_table(queries + q * d, lists.codebook, lists.pq_m, lists.pq_m2, lists.pq_dsub,
                          kern.isa, scan.tables[q - q0]);
            }
        }
        std::vector<BlockProbe> pairs;
        // Scans probes [from(q), to(q)) of every query q of the block, list by list.
        const auto scan_probes = [&](auto from, auto to) {
            pairs.clear();
            for (std::size_t q = q0; q < q1; ++q) {
                for (std::size_t j = from(q); j < to(q); ++j) {
                    const std::int64_t c = probes[q * nprobe + j];
                    if (c >= 0 && lists.sizes[c] > 0) pairs.push_back({c, std::uint32_t(q - q0), q * nprobe + j});
                }
            }
            std::sort(pairs.begin(), pairs.end());
            for (std::size_t a = 0, b; a < pairs.size(); a = b) {
                for (b = a; b < pairs.size() && pairs[b].list == pairs[a].list;) ++b;
                scanned[task] += (b - a) * std::size_t(lists.sizes[pairs[a].list]);
                scan.list(pairs.data() + a, b - a);
            }
        };
        const std::size_t first = deepening ? deepening->first : nprobe;
        scan_probes([](std::size_t) { return std::size_t(0); }, [first](std::size_t) { return first; });
        for (std::size_t q = q0; q < q1; ++q) reached[q] = std::int64_t(first);
        if (deepening) {
            std::vector<Hit> found(k);
            for (std::size_t q = q0; q < q1; ++q) {
                std::copy_n(scan.heaps.data() + (q - q0) * k, k, found.begin());
                const auto kth = found.begin() + std::ptrdiff_t(deepening->kth - 1);
                std::nth_element(found.begin(), kth, found.end(), better);
                const float score = kth->id == kNoHit.id ? -std::numeric_limits<float>::max() : kth->score;
                const std::size_t deepest = deepening->nprobe_for(score, queries + q * d, d);
                reached[q] = std::int64_t(std::clamp(deepest, first, nprobe));
            }
            scan_probes([first](std::size_t) { return first; },
                        [reached](std::size_t q) { return std::size_t(reached[q]); });
        }
        for (std::size_t q = q0; q < q1; ++q) {
            Hit* heap = scan.heaps.data() + (q - q0) * k;
            std::sort(heap, heap + k, better);
            for (std::size_t j = 0; j < k; ++j) {
                const bool found = heap[j].id != kNoHit.id;
                scores[q * k + j] = found ? heap[j].score : -std::numeric_limits<float>::max();
                ids[q * k + j] = found ? heap[j].id : -1;
            }
        }
    });
    std::size_t total = 0;
    for (const std::size_t s : scanned) total += s;
    return total;
}

void pack_keys(const float* x, std::size_t n, std::size_t d, float* packed) {
    kernels_for(active_isa()).pack(x, d, nullptr, n, 0, d, packed);
}

void unpack_keys(const float* packed, std::size_t n, std::size_t d, float* x) {
    for (std::size_t i = 0; i < n; ++i) {
        const float* panel = packed + i / kPanel * kPanel * d;
        for (std::size_t t = 0; t < d; ++t) x[i * d + t] = panel[t * kPanel + i % kPanel];
    }
}

void topk_rows(const float* scores, std::size_t n, std::size_t C, std::size_t k, int num_threads,
               float* top_scores, std::int64_t* top_ids, const std::int64_t* labels) {
    const std::size_t rows_per_task = 256;
    // A comparison costs about as much as a multiply-add; a partial sort makes ~C log k of them.
    const int threads = threads_for(num_threads, double(n) * double(C) * std::log2(double(k) + 1));
    parallel_for((n + rows_per_task - 1) / rows_per_task, threads, [&](std::size_t task) {
        using Entry = std::pair<float, std::int64_t>;
        const auto better = [](const Entry& a, const Entry& b) {
            return a.first > b.first || (a.first == b.first && a.second < b.second);
        };
        std::vector<Entry> entries;  // a heap with the worst kept entry in front
        entries.reserve(k);
        for (std::size_t r = task * rows_per_task; r < std::min(n, (task + 1) * rows_per_task); ++r) {
            entries.clear();
            for (std::size_t c = 0; c < C; ++c) {
                if (labels && labels[r * C + c] < 0) continue;
                const float v = scores[r * C + c];
                const Entry e{std::isnan(v) ? kNegInf : v, std::int64_t(c)};
                if (entries.size() < k) {
                    entries.push_back(e);
                    std::push_heap(entries.begin(), entries.end(), better);
                } else if (better(e, entries.front())) {
                    std::pop_heap(entries.begin(), entries.end(), better);
                    entries.back() = e;
                    std::push_heap(entries.begin(), entries.end(), better);
                }
            }
            std::sort_heap(entries.begin(), entries.end(), better);
            for (std::size_t j = 0; j < entries.size(); ++j) {
                top_scores[r * k + j] = entries[j].first;
                top_ids[r * k + j] = labels ? labels[r * C + entries[j].second] : entries[j].second;
            }
            std::fill(top_scores + r * k + entries.size(), top_scores + (r + 1) * k,
                      -std::numeric_limits<float>::max());
            std::fill(top_ids + r * k + entries.size(), top_ids + (r + 1) * k, std::int64_t(-1));
        }
    });
}

void take_in_turn(const std::int64_t* a, std::size_t width_a, const std::int64_t* b,
                  std::size_t width_b, std::size_t n, std::size_t count, std::int64_t* out) {
    std::int64_t largest = -1;
    for (std::size_t i = 0; i < n * width_a; ++i) largest = std::max(largest, a[i]);
    for (std::size_t i = 0; i < n * width_b; ++i) largest = std::max(largest, b[i]);
    std::vector<char> taken(std::size_t(largest + 1), 0);  // cleared again after every row
    for (std::size_t r = 0; r < n; ++r) {
        std::int64_t* row = out + r * count;
        std::size_t filled = 0;
        for (std::size_t j = 0; filled < count && (j < width_a || j < width_b); ++j) {
            for (const std::int64_t c : {j < width_a ? a[r * width_a + j] : -1,
                                         j < width_b ? b[r * width_b + j] : -1}) {
                if (c >= 0 && filled < count && !taken[c]) {
                    taken[c] = 1;
                    row[filled++] = c;
                }
            }
        }
        for (std::size_t i = 0; i < filled; ++i) taken[row[i]] = 0;
        std::fill(row + filled, row + count, std::int64_t(-1));
    }
}

}  // namespace amips
