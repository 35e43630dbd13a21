#include "graph.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>

#include "kernels.h"
#include "parallel.h"
#include "prefetch.h"
#include "require.h"

namespace amips {
namespace {

// "element i", or "element i on level l" above level 0: where a check of the graph failed.
std::string element_at(std::size_t element, std::int32_t level) {
    return "element " + std::to_string(element) +
           (level > 0 ? " on level " + std::to_string(level) : std::string());
}

// A link list of an element on a level: count (low 16 bits of the first word; hnswlib keeps flags
// above) then links.
void require_links(const std::uint32_t* list, std::size_t width, std::size_t n, std::size_t element,
                   std::int32_t level) {
    const std::uint32_t count = list[0] & 0xFFFF;
    AMIPS_REQUIRE(count <= width, element_at(element, level) + " has " + std::to_string(count) +
                                      " links, more than " + std::to_string(width));
    for (std::uint32_t j = 1; j <= count; ++j) {
        AMIPS_REQUIRE(list[j] < n, element_at(element, level) + " links to element " +
                                       std::to_string(list[j]) + ", outside the " +
                                       std::to_string(n) + " elements");
    }
}

using Scored = Beam::Scored;

}  // namespace

GraphSearch::GraphSearch(const float* keys, std::size_t n, std::size_t d,
                         const std::uint32_t* links0, std::size_t max_m0,
                         const std::uint32_t* upper, std::size_t upper_words,
                         const std::int64_t* upper_offsets, const std::int32_t* levels,
                         std::size_t max_m, std::uint32_t entry, const std::uint8_t* deleted,
                         const float* code_low, const float* code_scale,
                         const std::uint8_t* codes, const float* basis, std::size_t basis_rows)
    : n_(n),
      d_(d),
      r_(basis ? basis_rows : d),
      code_dim_((r_ + kCodeQuantum - 1) / kCodeQuantum * kCodeQuantum),
      max_m0_(max_m0),
      max_m_(max_m),
      entry_(entry),
      keep_keys_(keys != nullptr) {
    AMIPS_REQUIRE(n > 0 && d > 0 && max_m0 > 0 && max_m > 0, "the graph is empty or has no links");
    AMIPS_REQUIRE(n < kMaxElements, "the graph has too many elements");
    AMIPS_REQUIRE(entry < n, "the entry point " + std::to_string(entry) + " is outside the graph");
    for (std::size_t i = 0; i < n; ++i) {
        require_links(links0 + i * (max_m0 + 1), max_m0, n, i, 0);
    }
    // A link on level l must lead to an element that has level l, or the walk reads past it.
    const std::size_t block = max_m + 1;
    for (std::size_t i = 0; i < n; ++i) {
        AMIPS_REQUIRE(levels[i] >= 0, element_at(i, 0) + " has a negative level");
        if (levels[i] == 0) continue;
        const std::int64_t first = upper_offsets[i];
        AMIPS_REQUIRE(first >= 0 && std::size_t(first) + std::size_t(levels[i]) * block <= upper_words,
                      element_at(i, 0) + "'s upper levels lie outside their array");
        for (std::int32_t l = 1; l <= levels[i]; ++l) {
            const std::uint32_t* list = upper + first + (l - 1) * block;
            require_links(list, max_m, n, i, l);
            for (std::uint32_t j = 1; j <= (list[0] & 0xFFFF); ++j) {
                AMIPS_REQUIRE(levels[list[j]] >= l,
                              element_at(i, l) + " links to an element below that level");
            }
        }
    }
    max_level_ = levels[entry];
    for (std::size_t i = 0; i < n; ++i) {
        AMIPS_REQUIRE(levels[i] <= max_level_, "the entry point is not on the graph's top level");
    }
    links0_.assign(links0, links0 + n * (max_m0 + 1));
    upper_.assign(upper, upper + upper_words);
    upper_offsets_.assign(upper_offsets, upper_offsets + n);
    levels_.assign(levels, levels + n);
    deleted_.assign(deleted, deleted + n);
    any_deleted_ = std::any_of(deleted, deleted + n, [](std::uint8_t d) { return d != 0; });
    AMIPS_REQUIRE(keys || (codes && code_scale), "a graph needs its keys, or its codes and their ranges");
    AMIPS_REQUIRE(r_ > 0 && r_ <= d, "a basis needs 1 to d rows");
    // what a walk finds is ranked by its key, or by its code's values where every dimension is there
    AMIPS_REQUIRE(keys || !basis, "a graph of codes only takes no basis");
    if (basis) basis_ = Projection(basis, r_, d);
    if (code_scale) {
        for (std::size_t t = 0; t < r_; ++t) {
            AMIPS_REQUIRE(std::isfinite(code_low[t]) && std::isfinite(code_scale[t]) && code_scale[t] > 0,
                          "the codes' ranges must be finite, their steps positive");
        }
    }
    set_code_ranges(keys, n, code_low, code_scale);
    if (keys) {
        keys_.assign(keys, keys + n * d);
        encode(0, n, keys);
    } else {
        codes_.assign(n * code_dim_, 0);
        for (std::size_t i = 0; i < n; ++i) {
            std::copy(codes + i * r_, codes + (i + 1) * r_, codes_.begin() + i * code_dim_);
        }
    }
}

GraphSearch::GraphSearch(std::size_t d, std::size_t max_m, bool keep_keys, const float* basis,
                         std::size_t basis_rows)
    : n_(0),
      d_(d),
      r_(basis ? basis_rows : d),
      code_dim_((r_ + kCodeQuantum - 1) / kCodeQuantum * kCodeQuantum),
      max_m0_(2 * max_m),
      max_m_(max_m),
      entry_(0),
      max_level_(-1),
      keep_keys_(keep_keys),
      any_deleted_(false) {
    AMIPS_REQUIRE(d > 0 && max_m >= 2 && max_m <= 0x7FFF, "a graph needs d > 0 and 2 <= max_m < 32768");
    AMIPS_REQUIRE(r_ > 0 && r_ <= d, "a basis needs 1 to d rows");
    AMIPS_REQUIRE(keep_keys || !basis, "a graph of codes only takes no basis");
    if (basis) basis_ = Projection(basis, r_, d);
}

const float* GraphSearch::code_space(const Kernels& kern, const float* rows, std::size_t count,
                                     std::vector<float>& scratch) const {
    if (basis_.empty()) return rows;
    scratch.resize(count * r_);
    basis_.apply(kern, rows, count, scratch.data());
    return scratch.data();
}

void GraphSearch::along_basis(
    const float* rows, std::size_t count,
    const std::function<void(const float*, std::size_t, std::size_t)>& each) const {
    constexpr std::size_t kRows = 1024;
    const Kernels kern = kernels_for(active_isa());
    std::vector<float> scratch;
    for (std::size_t first = 0; first < count; first += kRows) {
        const std::size_t m = std::min(kRows, count - first);
        each(code_space(kern, rows + first * d_, m, scratch), first, m);
    }
}

void GraphSearch::set_code_ranges(const float* rows, std::size_t count, const float* low,
                                  const float* scale) {
    low_.assign(r_, 0.f);
    scale_.assign(code_dim_, 0.f);  // zero past r: the padding's codes count for nothing
    if (scale) {
        std::copy(low, low + r_, low_.begin());
        std::copy(scale, scale + r_, scale_.begin());
        return;
    }
    std::fill(low_.begin(), low_.end(), std::numeric_limits<float>::infinity());
    std::vector<float> high(r_, -std::numeric_limits<float>::infinity());
    span(rows, count, high);
    set_scales(high);
}

bool GraphSearch::widen_code_ranges(const float* rows, std::size_t count) {
    std::vector<float> high(r_), low = low_;
    for (std::size_t t = 0; t < r_; ++t) high[t] = low_[t] + 255.f * scale_[t];
    span(rows, count, high);
    bool wider = false;  // by more than the half step a code rounds off anyway
    for (std::size_t t = 0; t < r_; ++t) {
        wider |= low_[t] < low[t] - 0.5f * scale_[t] || high[t] > low[t] + 255.5f * scale_[t];
    }
    if (!wider) {
        low_ = low;
        return false;
    }
    const std::vector<float> scale(scale_.begin(), scale_.begin() + r_);
    set_scales(high);
    if (keep_keys_) {
        encode(0, n_, keys_.data());
        return true;
    }
    // Without the keys, each code is made again from the value it stood for.
    std::vector<float> value(r_);
    for (std::size_t i = 0; i < n_; ++i) {
        std::uint8_t* c = codes_.data() + i * code_dim_;
        for (std::size_t t = 0; t < r_; ++t) value[t] = low[t] + float(c[t]) * scale[t];
        quantize(value.data(), c);
    }
    return true;
}

void GraphSearch::span(const float* rows, std::size_t count, std::vector<float>& high) {
    along_basis(rows, count, [&](const float* values, std::size_t, std::size_t m) {
        for (std::size_t i = 0; i < m; ++i) {
            for (std::size_t t = 0; t < r_; ++t) {
                low_[t] = std::min(low_[t], values[i * r_ + t]);
                high[t] = std::max(high[t], values[i * r_ + t]);
            }
        }
    });
}

// Each dimension's range in 256 steps.
void GraphSearch::set_scales(const std::vector<float>& high) {
    for (std::size_t t = 0; t < r_; ++t) {
        scale_[t] = high[t] > low_[t] ? (high[t] - low_[t]) / 255.f : 1.f;
    }
}

void GraphSearch::encode(std::size_t first, std::size_t count, const float* rows) {
    codes_.resize(std::max(codes_.size(), (first + count) * code_dim_), 0);
    along_basis(rows, count, [&](const float* values, std::size_t from, std::size_t m) {
        for (std::size_t i = 0; i < m; ++i) {
            quantize(values + i * r_, codes_.data() + (first + from + i) * code_dim_);
        }
    });
}

void GraphSearch::quantize(const float* values, std::uint8_t* code) const {
    for (std::size_t t = 0; t < r_; ++t) {
        const float step = std::round((values[t] - low_[t]) / scale_[t]);
        code[t] = std::uint8_t(step >= 0.f ? std::min(step, 255.f) : 0.f);
    }
}

std::size_t GraphSearch::memory_bytes() const {
    return (links0_.size() + upper_.size()) * sizeof(std::uint32_t) +
           upper_offsets_.size() * sizeof(std::int64_t) + levels_.size() * sizeof(std::int32_t) +
           codes_.size() + deleted_.size() + (low_.size() + scale_.size() + keys_.size()) * sizeof(float) +
           basis_.bytes();
}

void GraphSearch::reserve(std::size_t capacity) {
    if (capacity <= n_) return;
    links0_.reserve(capacity * (max_m0_ + 1));
    codes_.reserve(capacity * code_dim_);
    if (keep_keys_) keys_.reserve(capacity * d_);
    upper_offsets_.reserve(capacity);
    levels_.reserve(capacity);
    deleted_.reserve(capacity);
}

void GraphSearch::copy_keys(const std::uint32_t* elements, std::size_t count, float* out) const {
    AMIPS_REQUIRE(keep_keys_, "a graph of codes only has no keys");
    for (std::size_t i = 0; i < count; ++i) {
        AMIPS_REQUIRE(elements[i] < n_, "no element " + std::to_string(elements[i]));
        std::copy(keys_.data() + std::size_t(elements[i]) * d_,
                  keys_.data() + std::size_t(elements[i] + 1) * d_, out + i * d_);
    }
}

// One thread's walk of one query at a time: its scaled query, visited set and beam.
// A thread runs two in turn (search), each asking for memory while the other scores, and keeps
// them between calls, so each starts with bind().
class GraphSearch::Walk {
public:
    // Walks g from now on, keeping only what `allowed` accepts (null: every live element).
    void bind(const GraphSearch& g, const Filter* allowed) {
        g_ = &g;
        allowed_ = allowed;
        kernels_ = kernels_for(active_isa());
        visited_.clear();  // a walk left by an exception (a filter's) still marks its elements
        visited_.fit(g.n_);
        query_.resize(g.code_dim_);
        ranked_.resize(g.code_dim_);
        fresh_.resize(g.max_m0_);
        scored_ = 0;
    }

