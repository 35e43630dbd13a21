// Insertion into a GraphSearch: hnswlib's algorithm (HierarchicalNSW::addPoint) on the walk's own
// arrays, so that a graph grows where it is walked, with no second copy and no copy after a change.
//
// Every score is one between codes, as the walk's: the element scored against is the "query",
// its float key times the codes' steps, and a candidate its code. hnswlib scores float32 rows;
// a code is a quarter of the bytes (d = 384: six cache lines against twenty-four), and an
// element's scores with other elements differ from the exact ones by the same offset (its key
// times the codes' lows), so every comparison the algorithm makes between two candidates of one
// element keeps its sense up to the codes' rounding.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <mutex>
#include <stdexcept>
#include <utility>
#include <vector>

#include "graph.h"
#include "kernels.h"
#include "parallel.h"
#include "prefetch.h"

namespace amips {
namespace {

using Scored = Beam::Scored;

// A function object, not a function: the sorts inline it.
struct Better {
    bool operator()(const Scored& a, const Scored& b) const { return a.first > b.first; }
};
constexpr Better better{};

// A uniform draw in (0, 1) from (seed, i): splitmix64's finaliser.
double uniform(std::uint64_t seed, std::uint64_t i) {
    std::uint64_t z = seed * 0x9E3779B97F4A7C15ULL + i + 0x632BE59BD9B4E019ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return (double(z >> 11) + 0.5) * 0x1.0p-53;
}

// Link lists are guarded by stripes of locks: an element's lock is held while its lists are read
// or written, never two at a time.
constexpr std::size_t kLockStripes = 4096;

}  // namespace

// One thread's insertions: a visited set, a beam and two scaled keys.
class GraphSearch::Builder {
public:
    Builder(GraphSearch& g, std::vector<std::mutex>& locks, std::mutex& top, std::size_t ef,
            bool fill_lists)
        : g_(g),
          kernels_(kernels_for(active_isa())),
          locks_(locks),
          top_(top),
          ef_(ef),
          fill_lists_(fill_lists),
          visited_(g.n_),
          aim_(g.code_dim_, 0.f),
          probe_(g.code_dim_, 0.f),
          offset_(g.r_),
          step_(g.r_) {
        for (std::size_t t = 0; t < g.r_; ++t) {
            offset_[t] = g.low_[t] * g.scale_[t];
            step_[t] = g.scale_[t] * g.scale_[t];
        }
    }

    // Links element e, whose key is `key`, into the graph.
    void insert(std::uint32_t e, const float* key) {
        const int level = g_.levels_[e];
        std::unique_lock<std::mutex> top_lock(top_);
        const int top_level = g_.max_level_;
        const std::uint32_t entry = g_.entry_;
        if (level <= top_level) top_lock.unlock();  // else held until e is the entry point
        aim_at(key);
        link_from(descend(entry, top_level, level), e, std::min(level, top_level));
        if (level > top_level) g_.entry_ = e, g_.max_level_ = level;
    }

    // Links element e, already in the graph, again where its new key `key` lies (its code made
    // already): hnswlib's updatePoint with every neighbour repaired.
    void relink(std::uint32_t e, const float* key) {
        if (g_.n_ == 1) return;
        const int level = g_.levels_[e];
        for (int l = 0; l <= level; ++l) {
            // Each old neighbour chooses again among e and the neighbours of e's neighbours.
            read_links(e, l);
            const std::vector<std::uint32_t> near = links_;
            pool_.assign(1, e);
            for (const std::uint32_t n : near) {
                pool_.push_back(n);
                read_links(n, l);
                pool_.insert(pool_.end(), links_.begin(), links_.end());
            }
            std::sort(pool_.begin(), pool_.end());
            pool_.erase(std::unique(pool_.begin(), pool_.end()), pool_.end());
            const std::size_t width = l == 0 ? g_.max_m0_ : g_.max_m_;
            for (const std::uint32_t n : near) {
                others_.clear();
                for (const std::uint32_t c : pool_) {
                    if (c != n) others_.push_back(c);
                }
                rank_by(n, others_);
                if (pruned_.size() > ef_) pruned_.resize(ef_);
                select(n, pruned_, width, kept_);
                std::lock_guard<std::mutex> lock(lock_of(n));
                write_links(n, l, kept_);
            }
        }
        aim_at(key);
        std::uint32_t start = g_.entry_;
        if (start == e) {  // the walk starts elsewhere: at e's best linked element
            read_links(e, g_.max_level_);
            if (links_.empty()) return;  // e is alone on its level
            start = links_.front();
        }
        link_from(descend(start, g_.max_level_, level), e, std::min(level, g_.max_level_));
    }

