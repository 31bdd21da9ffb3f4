// Reads of KV pages in the project's page format (kv/page_format.h) from a pool of 32-bit words, shared by the
// shaders that decode pages inside attention (attention_decode.comp, attention_prefill_pages.comp). Needs a
// `pool` buffer of uint declared before the include. Offsets are in bytes from the start of the binding.

uint byte_at(uint b) { return (pool[b >> 2] >> ((b & 3u) * 8u)) & 255u; }
float half_at(uint b) { return unpackHalf2x16(pool[b >> 2] >> ((b & 2u) * 8u)).x; }  // b even

// Code i of a packed row of n codes `bits` wide (kv/codec.h): byte i % (n * bits / 8), bits from
// (i / (n * bits / 8)) * bits.
uint code_at(uint row, uint n, uint bits, uint i) {
  const uint stride = n * bits / 8;
  return (byte_at(row + i % stride) >> ((i / stride) * bits)) & ((1u << bits) - 1u);
}

// Key channel d of token t of one KV head's key section at byte `keys` (tokens per page p): f16 keys are
// channel-major [head_dim][p]; per-channel quantized keys (KeyMode::PerChannel) have a (scale, min) f16 pair
// per channel at the section's start, then a packed row of p codes per channel from codes_offset, row_bytes
// apart. `params`: that pair, which callers load once per page (unused for f16 keys).
float key_at(uint keys, uint p, uint bits, uint codes_offset, uint row_bytes, vec2 params, uint d, uint t) {
  if (bits == 16u) return half_at(keys + 2u * (d * p + t));
  return float(code_at(keys + codes_offset + d * row_bytes, p, bits, t)) * params.x + params.y;
}
vec2 key_params_at(uint keys, uint d) { return unpackHalf2x16(pool[(keys >> 2) + d]); }

// Value channel c of token t of one KV head's value section at byte `values`: f16 values are token-major
// [p][head_dim]; quantized values have a (scale, min) f16 pair per group of `group` channels of each token
// ([p][head_dim / group]) at the section's start, then a packed row of head_dim codes per token from
// codes_offset, row_bytes apart.
float value_at(uint values, uint head_dim, uint bits, uint group, uint codes_offset, uint row_bytes, uint t, uint c) {
  if (bits == 16u) return half_at(values + 2u * (t * head_dim + c));
  const vec2 sm = unpackHalf2x16(pool[(values >> 2) + t * (head_dim / group) + c / group]);
  return float(code_at(values + codes_offset + t * row_bytes, head_dim, bits, c)) * sm.x + sm.y;
}
