// Page codecs: encode a page of f32 keys/values into the page format (kv/page_format.h) and decode it back.
// The scalar decoders here are the definition of the format; the attention kernels' SIMD decoders
// (kernels/cpu/paged_attention.cpp) are tested against them.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kv/page_format.h"

namespace kvtier::kv {

// Bit layout of one packed code row (n codes of `bits` bits, n % 8 == 0): a value row packs the head_dim
// codes of one token, a key row the P codes of one channel (kv/page_format.h).
// A row is one or two bit planes, stored back to back:
//   bits 8, 4, 2: one plane of that width;
//   bits 3:       a 2-bit plane (low two bits of each code) then a 1-bit plane (the high bit):
//                 code = low2 | high1 << 2.
// A plane of width w (1, 2, 4 or 8) over n codes takes n*w/8 bytes. With e = 8/w codes per byte and
// s = n/e (the plane's byte count), byte i holds code i + j*s in bits [j*w, j*w + w), j = 0 .. e-1:
//   w = 4: byte i = code[i] | code[i + n/2] << 4
//   w = 2: byte i = code[i] | code[i + n/4] << 2 | code[i + n/2] << 4 | code[i + 3n/4] << 6
//   w = 1: byte i = bit j is code[i + j*n/8]
// Why strided and not adjacent: a SIMD decoder loads L consecutive bytes and, with one shift and mask
// per j, gets L consecutive codes, whatever its vector width L.
size_t packed_row_bytes(int n, int bits);
void pack_code_row(const uint8_t* codes, int n, int bits, uint8_t* packed);    // codes: [n], values < 2^bits
void unpack_code_row(const uint8_t* packed, int n, int bits, uint8_t* codes);  // codes: [n]

// Chooses scale and min for x[0..n) at `bits` so that every x is within scale/2 of code*scale + min
// (scale rounded up and min rounded down to f16 so that the f16 parameters still cover the range).
GroupParams choose_group_params(const float* x, size_t n, size_t stride, int bits);
// The parameters the encoder uses: the least-squares fit among the covering parameters above and grids a
// little finer than them (the group's outliers then clip to the end codes), i.e. the lowest squared error
// sum (code*scale + min - x)^2 over those candidates, never above that of choose_group_params. At 2-4
// bits this is what makes small groups usable (llama.cpp's K-quants search the same way). 8-bit groups
// keep the covering parameters.
GroupParams fit_group_params(const float* x, size_t n, size_t stride, int bits);
// code = round((x - min) / scale) (half to even) clamped to [0, 2^bits - 1]; NaN gives 0.
uint8_t quantize_value(float x, float scale, float min, int bits);

// Encodes n_tokens (1..format.tokens) rows into `page` (format.page_bytes bytes; rows past n_tokens zeroed).
//   k, v: [n_tokens, n_kv_heads, head_dim] f32. With KeyMode::RotatedPerToken, k must already be
//   rotated (rotate_heads) — the cache rotates keys once when they arrive.
void encode_page(const PageFormat& format, const float* k, const float* v, int n_tokens, uint8_t* page);

// Writes rows [first, first + n) of a page with f16 keys: f16 or k16vY (the hot ring and the sink buffer
// fill incrementally). Quantized value rows get the bytes encode_page would give them (groups are per token).
//   k, v: [n, n_kv_heads, head_dim] f32.
void write_rows(const PageFormat& format, uint8_t* page, int first, int n, const float* k, const float* v);

// Whether two formats store value rows identically (same width, group and tokens), and copying rows
// [first, first + n) of every head's value section between two such pages.
bool same_value_layout(const PageFormat& a, const PageFormat& b);
void copy_value_rows(const PageFormat& from, const uint8_t* source, const PageFormat& to, uint8_t* target, int first,
                     int n);

// Re-encodes a full page from one format to another. A section whose layout the two formats share (e.g. the
// 4-bit values of a k16v4 tail page going to q4, or the keys of q4 going to k4v2) is copied, not decoded and
// quantized again, so a page loses precision only where its width drops.
//   k, v: [tokens, n_kv_heads, head_dim] f32 scratch.
void transcode_page(const PageFormat& from, const uint8_t* source, const PageFormat& to, uint8_t* target, float* k,
                    float* v);

// Scalar reference decoders.
//   decode_page_head: k, v: [n_tokens, head_dim] f32 of one KV head.
//   decode_page:      k, v: [n_tokens, n_kv_heads, head_dim] f32.
void decode_page_head(const PageFormat& format, const uint8_t* page, int head, int n_tokens, float* k, float* v);
void decode_page(const PageFormat& format, const uint8_t* page, int n_tokens, float* k, float* v);

// The per-head rotation of RotatedPerToken keys: a normalised Walsh-Hadamard transform applied to each
// block of B consecutive elements, B = the largest power of two (<= 256) dividing head_dim. It is
// orthogonal and its own inverse, so q.k == rotate(q).rotate(k): rotate queries with the same function.
int hadamard_block(int head_dim);
void hadamard_rotate(float* x, int head_dim);                   // x: [head_dim], in place
void rotate_heads(float* x, int64_t n_rows, int head_dim);      // x: [n_rows, head_dim], in place

}  // namespace kvtier::kv