    // Adds the level-0 links base -> targets (count, in order), passing over those it has: into
    // the room its list has, then in place of the links there the heuristic would not choose
    // (those a full list took to fill it, the worst first). Returns how many were added.
    std::size_t link_to(std::uint32_t base, const std::uint32_t* targets, std::size_t count) {
        std::uint32_t* l = list(base, 0);
        std::uint32_t links = l[0] & 0xFFFF;
        const std::uint32_t before = links;
        auto has = [&](std::uint32_t t) {
            return t == base || std::find(l + 1, l + 1 + links, t) != l + 1 + links;
        };
        std::size_t i = 0;
        for (; i < count && links < g_.max_m0_; ++i) {
            if (!has(targets[i])) l[1 + links++] = targets[i];
        }
        l[0] = (l[0] & ~std::uint32_t(0xFFFF)) | links;
        std::size_t added = links - before;
        if (i == count) return added;
        others_.assign(l + 1, l + 1 + before);
        rank_by(base, others_);
        prune(base, pruned_, g_.max_m0_, kept_);
        // what may leave, the worst first: links the heuristic passes over, not among the targets
        const std::uint32_t* const end = targets + count;
        leaving_.clear();
        for (auto c = pruned_.rbegin(); c != pruned_.rend(); ++c) {
            if (std::find(kept_.begin(), kept_.end(), c->second) == kept_.end() &&
                std::find(targets, end, c->second) == end) {
                leaving_.push_back(c->second);
            }
        }
        std::size_t gone = 0;
        for (; i < count && gone < leaving_.size(); ++i) {
            if (has(targets[i])) continue;
            *std::find(l + 1, l + 1 + links, leaving_[gone++]) = targets[i];
            ++added;
        }
        return added;
    }

private:
    void aim_at(const float* key) {
        const float* along = g_.code_space(kernels_, key, 1, along_);
        for (std::size_t t = 0; t < g_.r_; ++t) aim_[t] = along[t] * g_.scale_[t];
    }

    // Greedy descent by aim_ from `start` on `top` down to the level above `level`.
    std::uint32_t descend(std::uint32_t start, int top, int level) {
        std::uint32_t current = start;
        float best = kernels_.dot_codes(aim_.data(), code(current), g_.code_dim_);
        for (int l = top; l > level; --l) {
            for (bool moved = true; moved;) {
                moved = false;
                read_links(current, l);
                for (const std::uint32_t n : links_) {
                    const float s = kernels_.dot_codes(aim_.data(), code(n), g_.code_dim_);
                    if (s > best) best = s, current = n, moved = true;
                }
            }
        }
        return current;
    }

    // e's links on levels `level` .. 0 from beams by aim_ starting at `current`, then e in the
    // links of those it chose. Only those make e reachable, so no other insertion walks e before
    // all its links are written (as hnswlib's lock on e for its whole insertion ensures): a beam
    // started at e while its lower levels were empty found e alone, and on two threads 8 of
    // 10,000 unit vectors in [0, 1]^16 ended with no in-link.
    void link_from(std::uint32_t current, std::uint32_t e, int level) {
        chosen_.resize(std::size_t(level) + 1);
        for (int l = level; l >= 0; --l) {
            beam(current, l);
            found_.erase(std::remove_if(found_.begin(), found_.end(),
                                        [e](const Scored& f) { return f.second == e; }),
                         found_.end());
            // hnswlib gives a new element M links on level 0 too; full lists take 2 M there
            select(e, found_, l == 0 && fill_lists_ ? g_.max_m0_ : g_.max_m_, chosen_[l]);
            {
                std::lock_guard<std::mutex> lock(lock_of(e));
                write_links(e, l, chosen_[l]);
            }
            if (!found_.empty()) current = found_.front().second;
        }
        for (int l = level; l >= 0; --l) {
            for (const std::uint32_t n : chosen_[l]) link_back(n, e, l);
        }
    }

