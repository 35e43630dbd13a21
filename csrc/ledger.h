// The answer ledger's check of new keys (amips_plugins.routing.ledger): which stored training
// queries a new key now answers best.
#pragma once

#include <cstddef>
#include <cstdint>

namespace amips {

// Queries (S, d) are grouped: group g is rows [offsets[g], offsets[g + 1]). The keys to check
// against group g are rows key_rows[key_offsets[g] .. key_offsets[g + 1]) of keys (n, d), listed
// by descending norm (key_norms, by row). Each query is scored only against the keys long enough
// to beat its best score (|x| |q| > scores[q], query_norms[q] = |q|); where a key's inner product
// beats it, scores[q] and answers[q] become that score and ids[row] (the first such key among
// equals), and changed[q] is set to 1. Groups run in parallel, on up to num_threads threads.
// Queries are float32 or, half the memory, float16 (their bits).
template <class Query>
void take_better_answers(const Query* queries, const float* query_norms, std::size_t d,
                         const std::int64_t* offsets, std::size_t num_groups, const float* keys,
                         const float* key_norms, const std::int64_t* ids,
                         const std::int64_t* key_offsets, const std::int64_t* key_rows,
                         int num_threads, float* scores, std::int64_t* answers,
                         std::uint8_t* changed);

}  // namespace amips