    // Descends the upper levels greedily by `walk`, then seeds the beam of ef on level 0; the
    // best `spare` of what falls out of the beam's ef are ranked too.
    void start(const float* walk, std::size_t ef, std::size_t spare) {
        // The codes' offsets add the same amount to every score of a query: only the scales count.
        const float* along = g_->code_space(kernels_, walk, 1, along_);
        for (std::size_t t = 0; t < g_->r_; ++t) query_[t] = along[t] * g_->scale_[t];
        spare_ = spare;
        beam_.reset(ef);
        std::uint32_t current = g_->entry_;
        float best = score(current);
        for (int level = g_->max_level_; level > 0; --level) {
            for (bool moved = true; moved;) {
                moved = false;
                const std::uint32_t* list =
                    g_->upper_.data() + g_->upper_offsets_[current] + (level - 1) * (g_->max_m_ + 1);
                // A list's codes asked for together and scored in one call, so their misses overlap.
                const std::uint32_t count = list[0] & 0xFFFF;
                for (std::uint32_t j = 1; j <= count; ++j) ask_for(code_of(list[j]), g_->code_dim_);
                score_codes(list + 1, count);
                for (std::uint32_t j = 0; j < count; ++j) {
                    const float s = fresh_scores_[j];
                    if (s > best) best = s, current = list[j + 1], moved = true;
                }
            }
        }
        visited_.first_visit(current);
        beam_.offer(best, current, live(current));
    }

