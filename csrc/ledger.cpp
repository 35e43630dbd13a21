#include "ledger.h"

#include <algorithm>
#include <vector>

#include "half.h"
#include "kernels.h"
#include "parallel.h"

namespace amips {

template <class Query>
void take_better_answers(const Query* queries, const float* query_norms, std::size_t d,
                         const std::int64_t* offsets, std::size_t num_groups, const float* keys,
                         const float* key_norms, const std::int64_t* ids,
                         const std::int64_t* key_offsets, const std::int64_t* key_rows,
                         int num_threads, float* scores, std::int64_t* answers,
                         std::uint8_t* changed) {
    const Kernels kern = kernels_for(active_isa());
    double work = 0;
    for (std::size_t g = 0; g < num_groups; ++g) {
        work += double(offsets[g + 1] - offsets[g]) * double(key_offsets[g + 1] - key_offsets[g]);
    }
    const int threads = threads_for(num_threads, work * double(d));
    parallel_for(num_groups, threads, [&](std::size_t g) {
        const std::int64_t* rows = key_rows + key_offsets[g];
        const std::size_t m = std::size_t(key_offsets[g + 1] - key_offsets[g]);
        if (m == 0) return;
        // Per query, the keys that can beat it: a prefix, the keys being by descending norm.
        const std::size_t first = std::size_t(offsets[g]), count = std::size_t(offsets[g + 1]) - first;
        std::vector<std::size_t> reach(count);
        std::size_t widest = 0;
        for (std::size_t i = 0; i < count; ++i) {
            const float bound = scores[first + i];
            std::size_t r = 0;
            while (r < m && key_norms[rows[r]] * query_norms[first + i] > bound) ++r;
            reach[i] = r;
            widest = std::max(widest, r);
        }
        if (widest == 0) return;
        const std::size_t ld = (widest + kPanel - 1) / kPanel * kPanel;  // room for whole panels
        std::vector<float> packed(packed_floats(widest, std::min(d, kChunk)));
        std::vector<float> dots(count * ld), tile_queries(kTileQueries * std::min(d, kChunk));
        for (std::size_t t0 = 0; t0 < d; t0 += kChunk) {
            const std::size_t dc = std::min(kChunk, d - t0);
            kern.pack(keys, d, rows, widest, t0, dc, packed.data());
            for (std::size_t i = 0; i < count; i += kTileQueries) {
                const std::size_t tile = std::min(kTileQueries, count - i);
                const std::size_t cols = *std::max_element(&reach[i], &reach[i] + tile);
                if (cols == 0) continue;
                for (std::size_t r = 0; r < tile; ++r) {
                    const Query* q = queries + (first + i + r) * d + t0;
                    for (std::size_t t = 0; t < dc; ++t) tile_queries[r * dc + t] = to_float(q[t]);
                }
                kern.dot_panels(tile_queries.data(), dc, tile, packed.data(), kPanel * dc, cols, dc,
                                dots.data() + i * ld, ld, t0 > 0);
            }
        }
        for (std::size_t i = 0; i < count; ++i) {
            const float* row = dots.data() + i * ld;
            for (std::size_t j = 0; j < reach[i]; ++j) {
                if (row[j] > scores[first + i]) {
                    scores[first + i] = row[j];
                    answers[first + i] = ids[rows[j]];
                    changed[first + i] = 1;
                }
            }
        }
    });
}

template void take_better_answers(const float*, const float*, std::size_t, const std::int64_t*,
                                   std::size_t, const float*, const float*, const std::int64_t*,
                                   const std::int64_t*, const std::int64_t*, int, float*,
                                   std::int64_t*, std::uint8_t*);
template void take_better_answers(const std::uint16_t*, const float*, std::size_t,
                                   const std::int64_t*, std::size_t, const float*, const float*,
                                   const std::int64_t*, const std::int64_t*, const std::int64_t*,
                                   int, float*, std::int64_t*, std::uint8_t*);

}  // namespace amips
