// Kernel test without Python, so that it can be cross-compiled and run under qemu: every level the
// CPU runs is checked against a reference written here, bit for bit. A score is one multiply-add
// chain over the dimensions in order; fused (std::fma) on the SIMD levels, a product then a sum on
// the scalar one. Then topk_dot on each level against a brute-force ranking of the same scores, and
// the code scores of a graph walk (dot_codes, whose order is the ISA's own) against a sum in double,
// dot_code_rows against dot_codes, packs of halves against packs of the floats they stand for, and
// dot_rows (rows scored in place, in the ISA's own order) against a sum in double; and the scores
// of 4-bit fast-scan codes (pq4) against a sum of table bytes read from faiss's block layout.
// Exit status 0 when every check held; failures are printed.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "half.h"
#include "kernels.h"
#include "pq4.h"
#include "search.h"

using namespace amips;

namespace {

int failures = 0;

void fail(const char* what, const char* isa, std::size_t n, std::size_t d, std::size_t extra) {
    if (++failures <= 20) std::printf("FAIL %s [%s] n=%zu d=%zu (%zu)\n", what, isa, n, d, extra);
}

float reference_dot(const float* q, const float* x, std::size_t d, bool fused) {
    float acc = 0.f;
    for (std::size_t t = 0; t < d; ++t) {
        if (fused) {
            acc = std::fma(q[t], x[t], acc);
        } else {
            const volatile float product = q[t] * x[t];  // kept apart from the sum
            acc = product + acc;
        }
    }
    return acc;
}

std::vector<float> random_matrix(std::size_t rows, std::size_t d, std::mt19937& rng) {
    std::normal_distribution<float> normal;
    std::vector<float> m(rows * d);
    for (float& v : m) v = normal(rng);
    return m;
}

// Packs n keys chunk of dimensions by chunk and scores nq queries against all their panels through
// dot_panels, the way the scans do, and compares with the reference chain.
void check_panels(Isa isa, std::mt19937& rng) {
    const Kernels kern = kernels_for(isa);
    const bool fused = isa != Isa::scalar;
    const std::size_t dims[] = {1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 50, 64, 100, 129, 300, 1100};
    const std::size_t counts[] = {1, 3, 4, 15, 16, 17, 63, 64, 65, 130, 200};
    for (std::size_t d : dims) {
        for (std::size_t n : counts) {
            const auto keys = random_matrix(n, d, rng);
            const auto queries = random_matrix(kTileQueries, d, rng);
            const std::size_t width = (n + kPanel - 1) / kPanel * kPanel;
            std::vector<float> chunks(width * kChunk), out(kTileQueries * width);
            for (std::size_t nq = 1; nq <= kTileQueries; ++nq) {
                for (std::size_t t0 = 0; t0 < d; t0 += kChunk) {
                    const std::size_t dc = std::min(kChunk, d - t0);
                    kern.pack(keys.data(), d, nullptr, n, t0, dc, chunks.data());
                    kern.dot_panels(&queries[t0], d, nq, chunks.data(), kPanel * dc, n, dc, out.data(), width,
                                    t0 > 0);
                }
                for (std::size_t i = 0; i < nq; ++i) {
                    for (std::size_t j = 0; j < n; ++j) {
                        const float want = reference_dot(&queries[i * d], &keys[j * d], d, fused);
                        if (std::memcmp(&want, &out[i * width + j], sizeof(float)) != 0) {
                            fail("dot_panels", isa_name(isa), n, d, j * kTileQueries + i);
                        }
                    }
                }
            }
            // Packing by ids (-1: zeros), then back to rows.
            std::vector<std::int64_t> ids(n);
            for (std::size_t i = 0; i < n; ++i) ids[i] = (i % 5 == 4) ? -1 : std::int64_t((i * 7) % n);
            std::vector<float> packed(packed_floats(n, d)), unpacked(n * d);
            kern.pack(keys.data(), d, ids.data(), n, 0, d, packed.data());
            unpack_keys(packed.data(), n, d, unpacked.data());
            for (std::size_t i = 0; i < n; ++i) {
                for (std::size_t t = 0; t < d; ++t) {
                    const float want = ids[i] < 0 ? 0.f : keys[std::size_t(ids[i]) * d + t];
                    if (unpacked[i * d + t] != want) fail("pack by id", isa_name(isa), n, d, i);
                }
            }
        }
    }
}

// topk_dot over keys given as rows, and over the same keys split into stored panels and a tail,
// against a brute-force ranking of the reference scores.
void check_topk(Isa isa, std::mt19937& rng) {
    const bool fused = isa != Isa::scalar;
    const std::size_t nq = 9, k = 10;
    for (std::size_t d : {37, 2100}) {  // one chunk of dimensions, and three
        const std::size_t n = 3000, n_packed = n / kPanel * kPanel;
        const auto keys = random_matrix(n, d, rng);
        const auto queries = random_matrix(nq, d, rng);
        std::vector<float> panels(packed_floats(n_packed, d));
        pack_keys(keys.data(), n_packed, d, panels.data());
        const KeySet as_rows{nullptr, 0, keys.data(), n, d};
        const KeySet split{panels.data(), n_packed, &keys[n_packed * d], n - n_packed, d};
        for (const KeySet& set : {as_rows, split}) {
            std::vector<float> scores(nq * k);
            std::vector<std::int64_t> ids(nq * k);
            topk_dot(queries.data(), nq, set, k, 2, scores.data(), ids.data());
            for (std::size_t i = 0; i < nq; ++i) {
                std::vector<std::pair<float, std::int64_t>> all(n);
                for (std::size_t j = 0; j < n; ++j) {
                    all[j] = {reference_dot(&queries[i * d], &keys[j * d], d, fused), std::int64_t(j)};
                }
                std::partial_sort(all.begin(), all.begin() + k, all.end(), [](auto& a, auto& b) {
                    return a.first > b.first || (a.first == b.first && a.second < b.second);
                });
                for (std::size_t j = 0; j < k; ++j) {
                    if (ids[i * k + j] != all[j].second || scores[i * k + j] != all[j].first) {
                        fail("topk_dot", isa_name(isa), n, d, i * k + j);
                    }
                }
            }
        }
    }
}

// dot_codes over every padded width: within float rounding of the sum in double.
void check_codes(Isa isa, std::mt19937& rng) {
    const Kernels kern = kernels_for(isa);
    std::uniform_int_distribution<int> byte(0, 255);
    for (std::size_t dp = kCodeQuantum; dp <= 400; dp += kCodeQuantum) {
        const auto q = random_matrix(1, dp, rng);
        std::vector<std::uint8_t> codes(dp);
        double exact = 0.0, magnitude = 0.0;
        for (std::size_t t = 0; t < dp; ++t) {
            codes[t] = std::uint8_t(byte(rng));
            exact += double(q[t]) * codes[t];
            magnitude += std::fabs(double(q[t]) * codes[t]);
        }
        const float got = kern.dot_codes(q.data(), codes.data(), dp);
        if (std::fabs(got - exact) > 1e-5 * magnitude) fail("dot_codes", isa_name(isa), 1, dp, 0);
    }
    // dot_code_rows: each row's score is dot_codes's, bit for bit, for counts of every remainder
    for (std::size_t dp : {kCodeQuantum, std::size_t(64), std::size_t(384)}) {
        const std::size_t n = 9;
        const auto q = random_matrix(1, dp, rng);
        std::vector<std::uint8_t> codes(n * dp);
        for (auto& c : codes) c = std::uint8_t(byte(rng));
        for (std::size_t count = 0; count <= n; ++count) {
            std::vector<std::uint32_t> rows(count);
            for (std::size_t i = 0; i < count; ++i) rows[i] = std::uint32_t((i * 5 + 3) % n);
            std::vector<float> out(count);
            kern.dot_code_rows(q.data(), codes.data(), dp, rows.data(), count, out.data());
            for (std::size_t i = 0; i < count; ++i) {
                const float one = kern.dot_codes(q.data(), codes.data() + rows[i] * dp, dp);
                if (std::memcmp(&one, &out[i], sizeof(float)) != 0) {
                    fail("dot_code_rows", isa_name(isa), count, dp, i);
                }
            }
        }
    }
}

// Halves: a few known values, then pack_half against pack of the same values as floats, bit for bit
// (every finite half, zeros and subnormals among them; rows by id, -1 among them; a tail past the
// widest vector).
void check_halves(Isa isa, std::mt19937& rng) {
    const std::pair<std::uint16_t, float> known[] = {
        {0x3C00, 1.f}, {0xC000, -2.f}, {0x0001, 0x1p-24f}, {0x8000, -0.f}, {0x7BFF, 65504.f},
        {0x3555, 0.333251953125f}, {0x03FF, 1023 * 0x1p-24f}};
    for (const auto& [bits, value] : known) {
        if (half_to_float(bits) != value) fail("half_to_float", isa_name(isa), bits, 0, 0);
    }
    const Kernels kern = kernels_for(isa);
    std::uniform_int_distribution<int> finite(0, 0xFFFF);
    for (std::size_t d : {std::size_t(1), std::size_t(17), std::size_t(50), std::size_t(384)}) {
        const std::size_t n = 70;
        std::vector<std::uint16_t> halves(n * d);
        for (auto& h : halves) {
            do h = std::uint16_t(finite(rng)); while (((h >> 10) & 0x1F) == 0x1F);  // no inf / NaN
        }
        std::vector<float> floats(n * d);
        for (std::size_t i = 0; i < n * d; ++i) floats[i] = half_to_float(halves[i]);
        std::vector<std::int64_t> ids(n);
        for (std::size_t i = 0; i < n; ++i) ids[i] = (i % 6 == 5) ? -1 : std::int64_t((i * 11) % n);
        std::vector<float> want(packed_floats(n, d)), got(packed_floats(n, d));
        kern.pack(floats.data(), d, ids.data(), n, 0, d, want.data());
        kern.pack_half(halves.data(), d, ids.data(), n, 0, d, got.data());
        if (std::memcmp(want.data(), got.data(), want.size() * sizeof(float)) != 0) {
            fail("pack_half", isa_name(isa), n, d, 0);
        }
    }
}

// dot_rows and dot_rows_half over widths around the vector's and counts of every remainder: within
// float rounding of the sum in double; each row's score the same whatever the count.
void check_rows(Isa isa, std::mt19937& rng) {
    const Kernels kern = kernels_for(isa);
    for (std::size_t d : {1, 3, 4, 8, 15, 16, 17, 50, 64, 100, 384}) {
        const std::size_t n = 37;
        const auto q = random_matrix(1, d, rng);
        const auto x = random_matrix(n, d, rng);
        std::vector<std::uint16_t> halves(n * d);
        for (std::size_t i = 0; i < n * d; ++i) {
            halves[i] = std::uint16_t(i * 2654435761u % 0x7800);  // finite, either sign
            if (i % 3 == 0) halves[i] |= 0x8000;
        }
        std::vector<float> whole(n), whole_half(n), part(n);
        kern.dot_rows(q.data(), x.data(), d, n, whole.data());
        kern.dot_rows_half(q.data(), halves.data(), d, n, whole_half.data());
        for (std::size_t i = 0; i < n; ++i) {
            double exact = 0, magnitude = 0, exact_half = 0, magnitude_half = 0;
            for (std::size_t t = 0; t < d; ++t) {
                exact += double(q[t]) * x[i * d + t];
                magnitude += std::fabs(double(q[t]) * x[i * d + t]);
                const double h = half_to_float(halves[i * d + t]);
                exact_half += q[t] * h;
                magnitude_half += std::fabs(q[t] * h);
            }
            if (std::fabs(whole[i] - exact) > 1e-5 * magnitude) fail("dot_rows", isa_name(isa), n, d, i);
            if (std::fabs(whole_half[i] - exact_half) > 1e-5 * magnitude_half) {
                fail("dot_rows_half", isa_name(isa), n, d, i);
            }
        }
        for (std::size_t count : {std::size_t(0), std::size_t(1), std::size_t(5), std::size_t(17)}) {
            kern.dot_rows(q.data(), x.data() + 3 * d, d, count, part.data());
            if (std::memcmp(part.data(), whole.data() + 3, count * sizeof(float)) != 0) {
                fail("dot_rows count", isa_name(isa), count, d, 0);
            }
        }
    }
}

}  // namespace