    // Takes the best element to expand and asks for the codes of its unvisited neighbours; false
    // when the beam is done (none left, or none better than the worst of ef found).
    bool expand() {
        std::uint32_t next;
        if (!beam_.next(next)) return false;
        // The next expansion's links, likely out of cache, arrive while these neighbours score.
        ask_for_next_links();
        const std::uint32_t* list = links_of(next);
        const std::uint32_t count = list[0] & 0xFFFF;
        fresh_count_ = visited_.first_visits(list + 1, count, fresh_.data());  // room: bind
        for (std::size_t j = 0; j < fresh_count_; ++j) ask_for(code_of(fresh_[j]), g_->code_dim_);
        return true;
    }

    // Scores what expand() asked for and offers the beam those that beat its bar.
    void score_fresh() {
        score_codes(fresh_.data(), fresh_count_);
        beam_.offer_all(fresh_scores_.data(), fresh_.data(), fresh_count_,
                        [this](std::uint32_t e) { return live(e); });
        // A neighbour scored better than the element asked for in expand() is expanded next.
        ask_for_next_links();
    }

    // Ranks what the beam found (rank_found) and clears the visited set for the next query.
    void finish(const float* rank, std::size_t k, float* scores, std::int64_t* ids) {
        rank_found(rank, k, scores, ids);
        visited_.clear();
    }

