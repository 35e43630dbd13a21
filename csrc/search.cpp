#include "search.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <limits>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "kernels.h"
#include "parallel.h"

namespace amips {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Cache blocking: a block of keys stays in L2 while every query of a chunk passes over it, and a
// chunk of queries is small enough to stay in L2 beside it. Keys come from memory once per chunk.
constexpr std::size_t kKeyBlockBytes = 128 * 1024;
constexpr std::size_t kQueryChunkBytes = 256 * 1024;

struct Blocking {
    std::size_t keys_per_block;
    std::size_t queries_per_chunk;
};

Blocking blocking_for(std::size_t d) {
    const std::size_t row = d * sizeof(float);
    const std::size_t keys = std::clamp<std::size_t>(kKeyBlockBytes / row, kPanel, 2048) / kPanel * kPanel;
    const std::size_t queries =
        std::clamp<std::size_t>(kQueryChunkBytes / row, kTileQueries, 1024) / kTileQueries * kTileQueries;
    return {keys, queries};
}

// Visits queries [q0, q1) x keys [x0, x1) one (query tile, key block) at a time, key blocks outside:
// visit(first_query, num_queries, first_key, num_keys, scores, ld) with scores[r * ld + j] the
// product of query first_query + r and key first_key + j. Row-major keys are packed a block at a
// time; packed keys need x0 and block to be multiples of kPanel.
template <class Visit>
void scan(const Kernels& kern, const float* queries, std::size_t q0, std::size_t q1, const float* keys,
          bool keys_packed, std::size_t x0, std::size_t x1, std::size_t d, std::size_t block,
          Visit&& visit) {
    std::vector<float> packed(keys_packed ? 0 : packed_floats(block, d)), buf(kTileQueries * block);
    for (std::size_t xb = x0; xb < x1; xb += block) {
        const std::size_t nb = std::min(block, x1 - xb);
        const float* panels = keys + xb * d;
        if (!keys_packed) {
            kern.pack(panels, nullptr, nb, d, packed.data());
            panels = packed.data();
        }
        for (std::size_t qt = q0; qt < q1; qt += kTileQueries) {
            const std::size_t nt = std::min(kTileQueries, q1 - qt);
            kern.dot_tile(queries + qt * d, nt, panels, nb, d, buf.data(), block);
            visit(qt, nt, xb, nb, buf.data(), block);
        }
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

// Offers scores[0..n) of keys first_id.. to a heap of size k.
inline void offer(Hit* heap, std::size_t k, const float* scores, std::size_t n, std::int64_t first_id) {
    float threshold = heap[0].score;
    // Keys arrive in increasing id order, so a tie with the root never displaces it; >= lets the
    // exact comparison in better() decide anyway.
    auto consider = [&](std::size_t j) {
        if (scores[j] >= threshold) {
            const Hit h{scores[j], first_id + static_cast<std::int64_t>(j)};
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

void topk_dot(const float* queries, std::size_t nq, const float* keys, bool keys_packed, std::size_t n,
              std::size_t d, std::size_t k, int num_threads, float* scores, std::int64_t* ids) {
    const Kernels kern = kernels_for(active_isa());
    const Blocking blk = blocking_for(d);
    const int threads = threads_for(num_threads, double(nq) * double(n) * double(d));
    // Few queries: every thread takes a share of the keys and the shares are merged at the end.
    // Many queries: every thread takes whole chunks of queries over all keys.
    const std::size_t qc = blk.queries_per_chunk;
    std::size_t ranges = nq < std::size_t(threads) * qc ? std::size_t(threads) : 1;
    ranges = std::max<std::size_t>(1, std::min(ranges, n / blk.keys_per_block));
    const std::size_t chunks = (nq + qc - 1) / qc;
    const std::size_t kk = std::min(k, n);  // heap size; the rest of each row is padding

    std::vector<Hit> heaps(ranges * nq * kk, kNoHit);
    parallel_for(chunks * ranges, threads, [&](std::size_t task) {
        const std::size_t r = task % ranges, chunk = task / ranges;
        const std::size_t q0 = chunk * qc, q1 = std::min(nq, q0 + qc);
        const auto range_start = [&](std::size_t i) {
            return i == ranges ? n : n * i / ranges / kPanel * kPanel;  // whole panels
        };
        const std::size_t x0 = range_start(r), x1 = range_start(r + 1);
        Hit* range_heaps = heaps.data() + r * nq * kk;
        scan(kern, queries, q0, q1, keys, keys_packed, x0, x1, d, blk.keys_per_block,
             [&](std::size_t qt, std::size_t nt, std::size_t xb, std::size_t nb, const float* s,
                 std::size_t ld) {
                 for (std::size_t i = 0; i < nt; ++i) {
                     offer(range_heaps + (qt + i) * kk, kk, s + i * ld, nb, std::int64_t(xb));
                 }
             });
    });

    // Merge the ranges' heaps of each query and write them best first, padded to k.
    const std::size_t merge_chunk = 256;
    parallel_for((nq + merge_chunk - 1) / merge_chunk, threads, [&](std::size_t chunk) {
        std::vector<Hit> all(ranges * kk);
        for (std::size_t q = chunk * merge_chunk; q < std::min(nq, (chunk + 1) * merge_chunk); ++q) {
            for (std::size_t r = 0; r < ranges; ++r) {
                std::copy_n(heaps.data() + (r * nq + q) * kk, kk, all.data() + r * kk);
            }
            std::partial_sort(all.begin(), all.begin() + kk, all.end(), better);
            for (std::size_t j = 0; j < k; ++j) {
                const bool real = j < kk && all[j].id != kNoHit.id;
                scores[q * k + j] = real ? all[j].score : kNegInf;
                ids[q * k + j] = real ? all[j].id : -1;
            }
        }
    });
}

void segment_max_dot(const float* queries, std::size_t nq, const float* keys, std::size_t n,
                     std::size_t d, const std::int64_t* offsets, std::size_t num_segments,
                     int num_threads, float* scores, std::int64_t* ids) {
    const Kernels kern = kernels_for(active_isa());
    const Blocking blk = blocking_for(d);
    const int threads = threads_for(num_threads, double(nq) * double(n) * double(d));
    const std::size_t qc = blk.queries_per_chunk;
    const std::size_t C = num_segments;
    std::fill_n(scores, nq * C, kNegInf);
    std::fill_n(ids, nq * C, std::int64_t(-1));

    // Few queries: split the segments into groups of about equal key count (outputs stay disjoint).
    std::vector<std::size_t> group_start{0};
    if (nq < std::size_t(threads) * qc) {
        for (int g = 1; g < threads; ++g) {
            const std::int64_t target = std::int64_t(n * g / threads);
            const std::size_t s = std::lower_bound(offsets, offsets + C, target) - offsets;
            if (s > group_start.back() && s < C) group_start.push_back(s);
        }
    }
    group_start.push_back(C);
    const std::size_t groups = group_start.size() - 1;
    const std::size_t chunks = (nq + qc - 1) / qc;

    parallel_for(chunks * groups, threads, [&](std::size_t task) {
        const std::size_t g = task % groups, chunk = task / groups;
        const std::size_t q0 = chunk * qc, q1 = std::min(nq, q0 + qc);
        const std::size_t x0 = offsets[group_start[g]], x1 = offsets[group_start[g + 1]];
        scan(kern, queries, q0, q1, keys, false, x0, x1, d, blk.keys_per_block,
             [&](std::size_t qt, std::size_t nt, std::size_t xb, std::size_t nb, const float* s,
                 std::size_t ld) {
                 const std::int64_t lo = std::int64_t(xb), hi = std::int64_t(xb + nb);
                 // The last segment starting at or before this block's first key.
                 const std::size_t first = std::upper_bound(offsets, offsets + C, lo) - offsets - 1;
                 for (std::size_t i = 0; i < nt; ++i) {
                     const float* row = s + i * ld - lo;
                     for (std::size_t c = first; c < C && offsets[c] < hi; ++c) {
                         const std::int64_t a = std::max(offsets[c], lo), b = std::min(offsets[c + 1], hi);
                         float best = scores[(qt + i) * C + c];
                         std::int64_t best_id = ids[(qt + i) * C + c];
                         // Branch-free (segments are short, so a branch would mispredict);
                         // strict, so on ties the earlier (lower) id stays.
                         for (std::int64_t j = a; j < b; ++j) {
                             const bool better = row[j] > best;
                             best = better ? row[j] : best;
                             best_id = better ? j : best_id;
                         }
                         scores[(qt + i) * C + c] = best;
                         ids[(qt + i) * C + c] = best_id;
                     }
                 }
             });
    });
}

void rescore(const float* queries, std::size_t nq, const float* keys, std::size_t d,
             const std::int64_t* ids, std::size_t m, int num_threads, float* scores) {
    const Kernels kern = kernels_for(active_isa());
    const int threads = threads_for(num_threads, double(nq) * double(m) * double(d));
    const std::size_t chunk = 64;
    parallel_for((nq + chunk - 1) / chunk, threads, [&](std::size_t c) {
        std::vector<float> packed(packed_floats(m, d));
        for (std::size_t q = c * chunk; q < std::min(nq, (c + 1) * chunk); ++q) {
            // The same packing and kernel as the searches, so the scores match theirs bit for bit.
            kern.pack(keys, ids + q * m, m, d, packed.data());
            kern.dot_tile(queries + q * d, 1, packed.data(), m, d, scores + q * m, m);
            for (std::size_t j = 0; j < m; ++j) {
                if (ids[q * m + j] < 0) scores[q * m + j] = kNegInf;
            }
        }
    });
}

void pack_keys(const float* x, std::size_t n, std::size_t d, float* packed, std::size_t first) {
    const Kernels kern = kernels_for(active_isa());
    // The rest of a partly filled panel element by element, then whole panels.
    std::size_t i = 0;
    for (; i < n && (first + i) % kPanel != 0; ++i) {
        float* panel = packed + (first + i) / kPanel * kPanel * d;
        for (std::size_t t = 0; t < d; ++t) panel[t * kPanel + (first + i) % kPanel] = x[i * d + t];
    }
    kern.pack(x + i * d, nullptr, n - i, d, packed + (first + i) * d);
}

void unpack_keys(const float* packed, std::size_t n, std::size_t d, float* x) {
    for (std::size_t i = 0; i < n; ++i) {
        const float* panel = packed + i / kPanel * kPanel * d;
        for (std::size_t t = 0; t < d; ++t) x[i * d + t] = panel[t * kPanel + i % kPanel];
    }
}

void topk_rows(const float* scores, std::size_t n, std::size_t C, std::size_t k, int num_threads,
               float* top_scores, std::int64_t* top_ids) {
    const std::size_t kk = std::min(k, C), rows_per_task = 256;
    // A comparison costs about as much as a multiply-add; a partial sort makes ~C log k of them.
    const int threads = threads_for(num_threads, double(n) * double(C) * std::log2(double(kk) + 1));
    parallel_for((n + rows_per_task - 1) / rows_per_task, threads, [&](std::size_t task) {
        using Entry = std::pair<float, std::int64_t>;
        const auto better = [](const Entry& a, const Entry& b) {
            return a.first > b.first || (a.first == b.first && a.second < b.second);
        };
        std::vector<Entry> entries;  // a heap with the worst kept entry in front
        entries.reserve(kk);
        for (std::size_t r = task * rows_per_task; r < std::min(n, (task + 1) * rows_per_task); ++r) {
            entries.clear();
            for (std::size_t c = 0; c < C; ++c) {
                const float v = scores[r * C + c];
                const Entry e{std::isnan(v) ? kNegInf : v, std::int64_t(c)};
                if (entries.size() < kk) {
                    entries.push_back(e);
                    std::push_heap(entries.begin(), entries.end(), better);
                } else if (better(e, entries.front())) {
                    std::pop_heap(entries.begin(), entries.end(), better);
                    entries.back() = e;
                    std::push_heap(entries.begin(), entries.end(), better);
                }
            }
            std::sort_heap(entries.begin(), entries.end(), better);
            for (std::size_t j = 0; j < k; ++j) {
                top_scores[r * k + j] = j < kk ? entries[j].first : kNegInf;
                top_ids[r * k + j] = j < kk ? entries[j].second : -1;
            }
        }
    });
}

}  // namespace amips