// 4-bit codes in faiss's fast-scan blocks: each level's tables are the scalar level's, and its
// scores (one query, and two at a time) the table's bytes summed as the layout places them.
void check_pq4(Isa isa, std::mt19937& rng) {
    const std::size_t subquantizers[] = {1, 2, 7, 8, 33, 192, 300};
    for (std::size_t m : subquantizers) {
        const std::size_t m2 = (m + 1) / 2 * 2, dsub = 2, n = 70;
        const std::vector<float> queries = random_matrix(2, m * dsub, rng);
        const std::vector<float> codebook = random_matrix(m * 16, dsub, rng);
        std::vector<std::uint8_t> blocks((n + kPq4Block - 1) / kPq4Block * m2 * 16);
        for (std::uint8_t& byte : blocks) byte = std::uint8_t(rng());
        Pq4Table tables[2], scalar;
        for (std::size_t q = 0; q < 2; ++q) {
            pq4_table(queries.data() + q * m * dsub, codebook.data(), m, m2, dsub, isa, tables[q]);
            pq4_table(queries.data() + q * m * dsub, codebook.data(), m, m2, dsub, Isa::scalar, scalar);
            if (tables[q].bytes != scalar.bytes || tables[q].bias != scalar.bias || tables[q].scale != scalar.scale) {
                fail("pq4_table", isa_name(isa), n, m, q);
            }
        }
        const std::size_t padded = blocks.size() / (m2 * 16) * kPq4Block;
        std::vector<float> scores(2 * padded);
        const Pq4Table* both[2] = {&tables[0], &tables[1]};
        for (std::size_t count : {1, 2}) {
            float* out[2] = {scores.data(), scores.data() + padded};
            pq4_scores(both, count, blocks.data(), n, m2, isa, out);
            for (std::size_t q = 0; q < count; ++q) {
                for (std::size_t key = 0; key < n; ++key) {
                    const std::size_t block = key / kPq4Block, slot = key % kPq4Block;
                    const std::size_t j = std::find(kPq4Order, kPq4Order + 16, slot % 16) - kPq4Order;
                    std::uint32_t sum = 0;
                    for (std::size_t sq = 0; sq < m2; ++sq) {
                        const std::uint8_t byte = blocks[block * m2 * 16 + sq / 2 * 32 + (sq % 2) * 16 + j];
                        sum += tables[q].bytes[sq * 16 + (slot < 16 ? byte & 15 : byte >> 4)];
                    }
                    const float want = tables[q].bias + tables[q].scale * float(sum);
                    if (out[q][key] != want) fail("pq4_scores", isa_name(isa), n, m, key);
                }
            }
        }
    }
}

int main() {
    std::mt19937 rng(7);
    const Isa best = detected_isa();
    std::vector<Isa> levels{Isa::scalar};
    for (Isa isa : {Isa::neon, Isa::avx2, Isa::avx512}) {
        const bool same_family = (best == Isa::neon) == (isa == Isa::neon);
        if (same_family && isa <= best) levels.push_back(isa);
    }
    for (Isa isa : levels) {
        setenv("AMIPS_SIMD", isa_name(isa), 1);  // topk_dot dispatches on it
        check_panels(isa, rng);
        check_topk(isa, rng);
        check_codes(isa, rng);
        check_halves(isa, rng);
        check_rows(isa, rng);
        check_pq4(isa, rng);
        std::printf("%s: %s\n", isa_name(isa), failures ? "failed" : "ok");
    }
    return failures ? 1 : 0;
}
