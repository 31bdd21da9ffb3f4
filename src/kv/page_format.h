// The page format of the tiered KV cache: one layout in RAM and on disk.
//
// A page holds kTokensPerPage (P = 64) consecutive positions of ONE layer, all KV heads, keys and values,
// at one precision. Why 64:
//   - slabs: an f16 page of a 2-KV-head, head_dim-64 model is 64*2*64*2*2 = 32 KiB, a whole number of 4 KiB
//     slab granules, and quantized pages (5-18 KiB) are small enough that 4-8-page slabs waste little;
//   - codec groups: KIVI keys quantize each channel over the page's tokens, and 64 tokens is inside KIVI's
//     32..128 group range while making the per-channel scale+min cost 32/64 = 0.5 bits/element;
//   - attention tile: one decoded page-head of keys or values is 64 x head_dim f32 = 16 KiB at head_dim 64,
//     which stays in L1/L2 while every query head of the GQA group reads it.
//
// Layout of a page (all offsets in bytes, sections padded to 32 bytes so SIMD loads stay aligned):
//   page   = head[0] head[1] ... head[n_kv_heads-1]          each head_bytes long
//   head   = key section (key_section_bytes) then value section (value_section_bytes)
// Keys are stored CHANNEL-major (a row is one channel across the page's tokens) and values TOKEN-major:
// the kernel then computes q.k for a whole vector of tokens at once (no horizontal sums), KIVI's
// per-channel groups are rows, and the value rows feed the p*V accumulation directly.
// f16 pages:   key section = [head_dim][P] IEEE half; value section = [P][head_dim] IEEE half.
// k16vY pages: the f16 key section, then a quantized value section as below.
// quantized:   key section = params, then codes [head_dim][key_row_code_bytes] (a row packs P codes)
//                params, KeyMode::PerChannel (KIVI):   [head_dim] GroupParams (channel d over the tokens)
//                params, KeyMode::RotatedPerToken:     [P][n_groups] GroupParams (token t, channels of group g;
//                  keys rotated by a per-head Hadamard transform first; the query is rotated the same way)
//              value section = params [P][n_groups] GroupParams, then codes [P][row_code_bytes]
//                (a row packs head_dim codes).
// Key rows pack key_bits-wide codes and value rows value_bits-wide codes (equal for q8/q4/q3/q2, different
// for the split precisions kXvY). The bit layout of a packed code row is documented above
// kv::unpack_code_row (kv/codec.h).
// Element (t, d) decodes to code * scale + min. Quantized pages need P % 8 == 0 (P = 64 always; only the
// f16 sink buffer uses a smaller P). Rows of a partial page past its valid tokens hold code 0 / f16 zero.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace kvtier::kv {

inline constexpr int kTokensPerPage = 64;
inline constexpr size_t kSectionAlign = 32;
inline constexpr size_t kSlabAlign = 64 * 1024;  // a unit of pool caps (pool slabs: PagePool::kSlabBaseAlign)

// Uniform precisions (keys and values at the same width) and split ones, kXvY: keys at X bits, values at
// Y bits (X != Y, both in {8, 4, 3, 2}). The enum values are stable: they name size classes and appear in
// session files.
// k16vY (f16 keys, Y-bit values) is not a ladder rung but the format of the hot tail page when the ladder
// starts quantized: a value row is quantized per token, so it can be written at its first rung's width the
// moment it arrives, while per-channel key groups span the whole page, so keys wait in f16 until the page is
// full (kv/tiered_store.h).
enum class Precision : uint8_t {
  F16 = 0, Q8 = 1, Q4 = 2, Q3 = 3, Q2 = 4,
  K8V4 = 5, K8V3 = 6, K8V2 = 7,
  K4V8 = 8, K4V3 = 9, K4V2 = 10,
  K3V8 = 11, K3V4 = 12, K3V2 = 13,
  K2V8 = 14, K2V4 = 15, K2V3 = 16,
  K16V8 = 17, K16V4 = 18, K16V3 = 19, K16V2 = 20,
};
inline constexpr int kPrecisionCount = 21;

enum class KeyMode : uint8_t {
  PerChannel = 0,       // KIVI: scale+min per channel over the page's tokens
  RotatedPerToken = 1,  // QuaRot-style: Hadamard-rotate each head, then per-token groups like values
};

// Bits of one key code and of one value code (16 for f16).
int key_bits(Precision p);
int value_bits(Precision p);
// Bits of one code of a uniform precision; for a split one, the wider of its key and value widths.
int precision_bits(Precision p);
const char* precision_name(Precision p);  // "f16", "q8", "q4", "q3", "q2", "k4v2", ...
// The precision of keys at kb bits and values at vb bits (16/16 is f16); false if there is none.
bool precision_from_bits(int kb, int vb, Precision* out);

// Scale and minimum of one quantization group: x = code * scale + min.
struct GroupParams {
  uint16_t scale;  // IEEE half
  uint16_t min;    // IEEE half
};
static_assert(sizeof(GroupParams) == 4, "GroupParams is two halves");

struct PageFormat {
  Precision precision = Precision::F16;
  KeyMode key_mode = KeyMode::PerChannel;
  int tokens = kTokensPerPage;  // capacity in positions (sink buffers use fewer)
  int n_kv_heads = 0;
  int head_dim = 0;
  int group = 0;  // elements per per-token group along head_dim (values; rotated keys)

  // Derived (filled by make_page_format).
  int key_bits = 16;              // bits of one key code (16: f16)
  int value_bits = 16;            // bits of one value code (16: f16)
  int n_groups = 0;               // head_dim / group
  size_t row_code_bytes = 0;      // packed codes of one value row (head_dim codes of one token)
  size_t key_row_code_bytes = 0;  // packed codes of one key row (P codes of one channel)
  size_t key_params_bytes = 0;    // 0 for f16
  size_t key_codes_offset = 0;    // within the key section
  size_t key_section_bytes = 0;
  size_t value_params_bytes = 0;  // 0 for f16
  size_t value_codes_offset = 0;  // within the value section
  size_t value_section_bytes = 0;
  size_t head_bytes = 0;
  size_t page_bytes = 0;

  size_t key_section(int head) const { return static_cast<size_t>(head) * head_bytes; }
  size_t value_section(int head) const { return key_section(head) + key_section_bytes; }

  // Storage bits per cached element (K and V, codes + scales + mins + padding), exact.
  double bits_per_element() const;
  double key_bits_per_element() const;
  double value_bits_per_element() const;
  std::string describe() const;
};

// The default group: the largest multiple of 8 that divides head_dim and is at most 64 (the whole head
// at head_dim 64: one f16 scale+min per token-row is 0.5 bit/element; groups of 32 cost 1 bit and bought
// little quality on the test models, see docs/kv_quality.md).
int default_group(int head_dim);

// Validates the geometry (head_dim % 8 == 0, group divides head_dim and is a multiple of 8, ...) and
// computes the derived sizes. Returns false (and leaves `error` set) for an unsupported geometry.
bool make_page_format(Precision precision, KeyMode key_mode, int tokens, int n_kv_heads, int head_dim, int group,
                      PageFormat* out, std::string* error);

// One page as the attention kernels see it: data, its format, and which positions it holds.
struct PageRef {
  const uint8_t* data = nullptr;
  const PageFormat* format = nullptr;
  int first_pos = 0;  // position of row 0
  int n_tokens = 0;   // valid rows (the tail page of a sequence is partial)
};

}  // namespace kvtier::kv