    const std::uint8_t* code(std::uint32_t e) const {
        return g_.codes_.data() + std::size_t(e) * g_.code_dim_;
    }

    // The value e's code stands for times the codes' steps: a candidate's code was just read by
    // the beam, its float row (four times the bytes, if kept at all) would be read from memory.
    void scale_code(std::uint32_t e, std::vector<float>& out) const {
        const std::uint8_t* c = code(e);
        for (std::size_t t = 0; t < g_.r_; ++t) out[t] = offset_[t] + float(c[t]) * step_[t];
    }

    std::mutex& lock_of(std::uint32_t e) { return locks_[e % kLockStripes]; }

    std::uint32_t* list(std::uint32_t e, int level) {
        if (level == 0) return g_.links0_.data() + std::size_t(e) * (g_.max_m0_ + 1);
        return g_.upper_.data() + g_.upper_offsets_[e] + std::size_t(level - 1) * (g_.max_m_ + 1);
    }

    std::size_t list_bytes(int level) const {
        return ((level == 0 ? g_.max_m0_ : g_.max_m_) + 1) * sizeof(std::uint32_t);
    }

    // links_ = e's links on level, read under its lock.
    void read_links(std::uint32_t e, int level) {
        std::lock_guard<std::mutex> lock(lock_of(e));
        const std::uint32_t* l = list(e, level);
        links_.assign(l + 1, l + 1 + (l[0] & 0xFFFF));
    }

    // Keeps the flags hnswlib stores above a count.
    void write_links(std::uint32_t e, int level, const std::vector<std::uint32_t>& links) {
        std::uint32_t* l = list(e, level);
        l[0] = (l[0] & ~std::uint32_t(0xFFFF)) | std::uint32_t(links.size());
        std::copy(links.begin(), links.end(), l + 1);
    }

    // found_ = the ef_ live elements of best code score with aim_ a beam search on `level` from
    // `start` finds, best first.
    void beam(std::uint32_t start, int level) {
        beam_.reset(ef_);
        visited_.first_visit(start);
        const auto live = [this](std::uint32_t e) { return !g_.deleted_[e]; };
        beam_.offer(kernels_.dot_codes(aim_.data(), code(start), g_.code_dim_), start, live(start));
        for (std::uint32_t next; beam_.next(next);) {
            read_links(next, level);
            // Every fresh neighbour's code asked for before the first is scored, so that their
            // misses overlap (as the walk's): one build thread took 13-20% less time on GloVe.
            fresh_.resize(links_.size());
            fresh_.resize(visited_.first_visits(links_.data(), links_.size(), fresh_.data()));
            for (const std::uint32_t n : fresh_) ask_for(code(n), g_.code_dim_);
            scores_.resize(fresh_.size());
            kernels_.dot_code_rows(aim_.data(), g_.codes_.data(), g_.code_dim_, fresh_.data(),
                                   fresh_.size(), scores_.data());
            beam_.offer_all(scores_.data(), fresh_.data(), fresh_.size(), live);
            // The next expansion's links, likely out of cache.
            std::uint32_t upcoming;
            if (beam_.upcoming(upcoming)) ask_for(list(upcoming, level), list_bytes(level));
        }
        visited_.clear();
        found_.clear();
        for (std::size_t j = 0; j < beam_.size(); ++j) found_.emplace_back(beam_.score(j), beam_.element(j));
    }

    // hnswlib's heuristic: of the candidates of `base` (best first), up to m, each kept only when
    // no kept one scores higher with it than base does; with fill_lists_, the best of those it
    // passed over fill the list up to m (the paper's keepPrunedConnections).
    void select(std::uint32_t base, const std::vector<Scored>& candidates, std::size_t m,
                std::vector<std::uint32_t>& out) {
        out.clear();
        if (candidates.size() <= m) {
            for (const Scored& c : candidates) out.push_back(c.second);
            return;
        }
        prune(base, candidates, m, out);
        if (!fill_lists_) return;
        for (const Scored& c : candidates) {
            if (out.size() >= m) break;
            if (std::find(out.begin(), out.end(), c.second) == out.end()) out.push_back(c.second);
        }
    }