    std::size_t scored() const { return scored_; }

private:
    const std::uint32_t* links_of(std::uint32_t e) const {
        return g_->links0_.data() + std::size_t(e) * (g_->max_m0_ + 1);
    }

    const std::uint8_t* code_of(std::uint32_t e) const {
        return g_->codes_.data() + std::size_t(e) * g_->code_dim_;
    }

    // The code scores of elements (count) into fresh_scores_.
    void score_codes(const std::uint32_t* elements, std::size_t count) {
        fresh_scores_.resize(count);
        kernels_.dot_code_rows(query_.data(), g_->codes_.data(), g_->code_dim_, elements, count,
                               fresh_scores_.data());
        scored_ += count;
    }

    float score(std::uint32_t e) {
        ++scored_;
        return kernels_.dot_codes(query_.data(), code_of(e), g_->code_dim_);
    }

    void ask_for_next_links() {
        std::uint32_t e;
        if (beam_.upcoming(e)) ask_for(links_of(e), (g_->max_m0_ + 1) * sizeof(std::uint32_t));
    }

    // Kept if found: not deleted, and accepted by the filter (asked only for elements that would
    // join the beam).
    bool live(std::uint32_t e) const {
        return !(g_->any_deleted_ && g_->deleted_[e]) && !(allowed_ && !(*allowed_)(e));
    }

    // The k of the found elements with the largest exact inner products, best first.
    void rank_found(const float* rank, std::size_t k, float* scores, std::int64_t* ids) {
        const auto better = [](const Scored& a, const Scored& b) {  // ties to the lower element
            return a.first > b.first || (a.first == b.first && a.second < b.second);
        };
        std::vector<Scored>& spilled = beam_.spilled();
        if (spilled.size() > spare_) {  // the best spare_ of them
            std::nth_element(spilled.begin(), spilled.begin() + spare_, spilled.end(), better);
            spilled.resize(spare_);
        }
        exact_.clear();
        for (std::size_t j = 0; j < beam_.size(); ++j) exact_.emplace_back(0.f, beam_.element(j));
        for (const Scored& f : spilled) exact_.emplace_back(0.f, f.second);
        scored_ += exact_.size();
        if (g_->keep_keys_) {
            // each row read in place: one query's few rows cost less so than packed for the tiles
            const std::size_t d = g_->d_;
            for (const Scored& f : exact_) ask_for(g_->keys_.data() + std::size_t(f.second) * d, d * sizeof(float));
            for (Scored& f : exact_) {
                kernels_.dot_rows(rank, g_->keys_.data() + std::size_t(f.second) * d, d, 1, &f.first);
            }
        } else {  // the inner products with the values the codes stand for
            float offset = 0.f;  // (a graph of codes only has no basis)
            for (std::size_t t = 0; t < g_->d_; ++t) {
                ranked_[t] = rank[t] * g_->scale_[t];
                offset += rank[t] * g_->low_[t];
            }
            for (Scored& f : exact_) {
                const std::uint8_t* code = g_->codes_.data() + std::size_t(f.second) * g_->code_dim_;
                f.first = offset + kernels_.dot_codes(ranked_.data(), code, g_->code_dim_);
            }
        }
        const std::size_t kept = std::min(k, exact_.size());
        std::partial_sort(exact_.begin(), exact_.begin() + std::ptrdiff_t(kept), exact_.end(), better);
        for (std::size_t j = 0; j < k; ++j) {
            scores[j] = j < kept ? exact_[j].first : -std::numeric_limits<float>::infinity();
            ids[j] = j < kept ? std::int64_t(exact_[j].second) : -1;
        }
    }

