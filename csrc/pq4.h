// Approximate scores from 4-bit product-quantization codes laid out as faiss's fast-scan lists
// (IndexIVFPQFastScan's), read in place: a query's table of subquantizer scores quantized to
// bytes, looked up for 32 keys at a time (a byte shuffle per pair of subquantizers with AVX2, a
// table lookup per 16 codes with NEON), and summed in 16 bits, as faiss's own fast scan does.
// Every instruction set gives the same bits.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels.h"

namespace amips {

// faiss's layout: keys in blocks of kPq4Block, a block m2 * 16 bytes (m2 the subquantizers,
// rounded up to even). For each pair of subquantizers (2p, 2p + 1) a block holds 32 bytes: byte
// j < 16 has subquantizer 2p's codes of keys kPq4Order[j] (low nibble) and kPq4Order[j] + 16 (high
// nibble), byte 16 + j the same for 2p + 1.
constexpr std::size_t kPq4Block = 32;
constexpr std::uint8_t kPq4Order[16] = {0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15};

// A query's table: entry (s, c) the score of code c of subquantizer s as a byte, so that a key's
// score is bias + scale * (the sum of its m2 entries); that sum fits 16 bits.
struct Pq4Table {
    std::vector<std::uint8_t> bytes;  // m2 x 16
    float bias = 0.f, scale = 0.f;
};

// The table of query (m * dsub floats) for a codebook of m subquantizers' 16 codes, laid out
// (m, dsub, 16) floats (component t of code c of subquantizer s at (s * dsub + t) * 16 + c),
// m2 >= m subquantizers (the padding ones score 0).
void pq4_table(const float* query, const float* codebook, std::size_t m, std::size_t m2,
               std::size_t dsub, Isa isa, Pq4Table& table);

// out[q][i] = tables[q]'s score of key i of blocks, for q < count and i < round_up(n, kPq4Block)
// (the keys past n score whatever the padding codes hold): queries two at a time read the codes
// once for both.
void pq4_scores(const Pq4Table* const* tables, std::size_t count, const std::uint8_t* blocks,
                std::size_t n, std::size_t m2, Isa isa, float* const* out);

}  // namespace amips
