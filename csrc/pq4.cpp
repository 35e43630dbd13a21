#include "pq4.h"

#include <algorithm>

#if defined(__x86_64__)
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

namespace amips {
namespace {

// The scores of the blocks' keys, kPq4Block a block: the sums of their table entries, one per
// subquantizer, scaled.
void pq4_scores_scalar(const Pq4Table& scaled, const std::uint8_t* blocks, std::size_t num_blocks,
                       std::size_t m2, float* out) {
    const std::uint8_t* table = scaled.bytes.data();
    for (std::size_t b = 0; b < num_blocks; ++b) {
        std::uint32_t acc[kPq4Block] = {};
        const std::uint8_t* block = blocks + b * m2 * 16;
        for (std::size_t p = 0; p < m2 / 2; ++p) {
            const std::uint8_t* bytes = block + p * 32;
            const std::uint8_t* even = table + 2 * p * 16;
            const std::uint8_t* odd = even + 16;
            for (std::size_t j = 0; j < 16; ++j) {
                const std::size_t key = kPq4Order[j];
                acc[key] += even[bytes[j] & 15] + odd[bytes[16 + j] & 15];
                acc[key + 16] += even[bytes[j] >> 4] + odd[bytes[16 + j] >> 4];
            }
        }
        for (std::size_t i = 0; i < kPq4Block; ++i) {
            out[b * kPq4Block + i] = scaled.bias + scaled.scale * float(acc[i]);
        }
    }
}

#if defined(__x86_64__)
// The same scores for Q queries at once (their codes read and split once), a pair of
// subquantizers a step: one shuffle looks up 32 codes (the even subquantizer's table in the low
// 128-bit lane, the odd one's in the high), summed as 16-bit words: a word holds an even byte
// (keys 0..7 of the block's order, kPq4Order's point) plus 256 times an odd one (keys 8..15), and
// the odd bytes are summed apart, so that the even ones' sums come out by subtraction (modulo
// 2^16, exact: a key's sum is at most 65535).
template <std::size_t Q>
__attribute__((target("avx2"))) void pq4_scores_avx2(const Pq4Table* const* scaled,
                                                     const std::uint8_t* blocks,
                                                     std::size_t num_blocks, std::size_t m2,
                                                     float* const* out) {
    const __m256i low = _mm256_set1_epi8(0x0f);
    for (std::size_t b = 0; b < num_blocks; ++b) {
        const std::uint8_t* block = blocks + b * m2 * 16;
        // per query, words and odd bytes of keys 0..15 (low nibbles), then of keys 16..31
        __m256i words[Q][2], odd[Q][2];
        for (std::size_t q = 0; q < Q; ++q) {
            for (std::size_t h = 0; h < 2; ++h) words[q][h] = odd[q][h] = _mm256_setzero_si256();
        }
        for (std::size_t p = 0; p < m2 / 2; ++p) {
            const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + p * 32));
            const __m256i codes[2] = {_mm256_and_si256(bytes, low), _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low)};
            for (std::size_t q = 0; q < Q; ++q) {
                const auto* table = reinterpret_cast<const __m256i*>(scaled[q]->bytes.data() + p * 32);
                const __m256i lut = _mm256_loadu_si256(table);
                for (std::size_t h = 0; h < 2; ++h) {
                    const __m256i found = _mm256_shuffle_epi8(lut, codes[h]);
                    words[q][h] = _mm256_add_epi16(words[q][h], found);
                    odd[q][h] = _mm256_add_epi16(odd[q][h], _mm256_srli_epi16(found, 8));
                }
            }
        }
        for (std::size_t q = 0; q < Q; ++q) {
            const __m256 bias = _mm256_set1_ps(scaled[q]->bias), scale = _mm256_set1_ps(scaled[q]->scale);
            for (std::size_t h = 0; h < 2; ++h) {
                const __m256i even = _mm256_sub_epi16(words[q][h], _mm256_slli_epi16(odd[q][h], 8));
                // the two lanes (even and odd subquantizers) added: keys 16h .. 16h + 7, then + 8
                const __m128i sums[2] = {
                    _mm_add_epi16(_mm256_castsi256_si128(even), _mm256_extracti128_si256(even, 1)),
                    _mm_add_epi16(_mm256_castsi256_si128(odd[q][h]), _mm256_extracti128_si256(odd[q][h], 1))};
                for (std::size_t e = 0; e < 2; ++e) {
                    const __m256 total = _mm256_cvtepi32_ps(_mm256_cvtepu16_epi32(sums[e]));
                    _mm256_storeu_ps(out[q] + b * kPq4Block + 16 * h + 8 * e,
                                     _mm256_add_ps(bias, _mm256_mul_ps(scale, total)));
                }
            }
        }
    }
}
#endif