    // out = the heuristic's choice alone.
    void prune(std::uint32_t base, const std::vector<Scored>& candidates, std::size_t m,
               std::vector<std::uint32_t>& out) {
        out.clear();
        for (const Scored& c : candidates) {
            if (out.size() >= m) break;
            scale_code(c.second, probe_);
            const float to_base = kernels_.dot_codes(probe_.data(), code(base), g_.code_dim_);
            bool kept = true;
            for (const std::uint32_t o : out) {
                if (kernels_.dot_codes(probe_.data(), code(o), g_.code_dim_) > to_base) {
                    kept = false;
                    break;
                }
            }
            if (kept) out.push_back(c.second);
        }
    }

    // pruned_ = `others` with their scores with base's code value, best first.
    void rank_by(std::uint32_t base, const std::vector<std::uint32_t>& others) {
        scale_code(base, probe_);
        scores_.resize(others.size());
        kernels_.dot_code_rows(probe_.data(), g_.codes_.data(), g_.code_dim_, others.data(),
                               others.size(), scores_.data());
        pruned_.clear();
        for (std::size_t j = 0; j < others.size(); ++j) pruned_.emplace_back(scores_[j], others[j]);
        std::sort(pruned_.begin(), pruned_.end(), better);
    }

    // Adds e to n's links on level, or, when they are full, keeps what the heuristic chooses
    // among them and e.
    void link_back(std::uint32_t n, std::uint32_t e, int level) {
        const std::size_t width = level == 0 ? g_.max_m0_ : g_.max_m_;
        std::lock_guard<std::mutex> lock(lock_of(n));
        std::uint32_t* l = list(n, level);
        const std::uint32_t count = l[0] & 0xFFFF;
        if (std::find(l + 1, l + 1 + count, e) != l + 1 + count) return;
        if (count < width) {
            l[1 + count] = e;
            l[0] = (l[0] & ~std::uint32_t(0xFFFF)) | (count + 1);
            return;
        }
        others_.assign(l + 1, l + 1 + count);
        others_.push_back(e);
        rank_by(n, others_);
        select(n, pruned_, width, kept_);
        write_links(n, level, kept_);
    }

