// The beam of a best-first graph search (hnswlib's searchBaseLayer), shared by the walk and the
// insertions: the ef best live elements found, in one array sorted best first with the expanded
// ones marked, in place of hnswlib's two heaps (a candidate heap and a found heap); an element
// that joins costs a count and a short move, where the heaps cost two sifts whose branches a walk
// cannot predict. Elements walked through but never kept (deleted, or refused by a filter) wait
// in a heap of their own, as hnswlib's candidates.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

namespace amips {

// Elements a graph may hold: a beam marks the expanded ones in their number's top bit.
constexpr std::size_t kMaxElements = std::size_t(1) << 31;

class Beam {
public:
    using Scored = std::pair<float, std::uint32_t>;

    // Empties the beam for a search of width ef >= 1.
    void reset(std::size_t ef) {
        ef_ = ef, size_ = 0, next_ = 0;
        scores_.resize(ef + 1);  // room for one past ef while an element joins
        elements_.resize(ef + 1);
        through_.clear();
        spilled_.clear();
    }

    // The score a neighbour must beat to be offered: the worst kept once ef are, else -inf.
    float bar() const {
        return size_ < ef_ ? -std::numeric_limits<float>::infinity() : scores_[size_ - 1];
    }

    // Takes element e of score s (above bar()): a live one is kept in order, after those of equal
    // score, the worst kept falling out to spilled() past ef; another waits to be walked through.
    void offer(float s, std::uint32_t e, bool live) {
        if (!live) {
            through_.emplace_back(s, e);
            std::push_heap(through_.begin(), through_.end(), best_on_top);
            return;
        }
        float* scores = scores_.data();
        std::uint32_t* elements = elements_.data();
        std::size_t at = 0;  // how many score at least s, counted without a branch on the scores
        for (std::size_t j = 0; j < size_; ++j) at += scores[j] >= s;
        std::memmove(scores + at + 1, scores + at, (size_ - at) * sizeof(float));
        std::memmove(elements + at + 1, elements + at, (size_ - at) * sizeof(std::uint32_t));
        scores[at] = s, elements[at] = e;
        if (++size_ > ef_) {
            --size_;
            spilled_.emplace_back(scores[size_], elements[size_] & ~kExpanded);
        }
        next_ = std::min(next_, at);
    }

    // Offers, in turn, each of elements (count) whose score (scores) beats bar(), live(e) telling
    // whether e is live: those that beat the bar as it stood are found without a branch on each
    // score, which a search cannot predict (the bar only rises as they join).
    template <class Live>
    void offer_all(const float* scores, const std::uint32_t* elements, std::size_t count, Live live) {
        const float bar_before = bar();
        for (std::size_t first = 0; first < count; first += 64) {
            const std::size_t m = std::min<std::size_t>(64, count - first);
            std::uint64_t beats = 0;
            for (std::size_t j = 0; j < m; ++j) beats |= std::uint64_t(scores[first + j] > bar_before) << j;
            for (; beats != 0; beats &= beats - 1) {
                const std::size_t j = first + std::size_t(__builtin_ctzll(beats));
                if (scores[j] > bar()) offer(scores[j], elements[j], live(elements[j]));
            }
        }
    }

    // The next element to expand, marked expanded, into e; false when the search is done
    // (hnswlib's rule: none is left, or the best left, one walked through, scores below the worst
    // of a full beam).
    bool next(std::uint32_t& e) {
        const bool kept_left = first_unexpanded() < size_;
        if (!through_.empty() && (kept_left ? through_.front().first > scores_[next_]
                                            : !(through_.front().first < bar()))) {
            e = through_.front().second;
            std::pop_heap(through_.begin(), through_.end(), best_on_top);
            through_.pop_back();
            return true;
        }
        if (!kept_left) return false;
        e = elements_[next_];
        elements_[next_] |= kExpanded;
        return true;
    }

    // The kept element next() gives unless a better one joins first (its links can be asked for
    // early); false where none is left.
    bool upcoming(std::uint32_t& e) {
        if (first_unexpanded() == size_) return false;
        e = elements_[next_];
        return true;
    }

    // The live elements kept, best first: size() of them.
    std::size_t size() const { return size_; }
    float score(std::size_t j) const { return scores_[j]; }
    std::uint32_t element(std::size_t j) const { return elements_[j] & ~kExpanded; }
    // What fell out of the kept past ef, in no order.
    std::vector<Scored>& spilled() { return spilled_; }

private:
    static constexpr std::uint32_t kExpanded = std::uint32_t(kMaxElements);
    // A function object, not a function: the heap inlines it (a function pointer is called).
    struct BestOnTop {
        bool operator()(const Scored& a, const Scored& b) const { return a.first < b.first; }
    };
    static constexpr BestOnTop best_on_top{};

    // Where the best kept element not yet expanded lies (size_ where none is).
    std::size_t first_unexpanded() {
        while (next_ < size_ && (elements_[next_] & kExpanded)) ++next_;
        return next_;
    }

    std::vector<float> scores_;
    std::vector<std::uint32_t> elements_;  // the top bit marks an expanded one
    std::size_t ef_ = 0, size_ = 0, next_ = 0;  // next_: none before it is left to expand
    std::vector<Scored> through_;  // a heap, the best on top
    std::vector<Scored> spilled_;
};

}  // namespace amips