#if defined(__aarch64__)
// The same scores, a pair of subquantizers a step: a table lookup (TBL) per 16 codes, the even
// and odd subquantizers' bytes widened and added into 16-bit sums (at most 65535: the table's
// scale sees to it).
void pq4_scores_neon(const Pq4Table& scaled, const std::uint8_t* blocks, std::size_t num_blocks,
                     std::size_t m2, float* out) {
    const std::uint8_t* table = scaled.bytes.data();
    const uint8x16_t low = vdupq_n_u8(0x0f);
    for (std::size_t b = 0; b < num_blocks; ++b) {
        const std::uint8_t* block = blocks + b * m2 * 16;
        // keys kPq4Order[0..8), kPq4Order[8..16), then the same + 16
        uint16x8_t acc[4] = {vdupq_n_u16(0), vdupq_n_u16(0), vdupq_n_u16(0), vdupq_n_u16(0)};
        for (std::size_t p = 0; p < m2 / 2; ++p) {
            const uint8x16_t even = vld1q_u8(block + p * 32), odd = vld1q_u8(block + p * 32 + 16);
            const uint8x16_t even_table = vld1q_u8(table + p * 32), odd_table = vld1q_u8(table + p * 32 + 16);
            const uint8x16_t first_even = vqtbl1q_u8(even_table, vandq_u8(even, low));
            const uint8x16_t first_odd = vqtbl1q_u8(odd_table, vandq_u8(odd, low));
            const uint8x16_t second_even = vqtbl1q_u8(even_table, vshrq_n_u8(even, 4));
            const uint8x16_t second_odd = vqtbl1q_u8(odd_table, vshrq_n_u8(odd, 4));
            acc[0] = vaddq_u16(acc[0], vaddl_u8(vget_low_u8(first_even), vget_low_u8(first_odd)));
            acc[1] = vaddq_u16(acc[1], vaddl_high_u8(first_even, first_odd));
            acc[2] = vaddq_u16(acc[2], vaddl_u8(vget_low_u8(second_even), vget_low_u8(second_odd)));
            acc[3] = vaddq_u16(acc[3], vaddl_high_u8(second_even, second_odd));
        }
        std::uint16_t part[8];
        for (std::size_t a = 0; a < 4; ++a) {
            vst1q_u16(part, acc[a]);
            const std::uint8_t* keys = kPq4Order + (a % 2) * 8;
            for (std::size_t j = 0; j < 8; ++j) {
                out[b * kPq4Block + keys[j] + (a / 2) * 16] = scaled.bias + scaled.scale * float(part[j]);
            }
        }
    }
}
#endif

// A subquantizer's 16 code scores for its dsub components of a query (codes side by side, a
// component at a time: a product, then a sum, as on every ISA), and their lowest and highest.
inline void code_scores_scalar(const float* query, const float* codebook, std::size_t dsub, float* row,
                               float& lo, float& hi) {
    std::fill_n(row, 16, 0.f);
    for (std::size_t t = 0; t < dsub; ++t) {
        for (std::size_t c = 0; c < 16; ++c) row[c] += query[t] * codebook[t * 16 + c];
    }
    lo = *std::min_element(row, row + 16), hi = *std::max_element(row, row + 16);
}

// Scores (16) as table bytes: (score - lowest) * per_unit, rounded half up, at most 255.
inline void quantized_scalar(const float* row, float lowest, float per_unit, std::uint8_t* bytes) {
    for (std::size_t c = 0; c < 16; ++c) {
        bytes[c] = std::uint8_t(std::min((row[c] - lowest) * per_unit + 0.5f, 255.f));
    }
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) inline float lane_min(__m256 v) {
    __m128 h = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_min_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_min_ss(h, _mm_movehdup_ps(h)));
}

__attribute__((target("avx2"))) inline float lane_max(__m256 v) {
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)));
}