    const GraphSearch* g_ = nullptr;
    const Filter* allowed_ = nullptr;
    Kernels kernels_{};
    VisitedSet visited_;
    std::vector<std::uint32_t> fresh_;  // the unvisited neighbours of the last expansion: fresh_count_
    std::size_t fresh_count_ = 0;
    std::vector<float> fresh_scores_;
    std::vector<float> query_, ranked_;  // ranked_: a codes-only graph's rank query
    std::vector<float> along_;  // a query along the basis
    // beam_: by code scores (1.2-1.3x the queries/s on GloVe with one array, not two heaps). Of
    // what falls out of it, the best `spare_` are ranked too (chosen at the end: a second heap kept
    // all along cost more): near the beam's edge the codes' rounding decides, and with ef close to
    // k (hnswlib's tests search k = ef = 100 among near duplicates) exact ranking of these too
    // keeps recall@k as exact beams'.
    Beam beam_;
    std::vector<Scored> exact_;  // what is ranked: exact score, element
    std::size_t spare_ = 0, scored_ = 0;
};

std::size_t GraphSearch::search(const float* walk, const float* rank, std::size_t nq,
                                std::size_t k, const std::int32_t* ef, int num_threads,
                                float* scores, std::int64_t* ids, const Filter* allowed) const {
    constexpr std::size_t kQueriesPerTask = 64;
    // Two walks a thread in turn: 1.1-1.15x the queries/s of one on GloVe; four gained no more.
    constexpr std::size_t kWalksPerThread = 2;
    const std::size_t tasks = (nq + kQueriesPerTask - 1) / kQueriesPerTask;
    std::vector<std::size_t> scored(tasks, 0);
    const std::int32_t widest = nq ? *std::max_element(ef, ef + nq) : 0;
    const int threads = threads_for(num_threads, double(nq) * widest * max_m0_ * d_);
    parallel_for(tasks, threads, [&](std::size_t task) {
        // Each thread keeps its walks (their visited sets and beams) between calls: allocating
        // them afresh took a third of a one-query search's time in the core on a 6.7k-key graph.
        // Only a filter runs other code mid-walk, and that code may search on this thread: a
        // filtered search gets walks of its own (an empty Walk allocates nothing until bound).
        thread_local Walk kept[kWalksPerThread];
        Walk own[kWalksPerThread];
        Walk* walkers = allowed ? own : kept;
        std::size_t next = task * kQueriesPerTask, query[kWalksPerThread];
        const std::size_t last = std::min(nq, (task + 1) * kQueriesPerTask);
        bool busy[kWalksPerThread];
        // Walk w takes the next query whose walk has an element to expand (none left: idle).
        const auto take_next = [&](std::size_t w) {
            for (busy[w] = false; !busy[w] && next < last; ++next) {
                query[w] = next;
                walkers[w].start(walk + next * d_, std::size_t(ef[next]), k);
                busy[w] = walkers[w].expand();
                if (!busy[w]) walkers[w].finish(rank + next * d_, k, scores + next * k, ids + next * k);
            }
        };
        for (std::size_t w = 0; w < kWalksPerThread; ++w) {
            walkers[w].bind(*this, allowed);
            take_next(w);
        }
        // The walks in turn: what one asked for arrives while the others score and expand.
        for (bool any = true; any;) {
            for (std::size_t w = 0; w < kWalksPerThread; ++w) {
                if (busy[w]) walkers[w].score_fresh();
            }
            any = false;
            for (std::size_t w = 0; w < kWalksPerThread; ++w) {
                if (busy[w] && !walkers[w].expand()) {
                    const std::size_t q = query[w];
                    walkers[w].finish(rank + q * d_, k, scores + q * k, ids + q * k);
                    take_next(w);
                }
                any |= busy[w];
            }
        }
        for (std::size_t w = 0; w < kWalksPerThread; ++w) scored[task] += walkers[w].scored();
    });
    std::size_t total = 0;
    for (const std::size_t s : scored) total += s;
    return total;
}

}  // namespace amips
