// Python bindings: argument checks, output allocation and GIL release only. The Python layer
// (amips_plugins/_validation.py) converts and validates first; the checks here are cheap repeats
// for callers of _core itself. std::invalid_argument surfaces as ValueError.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "graph.h"
#include "kernels.h"
#include "ledger.h"
#include "parallel.h"
#include "pq4.h"
#include "require.h"
#include "routed.h"
#include "search.h"
#include "xbox.h"

namespace py = pybind11;

namespace amips {
namespace {

template <class T>
using Array = py::array_t<T, py::array::c_style | py::array::forcecast>;
// Integer arrays are taken only as int64 (no cast), so an unsigned id above 2**63 is refused rather
// than wrapped to a negative one.
template <class T>
using ExactArray = py::array_t<T, py::array::c_style>;
// (scores float32, ids int64): a std::tuple so that the generated stub names both array types.
using ScoresIds = std::tuple<py::array_t<float>, py::array_t<std::int64_t>>;

std::string shape_of(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

void require_matrix(const py::array& a, const std::string& name) {
    AMIPS_REQUIRE(a.ndim() == 2, name + " must be 2-D, got shape " + shape_of(a));
}

// numpy's float16: IEEE halves, taken as their bits.
bool is_half(const py::array& a) { return a.dtype().kind() == 'f' && a.dtype().itemsize() == 2; }

// A C-contiguous float32 array, or numpy's float16 (half the memory), taken as is, never copied;
// returns whether it is float16.
bool require_float_or_half(const py::array& a, const std::string& name) {
    const bool half = is_half(a);
    AMIPS_REQUIRE(half || a.dtype().is(py::dtype::of<float>()), name + " must be float32 or float16");
    AMIPS_REQUIRE(a.flags() & py::array::c_style, name + " must be C-contiguous");
    return half;
}

// queries (nq, d) and keys (n, d), n > 0.
void require_pair(const py::array& queries, const py::array& keys) {
    require_matrix(queries, "queries");
    require_matrix(keys, "keys");
    AMIPS_REQUIRE(keys.shape(0) > 0, "keys is empty: shape " + shape_of(keys));
    AMIPS_REQUIRE(queries.shape(1) == keys.shape(1), "queries " + shape_of(queries) + " and keys " +
                                                         shape_of(keys) + " differ in dimension");
}

// 0 asks for the default number of threads.
void require_threads(int num_threads) {
    AMIPS_REQUIRE(num_threads >= 0 && num_threads <= kMaxThreads,
                  "num_threads must lie in [0, " + std::to_string(kMaxThreads) + "], got " +
                      std::to_string(num_threads));
}

// 1 <= k <= available (results are never padded here: the Python layer pads, within a size cap).
void require_k(std::int64_t k, std::size_t available, const std::string& what) {
    AMIPS_REQUIRE(k > 0 && std::uint64_t(k) <= available, "k = " + std::to_string(k) + " must lie in [1, " +
                                                              std::to_string(available) + "], the " + what);
}

// Allocates the (nq, k) results and runs topk_dot over keys (checked by the caller), GIL released.
ScoresIds run_topk(const Array<float>& queries, const KeySet& keys, std::int64_t k, int num_threads) {
    require_k(k, keys.size(), "number of keys");
    require_threads(num_threads);
    const std::size_t nq = queries.shape(0);
    py::array_t<float> scores({nq, std::size_t(k)});
    py::array_t<std::int64_t> ids({nq, std::size_t(k)});
    {
        py::gil_scoped_release release;
        topk_dot(queries.data(), nq, keys, std::size_t(k), num_threads, scores.mutable_data(),
                 ids.mutable_data());
    }
    return {scores, ids};
}

ScoresIds topk_dot_py(const Array<float>& queries, const Array<float>& keys, std::int64_t k,
                      int num_threads) {
    require_pair(queries, keys);
    const KeySet set{nullptr, 0, keys.data(), std::size_t(keys.shape(0)), std::size_t(keys.shape(1))};
    return run_topk(queries, set, k, num_threads);
}

// A 1-D float32 buffer of whole panels: how many keys of dimension d it can hold.
std::size_t panel_capacity(const py::array& packed, std::size_t d) {
    AMIPS_REQUIRE(packed.ndim() == 1 && packed.dtype().is(py::dtype::of<float>()) &&
                      (packed.flags() & py::array::c_style),
                  "packed keys must be a contiguous 1-D float32 array, got shape " + shape_of(packed));
    AMIPS_REQUIRE(d > 0, "the dimension must be positive");
    return std::size_t(packed.size()) / d / kPanel * kPanel;  // kPanel * d could overflow
}

// n keys, counted in whole panels, that a buffer of capacity keys holds (n checked before any
// size is computed from it, so no product overflows).
void require_whole_panels(std::int64_t n, std::size_t capacity, const std::string& what) {
    AMIPS_REQUIRE(n >= 0 && n % std::int64_t(kPanel) == 0,
                  what + " must be a non-negative multiple of " + std::to_string(kPanel) + ", got " +
                      std::to_string(n));
    AMIPS_REQUIRE(std::uint64_t(n) <= capacity, what + " = " + std::to_string(n) +
                                                    " exceeds the buffer's " + std::to_string(capacity) +
                                                    " key slots");
}

// The keys of a buffer filled by pack_keys (its first n_packed) and then the rows of tail, for
// queries of the same dimension.
KeySet packed_keys(const Array<float>& queries, const py::array& panels, std::int64_t n_packed,
                   const Array<float>& tail) {
    require_matrix(queries, "queries");
    require_matrix(tail, "tail");
    const std::size_t d = queries.shape(1);
    AMIPS_REQUIRE(std::size_t(tail.shape(1)) == d, "queries " + shape_of(queries) + " and tail " +
                                                       shape_of(tail) + " differ in dimension");
    require_whole_panels(n_packed, panel_capacity(panels, d), "n_packed");
    return {static_cast<const float*>(panels.data()), std::size_t(n_packed), tail.data(),
            std::size_t(tail.shape(0)), d};
}

ScoresIds topk_dot_packed_py(const Array<float>& queries, const py::array& panels,
                             std::int64_t n_packed, const Array<float>& tail, std::int64_t k,
                             int num_threads) {
    return run_topk(queries, packed_keys(queries, panels, n_packed, tail), k, num_threads);
}

void pack_keys_py(py::array& panels, std::int64_t first, const Array<float>& x) {
    require_matrix(x, "x");
    const std::size_t d = x.shape(1), capacity = panel_capacity(panels, d);
    require_whole_panels(first, capacity, "first");
    require_whole_panels(x.shape(0), capacity - std::size_t(first), "the number of rows");
    AMIPS_REQUIRE(panels.writeable(), "packed keys must be writeable");
    float* out = static_cast<float*>(panels.mutable_data()) + std::size_t(first) * d;
    py::gil_scoped_release release;
    pack_keys(x.data(), x.shape(0), d, out);
}

py::array_t<float> unpack_keys_py(const py::array& panels, std::int64_t n, std::int64_t d) {
    AMIPS_REQUIRE(d > 0, "d must be positive, got " + std::to_string(d));
    require_whole_panels(n, panel_capacity(panels, std::size_t(d)), "n");
    py::array_t<float> x({std::size_t(n), std::size_t(d)});
    unpack_keys(static_cast<const float*>(panels.data()), std::size_t(n), std::size_t(d),
                x.mutable_data());
    return x;
}

// Runs segment_max_dot over keys (checked by the caller) after checking the offsets.
ScoresIds run_segment_max(const Array<float>& queries, const KeySet& keys,
                          const ExactArray<std::int64_t>& offsets, int num_threads) {
    require_threads(num_threads);
    const std::int64_t n = std::int64_t(keys.size());
    AMIPS_REQUIRE(offsets.ndim() == 1 && offsets.shape(0) >= 2,
                  "offsets must be 1-D with at least 2 entries, got shape " + shape_of(offsets));
    const std::int64_t* off = offsets.data();
    const std::size_t C = offsets.shape(0) - 1;
    AMIPS_REQUIRE(off[0] == 0 && off[C] == n, "offsets must start at 0 and end at the number of keys (" +
                                                  std::to_string(n) + "), got " + std::to_string(off[0]) +
                                                  " ... " + std::to_string(off[C]));
    for (std::size_t c = 0; c < C; ++c) AMIPS_REQUIRE(off[c] <= off[c + 1], "offsets must not decrease");
    const std::size_t nq = queries.shape(0);
    py::array_t<float> scores({nq, C});
    py::array_t<std::int64_t> ids({nq, C});
    {
        py::gil_scoped_release release;
        segment_max_dot(queries.data(), nq, keys, off, C, num_threads, scores.mutable_data(),
                        ids.mutable_data());
    }
    return {scores, ids};
}

ScoresIds segment_max_dot_py(const Array<float>& queries, const Array<float>& keys,
                             const ExactArray<std::int64_t>& offsets, int num_threads) {
    require_pair(queries, keys);
    const KeySet set{nullptr, 0, keys.data(), std::size_t(keys.shape(0)), std::size_t(keys.shape(1))};
    return run_segment_max(queries, set, offsets, num_threads);
}

ScoresIds segment_max_dot_packed_py(const Array<float>& queries, const py::array& panels,
                                    std::int64_t n_packed, const Array<float>& tail,
                                    const ExactArray<std::int64_t>& offsets, int num_threads) {
    return run_segment_max(queries, packed_keys(queries, panels, n_packed, tail), offsets,
                           num_threads);
}

py::array_t<float> rescore_py(const Array<float>& queries, const py::array& keys,
                              const ExactArray<std::int64_t>& candidate_ids, int num_threads) {
    const bool half = require_float_or_half(keys, "keys");
    require_pair(queries, keys);
    require_threads(num_threads);
    require_matrix(candidate_ids, "candidate_ids");
    AMIPS_REQUIRE(candidate_ids.shape(0) == queries.shape(0),
                  "candidate_ids " + shape_of(candidate_ids) + " must have one row per query " +
                      shape_of(queries));
    const std::int64_t n = keys.shape(0);
    const std::int64_t* id = candidate_ids.data();
    for (py::ssize_t i = 0; i < candidate_ids.size(); ++i) {
        AMIPS_REQUIRE(id[i] >= -1 && id[i] < n, "candidate_ids must lie in [-1, " + std::to_string(n) +
                                                    "), found " + std::to_string(id[i]));
    }
    const std::size_t nq = queries.shape(0), m = candidate_ids.shape(1), d = keys.shape(1);
    py::array_t<float> scores({nq, m});
    {
        py::gil_scoped_release release;
        if (half) {
            rescore(queries.data(), nq, static_cast<const std::uint16_t*>(keys.data()), d, id, m,
                    num_threads, scores.mutable_data());
        } else {
            rescore(queries.data(), nq, static_cast<const float*>(keys.data()), d, id, m,
                    num_threads, scores.mutable_data());
        }
    }
    return scores;
}

// Views of inverted lists held by another library (faiss's): the arrays are kept alive here and
// checked once, so that a scan needs no conversion per list.
class ListViews {
public:
    ListViews(const std::vector<py::array>& rows, const std::vector<py::array>& ids, std::size_t d) {
        AMIPS_REQUIRE(rows.size() == ids.size(), std::to_string(rows.size()) + " lists of rows and " +
                                                     std::to_string(ids.size()) + " of ids");
        AMIPS_REQUIRE(d > 0, "the lists' dimension must be positive");
        const bool halves = !rows.empty() && is_half(rows[0]);
        set_.codes = halves ? ListCodes::halves : ListCodes::floats;
        const std::string type = halves ? "float16" : "float32";
        for (std::size_t c = 0; c < rows.size(); ++c) {
            const std::string name = "list " + std::to_string(c);
            const py::array& r = rows[c];
            const py::array& i = ids[c];
            const bool same = halves ? is_half(r) : r.dtype().is(py::dtype::of<float>());
            AMIPS_REQUIRE(same && (r.flags() & py::array::c_style) && r.ndim() == 2 &&
                              std::size_t(r.shape(1)) == d,
                          name + "'s rows must be C-contiguous " + type + " (n, " +
                              std::to_string(d) + "), as list 0's, got " + shape_of(r));
            AMIPS_REQUIRE(i.dtype().is(py::dtype::of<std::int64_t>()) && (i.flags() & py::array::c_style) &&
                              i.ndim() == 1 && i.shape(0) == r.shape(0),
                          name + "'s ids must be C-contiguous int64 (" + std::to_string(r.shape(0)) +
                              ",), got " + shape_of(i));
            add_list(r, i, r.shape(0));
        }
        point_set_at_lists(d);
    }

    // Lists of 4-bit codes in faiss's fast-scan blocks (pq4.h): each list's blocks, uint8 (at least
    // a whole block per 32 keys), its ids, and the codebook (m, 16, dim / m) float32.
    static ListViews pq4(const std::vector<py::array>& blocks, const std::vector<py::array>& ids,
                         const Array<float>& codebook, std::size_t dim) {
        AMIPS_REQUIRE(blocks.size() == ids.size(), std::to_string(blocks.size()) + " lists of blocks and " +
                                                       std::to_string(ids.size()) + " of ids");
        const std::size_t m = codebook.ndim() == 3 ? codebook.shape(0) : 0;
        AMIPS_REQUIRE(m > 0 && codebook.shape(1) == 16 && std::size_t(codebook.shape(2)) * m == dim,
                      "the codebook must be (m, 16, dim / m) for dim " + std::to_string(dim) + ", got " +
                          shape_of(codebook));
        ListViews views({}, {}, dim);
        const std::size_t dsub = dim / m;  // (m, 16, dsub) to pq4_table's (m, dsub, 16)
        views.codebook_.resize(m * 16 * dsub);
        for (std::size_t s = 0; s < m; ++s) {
            for (std::size_t c = 0; c < 16; ++c) {
                for (std::size_t t = 0; t < dsub; ++t) {
                    views.codebook_[(s * dsub + t) * 16 + c] = codebook.data()[(s * 16 + c) * dsub + t];
                }
            }
        }
        const std::size_t m2 = (m + 1) / 2 * 2;
        for (std::size_t c = 0; c < blocks.size(); ++c) {
            const std::string name = "list " + std::to_string(c);
            const py::array& b = blocks[c];
            const py::array& i = ids[c];
            AMIPS_REQUIRE(i.dtype().is(py::dtype::of<std::int64_t>()) && (i.flags() & py::array::c_style) &&
                              i.ndim() == 1,
                          name + "'s ids must be C-contiguous int64 (n,), got " + shape_of(i));
            const std::size_t need = (std::size_t(i.shape(0)) + kPq4Block - 1) / kPq4Block * m2 * 16;
            AMIPS_REQUIRE(b.dtype().is(py::dtype::of<std::uint8_t>()) && (b.flags() & py::array::c_style) &&
                              b.ndim() == 1 && std::size_t(b.shape(0)) >= need,
                          name + "'s blocks must be C-contiguous uint8 of at least " + std::to_string(need) +
                              " bytes, got " + shape_of(b));
            views.add_list(b, i, i.shape(0));
        }
        views.point_set_at_lists(dim);
        ListSet& set = views.set_;
        set.codes = ListCodes::pq4;
        set.codebook = views.codebook_.data(), set.pq_m = m, set.pq_m2 = m2, set.pq_dsub = dsub;
        return views;
    }

    const ListSet& set() const { return set_; }

private:
    void point_set_at_lists(std::size_t d) {
        set_.rows = row_data_.data(), set_.ids = id_data_.data(), set_.sizes = sizes_.data();
        set_.count = sizes_.size(), set_.d = d;
    }

    void add_list(const py::array& codes, const py::array& ids, std::int64_t size) {
        rows_.push_back(codes), ids_.push_back(ids);
        row_data_.push_back(codes.data());
        id_data_.push_back(static_cast<const std::int64_t*>(ids.data()));
        sizes_.push_back(size);
    }

    std::vector<py::array> rows_, ids_;
    std::vector<float> codebook_;
    std::vector<const void*> row_data_;
    std::vector<const std::int64_t*> id_data_;
    std::vector<std::int64_t> sizes_;
    ListSet set_;
};

// A calibrated search's rule for how far each query scans (see Deepening), its arrays owned and
// checked once.
class DeepeningRule {
public:
    DeepeningRule(std::int64_t first, std::int64_t kth, const Array<double>& edges,
                  const ExactArray<std::int64_t>& nprobe)
        : edges_(edges.data(), edges.data() + edges.size()),
          nprobe_(nprobe.data(), nprobe.data() + nprobe.size()) {
        AMIPS_REQUIRE(first > 0 && kth > 0, "first and kth must be positive, got " +
                                                std::to_string(first) + " and " + std::to_string(kth));
        AMIPS_REQUIRE(edges.ndim() == 1 && nprobe.ndim() == 1 && nprobe.size() == edges.size() + 1,
                      "nprobe " + shape_of(nprobe) + " must have one entry per group of edges " +
                          shape_of(edges));
        for (std::size_t i = 0; i < edges_.size(); ++i) {
            AMIPS_REQUIRE(std::isfinite(edges_[i]) && (i == 0 || edges_[i] > edges_[i - 1]),
                          "edges must be finite and increasing");
        }
        for (const std::int64_t n : nprobe_) {
            AMIPS_REQUIRE(n > 0, "nprobe must be positive, got " + std::to_string(n));
        }
        rule_.first = std::size_t(first), rule_.kth = std::size_t(kth);
        rule_.edges = edges_.data(), rule_.num_edges = edges_.size(), rule_.nprobe = nprobe_.data();
    }

    const Deepening& rule() const { return rule_; }

    py::array_t<std::int64_t> nprobe_for(const Array<float>& kth_scores, const Array<float>& queries) const {
        require_matrix(queries, "queries");
        AMIPS_REQUIRE(kth_scores.ndim() == 1 && kth_scores.shape(0) == queries.shape(0),
                      "kth_scores " + shape_of(kth_scores) + " must have one entry per query " +
                          shape_of(queries));
        const std::size_t n = queries.shape(0), d = queries.shape(1);
        py::array_t<std::int64_t> out(n);
        for (std::size_t i = 0; i < n; ++i) {
            out.mutable_data()[i] = std::int64_t(rule_.nprobe_for(kth_scores.data()[i], queries.data() + i * d, d));
        }
        return out;
    }

private:
    std::vector<double> edges_;
    std::vector<std::int64_t> nprobe_;
    Deepening rule_;
};

std::tuple<py::array_t<float>, py::array_t<std::int64_t>, std::size_t, py::array_t<std::int64_t>>
scan_lists_py(const Array<float>& queries, const ExactArray<std::int64_t>& probes,
              const ListViews& lists, std::int64_t k, const py::object& offsets_or_none,
              int num_threads, const py::object& deepening_or_none) {
    if (!deepening_or_none.is_none() && !py::isinstance<DeepeningRule>(deepening_or_none)) {
        throw py::type_error("deepening must be a Deepening or None");
    }
    const DeepeningRule* deepening =
        deepening_or_none.is_none() ? nullptr : &deepening_or_none.cast<const DeepeningRule&>();
    const ListSet& set = lists.set();
    require_matrix(queries, "queries");
    require_matrix(probes, "probes");
    require_threads(num_threads);
    AMIPS_REQUIRE(std::size_t(queries.shape(1)) == set.d,
                  "queries " + shape_of(queries) + " and the lists differ in dimension");
    AMIPS_REQUIRE(probes.shape(0) == queries.shape(0),
                  "probes " + shape_of(probes) + " must have one row per query " + shape_of(queries));
    AMIPS_REQUIRE(k > 0, "k must be positive, got " + std::to_string(k));
    const std::int64_t count = std::int64_t(set.count);
    for (py::ssize_t i = 0; i < probes.size(); ++i) {
        const std::int64_t c = probes.data()[i];
        AMIPS_REQUIRE(c >= -1 && c < count, "probes must lie in [-1, " + std::to_string(count) +
                                                "), found " + std::to_string(c));
    }
    Array<float> offsets;
    if (!offsets_or_none.is_none()) {
        offsets = offsets_or_none.cast<Array<float>>();
        AMIPS_REQUIRE(offsets.ndim() == 2 && offsets.shape(0) == probes.shape(0) &&
                          offsets.shape(1) == probes.shape(1),
                      "offsets " + shape_of(offsets) + " must have the shape of probes " + shape_of(probes));
    }
    if (deepening) {
        const Deepening& rule = deepening->rule();
        AMIPS_REQUIRE(rule.kth <= std::size_t(k) && rule.first <= std::size_t(probes.shape(1)),
                      "the deepening's kth " + std::to_string(rule.kth) + " and first " +
                          std::to_string(rule.first) + " must be at most k and the probes' width " +
                          shape_of(probes));
    }
    const float* offset_data = offsets_or_none.is_none() ? nullptr : offsets.data();
    const std::size_t nq = queries.shape(0);
    py::array_t<float> scores({nq, std::size_t(k)});
    py::array_t<std::int64_t> ids({nq, std::size_t(k)});
    py::array_t<std::int64_t> reached(nq);
    std::size_t scanned;
    {
        py::gil_scoped_release release;
        scanned = scan_lists(queries.data(), nq, set, probes.data(), offset_data, probes.shape(1),
                             std::size_t(k), deepening ? &deepening->rule() : nullptr, num_threads,
                             scores.mutable_data(), ids.mutable_data(), reached.mutable_data());
    }
    return {scores, ids, scanned, reached};
}

py::array_t<std::int64_t> take_in_turn_py(const ExactArray<std::int64_t>& a,
                                          const ExactArray<std::int64_t>& b, std::int64_t count,
                                          const py::object& a_labels_or_none) {
    require_matrix(a, "a");
    require_matrix(b, "b");
    AMIPS_REQUIRE(a.shape(0) == b.shape(0),
                  "a " + shape_of(a) + " and b " + shape_of(b) + " differ in their number of rows");
    AMIPS_REQUIRE(count >= 0, "count must be non-negative, got " + std::to_string(count));
    const std::size_t n = a.shape(0);
    // a's entries as rows of a_labels (a graph router's elements and their lists): mapped here,
    // in one call, where numpy took four (a tenth of a one-query routing)
    std::vector<std::int64_t> mapped;
    const std::int64_t* first = a.data();
    if (!a_labels_or_none.is_none()) {
        const auto labels = a_labels_or_none.cast<ExactArray<std::int64_t>>();
        AMIPS_REQUIRE(labels.ndim() == 1, "a_labels must be 1-D, got " + shape_of(labels));
        const std::int64_t size = labels.shape(0);
        mapped.resize(std::size_t(a.size()));
        for (std::size_t i = 0; i < mapped.size(); ++i) {
            const std::int64_t e = a.data()[i];
            AMIPS_REQUIRE(e < size, "a holds " + std::to_string(e) + ", beyond the " +
                                        std::to_string(size) + " labels");
            mapped[i] = e < 0 ? -1 : labels.data()[e];
        }
        first = mapped.data();
    }
    py::array_t<std::int64_t> out({n, std::size_t(count)});
    {
        py::gil_scoped_release release;
        take_in_turn(first, a.shape(1), b.data(), b.shape(1), n, std::size_t(count),
                     out.mutable_data());
    }
    return out;
}

ScoresIds topk_rows_py(const Array<float>& scores, std::int64_t k, int num_threads,
                       const py::object& labels_or_none) {
    require_matrix(scores, "scores");
    require_threads(num_threads);
    const std::size_t n = scores.shape(0), C = scores.shape(1);
    require_k(k, C, "number of columns");
    ExactArray<std::int64_t> labels;
    if (!labels_or_none.is_none()) {
        labels = labels_or_none.cast<ExactArray<std::int64_t>>();
        AMIPS_REQUIRE(labels.ndim() == 2 && labels.shape(0) == scores.shape(0) &&
                          labels.shape(1) == scores.shape(1),
                      "labels " + shape_of(labels) + " must have the shape of scores " + shape_of(scores));
    }
    const std::int64_t* label_data = labels_or_none.is_none() ? nullptr : labels.data();
    py::array_t<float> top_scores({n, std::size_t(k)});
    py::array_t<std::int64_t> top_ids({n, std::size_t(k)});
    {
        py::gil_scoped_release release;
        topk_rows(scores.data(), n, C, std::size_t(k), num_threads, top_scores.mutable_data(),
                  top_ids.mutable_data(), label_data);
    }
    return {top_scores, top_ids};
}

bool all_finite_py(const Array<float>& x) {
    const std::uint32_t* bits = reinterpret_cast<const std::uint32_t*>(x.data());
    const std::size_t size = x.size();
    py::gil_scoped_release release;
    // An exponent of all ones is Inf or NaN; OR-ing flags keeps the loop branch-free and vectorised.
    std::uint32_t bad = 0;
    for (std::size_t i = 0; i < size; ++i) bad |= (bits[i] & 0x7f800000u) == 0x7f800000u;
    return bad == 0;
}

// Checks x (n, dim), allocates the (n, dim + 1) result and fills it with fill(x, n, out), GIL released.
template <class Fill>
py::array_t<float> xbox_rows(const XboxTransform& t, const Array<float>& x, const char* name,
                             Fill fill) {
    require_matrix(x, name);
    AMIPS_REQUIRE(std::size_t(x.shape(1)) == t.dim(), std::string(name) + " must have " +
                                                          std::to_string(t.dim()) + " columns, got shape " +
                                                          shape_of(x));
    py::array_t<float> out({std::size_t(x.shape(0)), t.dim() + 1});
    float* o = out.mutable_data();
    {
        py::gil_scoped_release release;
        fill(x.data(), std::size_t(x.shape(0)), o);
    }
    return out;
}

// A contiguous 1-D array of n entries.
void require_vector(const py::array& a, std::size_t n, const std::string& name) {
    AMIPS_REQUIRE(a.ndim() == 1 && std::size_t(a.shape(0)) == n,
                  name + " must be 1-D with " + std::to_string(n) + " entries, got shape " + shape_of(a));
}

// Segments [offsets[g], offsets[g + 1]) of 0 .. total: num_segments + 1 non-decreasing entries.
void require_segments(const ExactArray<std::int64_t>& offsets, std::size_t total,
                      const std::string& name) {
    AMIPS_REQUIRE(offsets.ndim() == 1 && offsets.shape(0) >= 1, name + " must be 1-D and non-empty");
    const std::int64_t* o = offsets.data();
    bool ok = o[0] == 0 && o[offsets.shape(0) - 1] == std::int64_t(total);
    for (py::ssize_t i = 1; ok && i < offsets.shape(0); ++i) ok = o[i] >= o[i - 1];
    AMIPS_REQUIRE(ok, name + " must rise from 0 to " + std::to_string(total));
}

std::tuple<py::array_t<float>, py::array_t<std::int64_t>, py::array_t<std::uint8_t>>
take_better_answers_py(const py::array& queries, const Array<float>& query_norms,
                       const ExactArray<std::int64_t>& offsets, const Array<float>& scores,
                       const ExactArray<std::int64_t>& answers, const Array<float>& keys,
                       const Array<float>& key_norms, const ExactArray<std::int64_t>& ids,
                       const ExactArray<std::int64_t>& key_offsets,
                       const ExactArray<std::int64_t>& key_rows, int num_threads) {
    const bool half = require_float_or_half(queries, "queries");
    require_pair(queries, keys);
    require_threads(num_threads);
    const std::size_t S = queries.shape(0), n = keys.shape(0), d = keys.shape(1);
    require_vector(query_norms, S, "query_norms");
    require_vector(scores, S, "scores");
    require_vector(answers, S, "answers");
    require_vector(key_norms, n, "key_norms");
    require_vector(ids, n, "ids");
    require_segments(offsets, S, "offsets");
    const std::size_t groups = offsets.shape(0) - 1;
    AMIPS_REQUIRE(key_offsets.ndim() == 1 && std::size_t(key_offsets.shape(0)) == groups + 1,
                  "key_offsets must have one entry per group and one more");
    AMIPS_REQUIRE(key_rows.ndim() == 1, "key_rows must be 1-D");
    require_segments(key_offsets, key_rows.shape(0), "key_offsets");
    const std::int64_t* row = key_rows.data();
    for (py::ssize_t i = 0; i < key_rows.shape(0); ++i) {
        AMIPS_REQUIRE(row[i] >= 0 && row[i] < std::int64_t(n), "key_rows must lie in [0, " +
                                                                   std::to_string(n) + ")");
    }
    py::array_t<float> new_scores(S);
    py::array_t<std::int64_t> new_answers(S);
    py::array_t<std::uint8_t> changed(S);
    std::copy_n(scores.data(), S, new_scores.mutable_data());
    std::copy_n(answers.data(), S, new_answers.mutable_data());
    std::fill_n(changed.mutable_data(), S, std::uint8_t(0));
    {
        py::gil_scoped_release release;
        auto check = [&](const auto* q) {
            take_better_answers(q, query_norms.data(), d, offsets.data(), groups, keys.data(),
                                key_norms.data(), ids.data(), key_offsets.data(), row,
                                num_threads, new_scores.mutable_data(),
                                new_answers.mutable_data(), changed.mutable_data());
        };
        if (half) {
            check(static_cast<const std::uint16_t*>(queries.data()));
        } else {
            check(static_cast<const float*>(queries.data()));
        }
    }
    return {new_scores, new_answers, changed};
}

// The components a graph's codes hold for keys of dimension d: the rows of basis, a finite
// (r, d) with 0 < r <= d, or d without one.
std::size_t require_basis(const std::optional<Array<float>>& basis, std::size_t d) {
    if (!basis) return d;
    require_matrix(*basis, "basis");
    const std::size_t r = basis->shape(0);
    AMIPS_REQUIRE(std::size_t(basis->shape(1)) == d && r > 0 && r <= d,
                  "the basis must be (r, " + std::to_string(d) + ") with 0 < r <= " + std::to_string(d) +
                      ", got shape " + shape_of(*basis));
    AMIPS_REQUIRE(all_finite_py(*basis), "the basis must be finite");
    return r;
}

GraphSearch make_graph(const std::optional<Array<float>>& keys,
                       const ExactArray<std::uint32_t>& links0,
                       const ExactArray<std::uint32_t>& upper,
                       const ExactArray<std::int64_t>& upper_offsets,
                       const ExactArray<std::int32_t>& levels, std::int64_t max_m,
                       std::int64_t entry, const ExactArray<std::uint8_t>& deleted,
                       const std::optional<Array<float>>& code_low,
                       const std::optional<Array<float>>& code_scale,
                       const std::optional<ExactArray<std::uint8_t>>& codes,
                       const std::optional<Array<float>>& basis) {
    AMIPS_REQUIRE(keys.has_value() != codes.has_value(), "a graph takes its keys or its codes");
    const py::array& rows = keys ? py::array(*keys) : py::array(*codes);
    require_matrix(rows, keys ? "keys" : "codes");
    require_matrix(links0, "links0");
    AMIPS_REQUIRE(keys || !basis, "a graph of codes only takes no basis");
    const std::size_t n = rows.shape(0), d = rows.shape(1), r = require_basis(basis, d);
    AMIPS_REQUIRE(std::size_t(links0.shape(0)) == n && links0.shape(1) >= 2,
                  "links0 must have one row per key and room for a link, got shape " + shape_of(links0));
    AMIPS_REQUIRE(upper.ndim() == 1, "upper must be 1-D, got shape " + shape_of(upper));
    require_vector(upper_offsets, n, "upper_offsets");
    require_vector(levels, n, "levels");
    require_vector(deleted, n, "deleted");
    AMIPS_REQUIRE(max_m > 0 && entry >= 0, "max_m must be positive and entry non-negative");
    AMIPS_REQUIRE(code_low.has_value() == code_scale.has_value(),
                  "code_low and code_scale go together");
    AMIPS_REQUIRE(code_low || !codes, "codes need their ranges, code_low and code_scale");
    if (code_low) {
        require_vector(*code_low, r, "code_low");
        require_vector(*code_scale, r, "code_scale");
    }
    py::gil_scoped_release release;
    return GraphSearch(keys ? keys->data() : nullptr, n, d, links0.data(), links0.shape(1) - 1,
                       upper.data(), upper.size(), upper_offsets.data(), levels.data(),
                       std::size_t(max_m), std::uint32_t(std::min<std::int64_t>(entry, n)),
                       deleted.data(), code_low ? code_low->data() : nullptr,
                       code_scale ? code_scale->data() : nullptr, codes ? codes->data() : nullptr,
                       basis ? basis->data() : nullptr, r);
}

GraphSearch make_empty_graph(std::int64_t dim, std::int64_t max_m, bool keep_keys,
                             const std::optional<Array<float>>& basis) {
    AMIPS_REQUIRE(dim > 0 && max_m >= 2 && max_m < 32768,
                  "a graph needs dim > 0 and 2 <= max_m < 32768, got dim = " + std::to_string(dim) +
                      ", max_m = " + std::to_string(max_m));
    const std::size_t r = require_basis(basis, std::size_t(dim));
    return GraphSearch(std::size_t(dim), std::size_t(max_m), keep_keys, basis ? basis->data() : nullptr, r);
}

// Keys to link into graph g: finite rows of its dimension, with a positive ef_construction.
void require_graph_keys(const GraphSearch& g, const Array<float>& keys,
                        std::int64_t ef_construction) {
    require_matrix(keys, "keys");
    AMIPS_REQUIRE(std::size_t(keys.shape(1)) == g.dim(),
                  "keys must have " + std::to_string(g.dim()) + " columns, got shape " + shape_of(keys));
    AMIPS_REQUIRE(ef_construction > 0, "ef_construction must be positive");
    for (py::ssize_t i = 0; i < keys.size(); ++i) {
        AMIPS_REQUIRE(std::isfinite(keys.data()[i]), "keys must be finite");
    }
}

void graph_add_py(GraphSearch& g, const Array<float>& keys, std::int64_t ef_construction,
                  std::uint64_t seed, int num_threads, bool fill_lists) {
    require_graph_keys(g, keys, ef_construction);
    require_threads(num_threads);
    py::gil_scoped_release release;
    g.add(keys.data(), keys.shape(0), std::size_t(ef_construction), seed, num_threads, fill_lists);
}

// Elements (1-D int64) of graph g, each checked to be one of its elements.
std::vector<std::uint32_t> elements_of(const GraphSearch& g, const ExactArray<std::int64_t>& elements) {
    AMIPS_REQUIRE(elements.ndim() == 1, "elements must be 1-D, got shape " + shape_of(elements));
    std::vector<std::uint32_t> out(elements.size());
    for (py::ssize_t i = 0; i < elements.size(); ++i) {
        AMIPS_REQUIRE(elements.data()[i] >= 0 && std::size_t(elements.data()[i]) < g.size(),
                      "element " + std::to_string(elements.data()[i]) + " is not in the graph of " +
                          std::to_string(g.size()));
        out[i] = std::uint32_t(elements.data()[i]);
    }
    return out;
}

void graph_update_py(GraphSearch& g, const ExactArray<std::int64_t>& elements,
                     const Array<float>& keys, std::int64_t ef_construction, bool fill_lists) {
    const std::vector<std::uint32_t> at = elements_of(g, elements);
    require_graph_keys(g, keys, ef_construction);
    AMIPS_REQUIRE(std::size_t(keys.shape(0)) == at.size(),
                  "keys must have one row of " + std::to_string(g.dim()) + " per element, got shape " +
                      shape_of(keys));
    py::gil_scoped_release release;
    g.update(at.data(), keys.data(), at.size(), std::size_t(ef_construction), fill_lists);
}

py::array_t<float> graph_keys_py(const GraphSearch& g, const ExactArray<std::int64_t>& elements) {
    const std::vector<std::uint32_t> at = elements_of(g, elements);
    AMIPS_REQUIRE(g.keeps_keys(), "a graph of codes only has no keys");
    py::array_t<float> out({py::ssize_t(at.size()), py::ssize_t(g.dim())});
    g.copy_keys(at.data(), at.size(), out.mutable_data());
    return out;
}

template <class T>
py::array_t<T> copy_of(const T* data, std::vector<py::ssize_t> shape) {
    py::array_t<T> out(shape);
    std::copy(data, data + out.size(), out.mutable_data());
    return out;
}

// The constructor's arguments for the graph as it stands (copies).
py::dict graph_arrays_py(const GraphSearch& g) {
    AMIPS_REQUIRE(g.size() > 0, "the graph is empty");
    const py::ssize_t n = g.size(), d = g.dim(), r = g.code_values(), width = g.max_m0() + 1;
    py::dict out;
    if (g.keeps_keys()) {
        out["keys"] = copy_of(g.keys(), {n, d});
    } else {
        py::array_t<std::uint8_t> codes({n, r});
        for (py::ssize_t i = 0; i < n; ++i) {
            std::copy(g.codes() + i * g.code_dim(), g.codes() + i * g.code_dim() + r,
                      codes.mutable_data() + i * r);
        }
        out["codes"] = codes;
    }
    if (!g.basis().empty()) out["basis"] = copy_of(g.basis().basis(), {r, d});
    out["links0"] = copy_of(g.links0(), {n, width});
    out["upper"] = copy_of(g.upper(), {py::ssize_t(g.upper_words())});
    out["upper_offsets"] = copy_of(g.upper_offsets(), {n});
    out["levels"] = copy_of(g.levels(), {n});
    out["max_m"] = g.max_m();
    out["entry"] = g.entry();
    out["deleted"] = copy_of(g.deleted(), {n});
    out["code_low"] = copy_of(g.code_low(), {r});
    out["code_scale"] = copy_of(g.code_scale(), {r});
    return out;
}

// Each query's ef: ef[i] per query, one ef for all, or with groups (G, columns of rank) the ef[g]
// of the group whose direction has the largest inner product with its rank row (ties: lower g).
std::vector<std::int32_t> efs_of(const ExactArray<std::int32_t>& ef, const Array<float>& rank,
                                 const std::optional<Array<float>>& groups, std::int64_t k,
                                 int num_threads) {
    const std::size_t nq = rank.shape(0);
    AMIPS_REQUIRE(ef.ndim() == 1, "ef must be 1-D, got shape " + shape_of(ef));
    for (py::ssize_t i = 0; i < ef.size(); ++i) {
        AMIPS_REQUIRE(ef.data()[i] >= k, "every ef must be at least k = " + std::to_string(k) +
                                             ", got " + std::to_string(ef.data()[i]));
    }
    if (!groups) {
        if (ef.size() == 1) return std::vector<std::int32_t>(nq, ef.data()[0]);
        require_vector(ef, nq, "ef");
        return {ef.data(), ef.data() + nq};
    }
    AMIPS_REQUIRE(groups->ndim() == 2 && groups->shape(0) > 0 && groups->shape(1) == rank.shape(1),
                  "groups must be rows with rank's " + std::to_string(rank.shape(1)) +
                      " columns, got shape " + shape_of(*groups));
    const std::size_t G = groups->shape(0);
    require_vector(ef, G, "ef (one per group)");
    std::vector<float> best(nq);
    std::vector<std::int64_t> group(nq);
    if (nq > 0) {
        py::gil_scoped_release release;
        topk_dot(rank.data(), nq, KeySet{nullptr, 0, groups->data(), G, std::size_t(rank.shape(1))}, 1,
                 num_threads, best.data(), group.data());
    }
    std::vector<std::int32_t> out(nq);
    for (std::size_t i = 0; i < nq; ++i) {
        // NaN scores rank below every group: such a row is left without one
        AMIPS_REQUIRE(group[i] >= 0 && std::size_t(group[i]) < G,
                      "rank row " + std::to_string(i) + " has no finite inner product with the groups");
        out[i] = ef.data()[group[i]];
    }
    return out;
}

std::tuple<py::array_t<float>, py::array_t<std::int64_t>, std::size_t> graph_search_py(
    const GraphSearch& g, const Array<float>& walk, const Array<float>& rank, std::int64_t k,
    const ExactArray<std::int32_t>& ef, int num_threads, const std::optional<py::function>& filter,
    const std::optional<Array<float>>& groups, const std::optional<ExactArray<std::int64_t>>& labels) {
    require_matrix(walk, "walk");
    AMIPS_REQUIRE(std::size_t(walk.shape(1)) == g.dim(),
                  "walk must have " + std::to_string(g.dim()) + " columns, got shape " + shape_of(walk));
    AMIPS_REQUIRE(rank.ndim() == 2 && rank.shape(0) == walk.shape(0) && rank.shape(1) == walk.shape(1),
                  "rank " + shape_of(rank) + " must have the shape of walk " + shape_of(walk));
    const std::size_t nq = walk.shape(0);
    require_k(k, g.size(), "number of elements");
    require_threads(num_threads);
    if (labels) require_vector(*labels, g.size(), "labels");
    const std::vector<std::int32_t> efs = efs_of(ef, rank, groups, k, num_threads);
    py::array_t<float> scores({nq, std::size_t(k)});
    py::array_t<std::int64_t> ids({nq, std::size_t(k)});
    // The filter is called with the interpreter's lock held, from the search's threads.
    const GraphSearch::Filter allowed = [&filter](std::uint32_t e) {
        py::gil_scoped_acquire hold;
        return bool(py::bool_((*filter)(e)));
    };
    std::size_t computed;
    {
        py::gil_scoped_release release;
        computed = g.search(walk.data(), rank.data(), nq, std::size_t(k), efs.data(), num_threads,
                            scores.mutable_data(), ids.mutable_data(), filter ? &allowed : nullptr);
        if (labels) {
            std::int64_t* out = ids.mutable_data();
            for (std::size_t i = 0; i < nq * std::size_t(k); ++i) {
                if (out[i] >= 0) out[i] = labels->data()[out[i]];
            }
        }
    }
    return {scores, ids, computed};
}

// AmortizedIVF's calibrated search in one call (routed.h): (scores, ids, each query's lists
// scanned, keys scanned, lists scanned, the walk's inner products, routing seconds).
std::tuple<py::array_t<float>, py::array_t<std::int64_t>, py::array_t<std::int64_t>, std::size_t,
           std::size_t, std::size_t, double>
routed_search_py(const Array<float>& queries, const GraphSearch& graph,
                 const ExactArray<std::int64_t>& element_lists, std::int64_t beam, std::int64_t nprobe,
                 const py::array& panels, std::int64_t n_packed, const Array<float>& tail,
                 bool in_turn, const std::optional<Array<float>>& centroid_rows,
                 const ListViews& lists, const DeepeningRule& deepening, std::int64_t depth,
                 const std::optional<py::array>& raw_keys, std::int64_t k, int num_threads) {
    const ListSet& set = lists.set();
    require_matrix(queries, "queries");
    require_threads(num_threads);
    const std::size_t d = set.d, count = set.count;
    AMIPS_REQUIRE(std::size_t(queries.shape(1)) == d && graph.dim() == d,
                  "queries " + shape_of(queries) + ", the graph (dim " + std::to_string(graph.dim()) +
                      ") and the lists (dim " + std::to_string(d) + ") must agree in dimension");
    // each element's list is checked where the walk finds it: reading every element's here took
    // an eighth of a one-query search over 28k pieces
    require_vector(element_lists, graph.size(), "element_lists");
    AMIPS_REQUIRE(beam > 0 && graph.size() > 0, "the walk needs a positive beam and a graph of pieces");
    const KeySet centroids = packed_keys(queries, panels, n_packed, tail);
    AMIPS_REQUIRE(centroids.size() == count, std::to_string(centroids.size()) + " centroids for " +
                                                 std::to_string(count) + " lists");
    AMIPS_REQUIRE(nprobe > 0 && std::size_t(nprobe) <= count,
                  "nprobe must lie in [1, " + std::to_string(count) + "], got " + std::to_string(nprobe));
    if (centroid_rows) {
        AMIPS_REQUIRE(centroid_rows->ndim() == 2 && std::size_t(centroid_rows->shape(0)) == count &&
                          std::size_t(centroid_rows->shape(1)) == d,
                      "centroid_rows must be (" + std::to_string(count) + ", " + std::to_string(d) +
                          "), got " + shape_of(*centroid_rows));
    }
    RawRows raw;
    if (raw_keys) {
        raw.half = require_float_or_half(*raw_keys, "raw_keys");
        require_matrix(*raw_keys, "raw_keys");
        AMIPS_REQUIRE(std::size_t(raw_keys->shape(1)) == d, "raw_keys " + shape_of(*raw_keys) +
                                                                 " must have the lists' dimension");
        raw.data = raw_keys->data(), raw.n = raw_keys->shape(0);
    }
    AMIPS_REQUIRE(k > 0 && (raw_keys ? depth >= k : depth == k),
                  "depth must be at least k with raw keys, k without; got depth " + std::to_string(depth) +
                      " and k " + std::to_string(k));
    const Deepening& rule = deepening.rule();
    AMIPS_REQUIRE(rule.kth <= std::size_t(depth) && rule.first <= std::size_t(nprobe),
                  "the deepening's kth " + std::to_string(rule.kth) + " and first " +
                      std::to_string(rule.first) + " must be at most depth and nprobe");
    Routing routing;
    routing.graph = &graph, routing.element_lists = element_lists.data(), routing.lists = count;
    routing.beam = std::size_t(beam), routing.centroids = centroids, routing.in_turn = in_turn;
    routing.centroid_rows = centroid_rows ? centroid_rows->data() : nullptr;
    const std::size_t nq = queries.shape(0);
    py::array_t<float> scores({nq, std::size_t(k)});
    py::array_t<std::int64_t> ids({nq, std::size_t(k)});
    py::array_t<std::int64_t> reached(nq);
    RoutedCounts counts;
    {
        py::gil_scoped_release release;
        counts = routed_search(queries.data(), nq, routing, std::size_t(nprobe), set, rule,
                               std::size_t(depth), raw, std::size_t(k), num_threads,
                               scores.mutable_data(), ids.mutable_data(), reached.mutable_data());
    }
    return {scores, ids, reached, counts.distances, counts.probed, counts.pieces_scored,
            counts.routing_seconds};
}

}  // namespace
}  // namespace amips

PYBIND11_MODULE(_core, m) {
    using namespace amips;
    m.doc() = "amips_plugins C++ core: exact inner-product search and the Xbox transform.";

    m.def("simd_level", [] { return isa_name(active_isa()); },
          "Instruction set in use: the best supported, capped by AMIPS_SIMD.");
    m.def("detected_simd_level", [] { return isa_name(detected_isa()); },
          "Best instruction set the CPU and OS support, ignoring AMIPS_SIMD.");
    m.attr("max_threads") = kMaxThreads;
    m.def("default_num_threads", &default_threads,
          "Threads a call uses when it names none: AMIPS_NUM_THREADS, else OMP_NUM_THREADS, else "
          "the CPUs this process may run on.");
    m.def("topk_dot", &topk_dot_py, py::arg("queries"), py::arg("keys"), py::arg("k"),
          py::arg("num_threads") = 0);
    m.def("topk_dot_packed", &topk_dot_packed_py, py::arg("queries"), py::arg("panels"),
          py::arg("n_packed"), py::arg("tail"), py::arg("k"), py::arg("num_threads") = 0,
          "topk_dot over the first n_packed keys of a buffer filled by pack_keys, then the rows "
          "of tail (ids n_packed..); k at most their number.");
    m.def("pack_keys", &pack_keys_py, py::arg("panels"), py::arg("first"), py::arg("x"),
          "Packs the rows of x (a multiple of 64) into key slots first.. of a panel buffer.");
    m.def("unpack_keys", &unpack_keys_py, py::arg("panels"), py::arg("n"), py::arg("d"),
          "The first n keys (a multiple of 64) of a panel buffer as rows (n, d).");
    m.def("segment_max_dot", &segment_max_dot_py, py::arg("queries"), py::arg("keys"),
          py::arg("offsets"), py::arg("num_threads") = 0);
    m.def("segment_max_dot_packed", &segment_max_dot_packed_py, py::arg("queries"),
          py::arg("panels"), py::arg("n_packed"), py::arg("tail"), py::arg("offsets"),
          py::arg("num_threads") = 0,
          "segment_max_dot over the first n_packed keys of a buffer filled by pack_keys, then the "
          "rows of tail; offsets number the keys in that order.");
    m.def("rescore", &rescore_py, py::arg("queries"), py::arg("keys"), py::arg("candidate_ids"),
          py::arg("num_threads") = 0,
          "scores (nq, m): queries[i] . keys[candidate_ids[i, j]], -inf where the id is -1; keys "
          "float32, or float16 scored as the floats they stand for (neither copied).");
    m.def("topk_rows", &topk_rows_py, py::arg("scores"), py::arg("k"), py::arg("num_threads") = 0,
          py::arg("labels") = py::none(),
          "The k largest entries of every row, best first (ties: lower column; NaN as -inf): "
          "(scores, columns), or with labels (same shape), (scores, labels), entries labelled "
          "negative passed over and rows padded with (-FLT_MAX, -1).");
    m.def("take_in_turn", &take_in_turn_py, py::arg("a"), py::arg("b"), py::arg("count"),
          py::arg("a_labels") = py::none(),
          "Per row, the first count distinct non-negative entries of a[0], b[0], a[1], b[1], ... "
          "(padded with -1); with a_labels (1-D), a's entries stand for a_labels[entry] (-1: "
          "none).");
    m.def("take_better_answers", &take_better_answers_py, py::arg("queries"),
          py::arg("query_norms"), py::arg("offsets"), py::arg("scores"), py::arg("answers"),
          py::arg("keys"), py::arg("key_norms"), py::arg("ids"), py::arg("key_offsets"),
          py::arg("key_rows"), py::arg("num_threads") = 0,
          "(scores, answers, changed) of grouped queries after checking each group's listed keys "
          "(rows of keys by descending norm) against it: a key that beats a query's score becomes "
          "its answer (amips_plugins.routing.ledger).");
    m.def("all_finite", &all_finite_py, py::arg("x"), "True when no element is NaN or Inf.");
    m.def("release_free_memory",
          [] {
#if defined(__GLIBC__)
              malloc_trim(0);
#endif
          },
          "Hands the C heap's free pages back to the system (glibc: malloc_trim). After a large "
          "block is freed glibc keeps up to 64 MB of later frees for reuse; a build's transients "
          "would stay in the process's memory.");

    py::class_<ListViews>(m, "ListViews",
                          "Inverted lists held elsewhere (faiss's): for each list its rows, float32 "
                          "or float16 (n, dim), every list alike, and their ids, int64 (n,); the "
                          "arrays are kept alive and must not change while the views are used.")
        .def(py::init<const std::vector<py::array>&, const std::vector<py::array>&, std::size_t>(),
             py::arg("rows"), py::arg("ids"), py::arg("dim"))
        .def_static("pq4", &ListViews::pq4, py::arg("blocks"), py::arg("ids"), py::arg("codebook"),
                    py::arg("dim"),
                    "Lists of 4-bit product-quantization codes as faiss's fast-scan IVF keeps "
                    "them: each list's blocks, uint8 (1-D, a block of m2 * 16 bytes per 32 keys, "
                    "m2 = m rounded up to even), its ids int64 (n,), and the codebook (m, 16, "
                    "dim / m) float32; scanned approximately, each query's table of "
                    "subquantizer scores quantized to bytes.");
    py::class_<DeepeningRule>(m, "Deepening",
                              "How far a calibrated scan goes for each query: its first `first` "
                              "probes, then nprobe[group] in all, the group the one of `edges` "
                              "(ascending) its kth best score (1-based) over its norm reaches.")
        .def(py::init<std::int64_t, std::int64_t, const Array<double>&, const ExactArray<std::int64_t>&>(),
             py::arg("first"), py::arg("kth"), py::arg("edges"), py::arg("nprobe"))
        .def_property_readonly("first", [](const DeepeningRule& d) { return d.rule().first; })
        .def_property_readonly("kth", [](const DeepeningRule& d) { return d.rule().kth; })
        .def("nprobe_for", &DeepeningRule::nprobe_for, py::arg("kth_scores"), py::arg("queries"),
             "Each query's nprobe (n,) int64 from its kth best score found (n,) in the first probes.");
    m.def("score_over_norm",
          [](const Array<float>& scores, const Array<float>& queries) {
              require_matrix(queries, "queries");
              AMIPS_REQUIRE(scores.ndim() == 1 && scores.shape(0) == queries.shape(0),
                            "scores " + shape_of(scores) + " must have one entry per query " +
                                shape_of(queries));
              const std::size_t n = queries.shape(0), d = queries.shape(1);
              py::array_t<float> out(n);
              for (std::size_t i = 0; i < n; ++i) {
                  out.mutable_data()[i] = score_over_norm(scores.data()[i], queries.data() + i * d, d);
              }
              return out;
          },
          py::arg("scores"), py::arg("queries"),
          "Every query's score (n,) over its norm (at least 1e-30): a calibrated search's feature.");
    m.def("scan_lists", &scan_lists_py, py::arg("queries"), py::arg("probes"), py::arg("lists"),
          py::arg("k"), py::arg("offsets") = py::none(), py::arg("num_threads") = 0,
          py::arg("deepening") = py::none(),
          "Top-k keys by inner product for each query among the lists it probes (probes (nq, "
          "nprobe) int64, -1: none), each list's scores plus offsets (nq, nprobe) where given, "
          "with a Deepening only the probes each query reaches: (scores float32, ids int64, each "
          "(nq, k), best first, ties by lower id, padded with -FLT_MAX / -1 as faiss pads; the "
          "inner products computed; each query's probes scanned (nq,) int64).");

    py::class_<XboxTransform>(m, "XboxTransform")
        .def(py::init<std::size_t>(), py::arg("dim"))
        .def("add_keys",
             [](XboxTransform& t, const Array<float>& x) {
                 return xbox_rows(t, x, "keys", [&t](const float* p, std::size_t n, float* o) {
                     t.add_keys(p, n, o);
                 });
             },
             py::arg("keys"))
        .def("transform_queries",
             [](const XboxTransform& t, const Array<float>& q) {
                 return xbox_rows(t, q, "queries", [&t](const float* p, std::size_t n, float* o) {
                     t.transform_queries(p, n, o);
                 });
             },
             py::arg("queries"))
        .def_property_readonly("dim", &XboxTransform::dim)
        .def_property_readonly("max_norm", &XboxTransform::max_norm)
        .def_property_readonly("count", &XboxTransform::count)
        .def("set_state", &XboxTransform::set_state, py::arg("max_norm"), py::arg("count"));

    py::class_<GraphSearch>(m, "GraphSearch",
                            "Beam search over an HNSW graph (a copy of hnswlib's, or one grown by "
                            "add): 8-bit codes for the walk, exact inner products (or, for a graph "
                            "of codes only, those of the codes' values) for the returned ranking.")
        .def(py::init(&make_graph), py::kw_only(), py::arg("keys") = py::none(),
             py::arg("links0"), py::arg("upper"), py::arg("upper_offsets"), py::arg("levels"),
             py::arg("max_m"), py::arg("entry"), py::arg("deleted"),
             py::arg("code_low") = py::none(), py::arg("code_scale") = py::none(),
             py::arg("codes") = py::none(), py::arg("basis") = py::none(),
             "A graph of keys (or of codes (n, r) uint8 with their ranges): links0 (n, max_m0 "
             "+ 1) with each element's count of links first, the upper levels' blocks of "
             "max_m + 1 words from upper_offsets[i], levels, entry point, deleted marks. With "
             "basis (r, dim), the codes are of the keys' components along its rows.")
        .def(py::init(&make_empty_graph), py::arg("dim"), py::arg("max_m") = 16,
             py::arg("keep_keys") = true, py::arg("basis") = py::none(),
             "An empty graph to add keys to: max_m links per element (2 max_m on level 0); "
             "without keep_keys, codes only, and what a walk finds ranked by their values. With "
             "basis (r, dim), codes of the keys' r components along its rows, for the walk.")
        .def("add", &graph_add_py, py::arg("keys"), py::arg("ef_construction") = 200,
             py::arg("seed") = 100, py::arg("num_threads") = 0, py::arg("fill_lists") = false,
             "Insert keys (n, dim) as the next elements, as hnswlib inserts, scoring by codes; "
             "with one thread the graph depends on the keys, their order and seed only. With "
             "fill_lists, lists the heuristic leaves short are filled with the best candidates "
             "it passed over.")
        .def("update", &graph_update_py, py::arg("elements"), py::arg("keys"),
             py::arg("ef_construction") = 200, py::arg("fill_lists") = false,
             "Give elements (m,) the keys (m, dim) in place, each linked again where its new key "
             "lies (hnswlib's updatePoint); fill_lists as for add.")
        .def("link",
             [](GraphSearch& g, const ExactArray<std::int64_t>& sources,
                const ExactArray<std::int64_t>& targets, int num_threads) {
                 require_threads(num_threads);
                 AMIPS_REQUIRE(sources.ndim() == 1 && targets.ndim() == 1 &&
                                   sources.size() == targets.size(),
                               "sources and targets must be 1-D of one length, got shapes " +
                                   shape_of(sources) + " and " + shape_of(targets));
                 const std::vector<std::uint32_t> from = elements_of(g, sources);
                 const std::vector<std::uint32_t> to = elements_of(g, targets);
                 py::gil_scoped_release release;
                 return g.link(from.data(), to.data(), from.size(), num_threads);
             },
             py::arg("sources"), py::arg("targets"), py::arg("num_threads") = 0,
             "Add the level-0 link sources[i] -> targets[i] of each pair, each source's in order, "
             "where the source lacks it: into the room its list has, then in place of links the "
             "heuristic would not choose there (those that filled it); returns how many were "
             "added.")
        .def("mark_deleted",
             [](GraphSearch& g, const ExactArray<std::int64_t>& elements) {
                 for (const std::uint32_t e : elements_of(g, elements)) g.mark_deleted(e);
             },
             py::arg("elements"), "Mark elements deleted: walked through, never returned.")
        .def("unmark_deleted",
             [](GraphSearch& g, const ExactArray<std::int64_t>& elements) {
                 for (const std::uint32_t e : elements_of(g, elements)) g.unmark_deleted(e);
             },
             py::arg("elements"), "Undo mark_deleted.")
        .def("reserve", [](GraphSearch& g, std::int64_t capacity) {
                 AMIPS_REQUIRE(capacity >= 0, "capacity must be non-negative");
                 g.reserve(std::size_t(capacity));
             },
             py::arg("capacity"),
             "Room for capacity elements: adds up to it never move or over-allocate the arrays.")
        .def("keys", &graph_keys_py, py::arg("elements"),
             "The keys of elements (m,) as rows (m, dim) (a graph that keeps its keys).")
        .def("arrays", &graph_arrays_py,
             "The constructor's arguments for the graph as it stands (copies).")
        .def("search", &graph_search_py, py::arg("walk"), py::arg("rank"), py::arg("k"),
             py::arg("ef"), py::arg("num_threads") = 0, py::arg("filter") = py::none(),
             py::arg("groups") = py::none(), py::arg("labels") = py::none(),
             "(scores, elements, inner products computed: codes and exact): the k best found by "
             "exact inner product with rank after a walk by walk with a beam of ef[i] per query "
             "(one ef: every query's); -inf / -1 past what was found. With groups (G, columns), "
             "ef has G entries and a query takes that of the group of largest inner product with "
             "its rank row. With filter (a callable on element numbers), only elements it accepts "
             "are kept. With labels (one per element), elements are returned as their labels.")
        .def_property_readonly("size", &GraphSearch::size)
        .def_property_readonly("dim", &GraphSearch::dim)
        .def_property_readonly("max_m", &GraphSearch::max_m)
        .def_property_readonly("upper_words", &GraphSearch::upper_words)
        .def_property_readonly(
            "code_ranges",
            [](const GraphSearch& g) {
                const py::ssize_t r = g.code_values();
                py::array_t<float> out({py::ssize_t(2), r});
                std::copy(g.code_low(), g.code_low() + r, out.mutable_data());
                std::copy(g.code_scale(), g.code_scale() + r, out.mutable_data() + r);
                return out;
            },
            "(2, r): code c of component t stands for code_ranges[0, t] + c * code_ranges[1, t] "
            "(r: the basis's rows, or dim).")
        .def_property_readonly(
            "basis",
            [](const GraphSearch& g) -> std::optional<py::array_t<float>> {
                if (g.basis().empty()) return std::nullopt;
                return copy_of(g.basis().basis(), {py::ssize_t(g.code_values()), py::ssize_t(g.dim())});
            },
            "(r, dim): the directions the walk's codes hold the keys' components along; None: "
            "every dimension.")
        .def_property_readonly("memory_bytes", &GraphSearch::memory_bytes);
    m.def("routed_search", &routed_search_py, py::arg("queries"), py::arg("graph"),
          py::arg("element_lists"), py::arg("beam"), py::arg("nprobe"), py::arg("panels"),
          py::arg("n_packed"), py::arg("tail"), py::arg("in_turn"), py::arg("centroid_rows"),
          py::arg("lists"), py::arg("deepening"), py::arg("depth"), py::arg("raw_keys"), py::arg("k"),
          py::arg("num_threads") = 0,
          "A calibrated IVF search in one call: each query's nprobe lists ranked by a walk of the "
          "graph of pieces (beam; element_lists: each element's list), the packed centroids' "
          "ranking taken in turn (in_turn) and filling short rows; scanned with the deepening for "
          "depth candidates (scores plus q . centroid_rows[list] where given), re-ranked from "
          "raw_keys (float32 or float16) to k where given. (scores, ids (nq, k); each query's "
          "lists scanned (nq,); keys scanned; lists scanned; the walk's inner products; the "
          "seconds spent ranking lists).");
}