// code_scores_scalar and quantized_scalar, 8 codes a vector: the same values (a query's table
// at m = 192 took 4.8 us with the scalar loops, 1.3 us with these, timed alone).
__attribute__((target("avx2"))) void code_scores_avx2(const float* query, const float* codebook,
                                                      std::size_t dsub, float* row, float& lo, float& hi) {
    __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
    for (std::size_t t = 0; t < dsub; ++t) {
        const __m256 q = _mm256_set1_ps(query[t]);
        a = _mm256_add_ps(a, _mm256_mul_ps(q, _mm256_loadu_ps(codebook + t * 16)));
        b = _mm256_add_ps(b, _mm256_mul_ps(q, _mm256_loadu_ps(codebook + t * 16 + 8)));
    }
    _mm256_storeu_ps(row, a), _mm256_storeu_ps(row + 8, b);
    lo = lane_min(_mm256_min_ps(a, b)), hi = lane_max(_mm256_max_ps(a, b));
}

__attribute__((target("avx2"))) inline __m256i entries_avx2(const float* row, float lowest,
                                                           float per_unit) {
    const __m256 shifted = _mm256_sub_ps(_mm256_loadu_ps(row), _mm256_set1_ps(lowest));
    const __m256 v = _mm256_add_ps(_mm256_mul_ps(shifted, _mm256_set1_ps(per_unit)), _mm256_set1_ps(0.5f));
    return _mm256_cvttps_epi32(_mm256_min_ps(v, _mm256_set1_ps(255.f)));
}

__attribute__((target("avx2"))) void quantized_avx2(const float* row, float lowest, float per_unit,
                                                    std::uint8_t* bytes) {
    const __m256i first = entries_avx2(row, lowest, per_unit), second = entries_avx2(row + 8, lowest, per_unit);
    // packus interleaves the two vectors' 128-bit halves: the permute puts the 16 in order
    const __m256i words = _mm256_permute4x64_epi64(_mm256_packus_epi32(first, second), 0xD8);
    const __m128i packed = _mm_packus_epi16(_mm256_castsi256_si128(words), _mm256_extracti128_si256(words, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(bytes), packed);
}

#endif

}  // namespace

void pq4_table(const float* query, const float* codebook, std::size_t m, std::size_t m2,
               std::size_t dsub, Isa isa, Pq4Table& table) {
    auto code_scores = code_scores_scalar;
    auto quantized = quantized_scalar;
#if defined(__x86_64__)
    if (isa >= Isa::avx2) code_scores = code_scores_avx2, quantized = quantized_avx2;
#endif
    (void)isa;
    thread_local std::vector<float> scores, lowest;
    scores.resize(m * 16), lowest.resize(m);
    float bias = 0.f, widest = 0.f, total = 0.f;
    for (std::size_t s = 0; s < m; ++s) {
        float lo, hi;
        code_scores(query + s * dsub, codebook + s * dsub * 16, dsub, scores.data() + s * 16, lo, hi);
        lowest[s] = lo, bias += lo, widest = std::max(widest, hi - lo), total += hi - lo;
    }
    // One scale for all: an entry at most 255, and the rounded entries of m2 subquantizers sum to
    // at most 65535 (each rounds up by at most a half).
    float per_unit = 0.f;
    if (widest > 0.f) per_unit = std::min(255.f / widest, (65535.f - float(m2)) / total);
    table.bytes.assign(m2 * 16, 0);
    for (std::size_t s = 0; s < m; ++s) {
        quantized(scores.data() + s * 16, lowest[s], per_unit, table.bytes.data() + s * 16);
    }
    table.bias = bias;
    table.scale = per_unit > 0.f ? 1.f / per_unit : 0.f;
}

void pq4_scores(const Pq4Table* const* tables, std::size_t count, const std::uint8_t* blocks,
                std::size_t n, std::size_t m2, Isa isa, float* const* out) {
    const std::size_t num_blocks = (n + kPq4Block - 1) / kPq4Block;
#if defined(__x86_64__)
    if (isa >= Isa::avx2) {
        std::size_t q = 0;
        for (; q + 2 <= count; q += 2) pq4_scores_avx2<2>(tables + q, blocks, num_blocks, m2, out + q);
        if (q < count) pq4_scores_avx2<1>(tables + q, blocks, num_blocks, m2, out + q);
        return;
    }
#endif
#if defined(__aarch64__)
    if (isa == Isa::neon) {
        for (std::size_t q = 0; q < count; ++q) pq4_scores_neon(*tables[q], blocks, num_blocks, m2, out[q]);
        return;
    }
#endif
    (void)isa;
    for (std::size_t q = 0; q < count; ++q) pq4_scores_scalar(*tables[q], blocks, num_blocks, m2, out[q]);
}

}  // namespace amips