    GraphSearch& g_;
    const Kernels kernels_;
    std::vector<std::mutex>& locks_;
    std::mutex& top_;
    const std::size_t ef_;
    const bool fill_lists_;
    VisitedSet visited_;
    std::vector<std::uint32_t> links_, kept_, pool_, others_, fresh_, leaving_;
    std::vector<float> scores_;  // the code scores of fresh_, or of rank_by's others
    std::vector<std::vector<std::uint32_t>> chosen_;  // by level
    std::vector<float> aim_, probe_, offset_, step_;  // offset_ + code * step_: scale_code
    std::vector<float> along_;  // a key along the basis
    Beam beam_;
    std::vector<Scored> found_, pruned_;  // found_: a beam's live elements, best first
};

void GraphSearch::add(const float* keys, std::size_t count, std::size_t ef_construction,
                      std::uint64_t seed, int num_threads, bool fill_lists) {
    if (count == 0) return;
    if (n_ + count >= kMaxElements) {
        throw std::invalid_argument("the graph would have too many elements");
    }
    const std::size_t first = n_;
    if (first == 0) set_code_ranges(keys, count, nullptr, nullptr);
    if (first > 0) widen_code_ranges(keys, count);
    encode(first, count, keys);
    if (keep_keys_) keys_.insert(keys_.end(), keys, keys + count * d_);
    n_ = first + count;
    links0_.resize(n_ * (max_m0_ + 1), 0);
    deleted_.resize(n_, 0);
    const double mult = 1.0 / std::log(double(max_m_));
    for (std::size_t i = first; i < n_; ++i) {
        const int level = int(-std::log(uniform(seed, i)) * mult);
        upper_offsets_.push_back(std::int64_t(upper_.size()));
        levels_.push_back(level);
        upper_.resize(upper_.size() + std::size_t(level) * (max_m_ + 1), 0);
    }
    std::vector<std::mutex> locks(kLockStripes);
    std::mutex top;
    std::size_t next = first;
    if (max_level_ < 0) {  // the first element is the entry point
        entry_ = std::uint32_t(first), max_level_ = levels_[first];
        ++next;
    }
    // Elements handed out one at a time, in order, as hnswlib does: those inserted side by side
    // are neighbours in the order, and each sees the graph of nearly all before it.
    std::atomic<std::size_t> next_element{next};
    const int threads = threads_for(num_threads, double(count) * ef_construction * max_m0_ * d_);
    parallel_for(std::size_t(std::max(threads, 1)), threads, [&](std::size_t) {
        Builder builder(*this, locks, top, std::max<std::size_t>(ef_construction, 1), fill_lists);
        for (std::size_t e; (e = next_element++) < n_;) {
            builder.insert(std::uint32_t(e), keys + (e - first) * d_);
        }
    });
}

void GraphSearch::update(const std::uint32_t* elements, const float* keys, std::size_t count,
                         std::size_t ef_construction, bool fill_lists) {
    for (std::size_t i = 0; i < count; ++i) {
        if (elements[i] >= n_) throw std::invalid_argument("no element " + std::to_string(elements[i]));
    }
    if (count == 0) return;
    widen_code_ranges(keys, count);
    for (std::size_t i = 0; i < count; ++i) {
        if (keep_keys_) std::copy(keys + i * d_, keys + (i + 1) * d_, keys_.data() + std::size_t(elements[i]) * d_);
    }
    along_basis(keys, count, [&](const float* values, std::size_t from, std::size_t m) {
        for (std::size_t i = 0; i < m; ++i) {
            quantize(values + i * r_, codes_.data() + std::size_t(elements[from + i]) * code_dim_);
        }
    });
    std::vector<std::mutex> locks(kLockStripes);
    std::mutex top;
    Builder builder(*this, locks, top, std::max<std::size_t>(ef_construction, 1), fill_lists);
    for (std::size_t i = 0; i < count; ++i) builder.relink(elements[i], keys + i * d_);
}

std::size_t GraphSearch::link(const std::uint32_t* from, const std::uint32_t* to,
                              std::size_t count, int num_threads) {
    for (std::size_t i = 0; i < count; ++i) {
        const std::uint32_t bad = from[i] >= n_ ? from[i] : to[i];
        if (bad >= n_) throw std::invalid_argument("no element " + std::to_string(bad));
    }
    // Each source's targets together, in the order given.
    std::vector<std::size_t> order(count);
    for (std::size_t i = 0; i < count; ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(),
                     [from](std::size_t a, std::size_t b) { return from[a] < from[b]; });
    std::vector<std::uint32_t> targets(count);
    for (std::size_t i = 0; i < count; ++i) targets[i] = to[order[i]];
    std::vector<std::size_t> starts;
    for (std::size_t i = 0; i < count; ++i) {
        if (i == 0 || from[order[i]] != from[order[i - 1]]) starts.push_back(i);
    }
    starts.push_back(count);
    std::vector<std::mutex> locks(kLockStripes);  // unused: each source writes its list alone
    std::mutex top;
    const std::size_t sources = starts.size() - 1;
    std::atomic<std::size_t> next_source{0}, added{0};
    const int threads = threads_for(num_threads, double(count) * max_m0_ * d_);
    parallel_for(std::size_t(std::max(threads, 1)), threads, [&](std::size_t) {
        Builder builder(*this, locks, top, 1, false);
        std::size_t mine = 0;
        for (std::size_t s; (s = next_source++) < sources;) {
            mine += builder.link_to(from[order[starts[s]]], targets.data() + starts[s],
                                    starts[s + 1] - starts[s]);
        }
        added += mine;
    });
    return added;
}

void GraphSearch::mark_deleted(std::uint32_t element) {
    if (element >= n_) throw std::invalid_argument("no element " + std::to_string(element));
    deleted_[element] = 1;
    any_deleted_ = true;
}

void GraphSearch::unmark_deleted(std::uint32_t element) {
    if (element >= n_) throw std::invalid_argument("no element " + std::to_string(element));
    deleted_[element] = 0;
}

}  // namespace amips
