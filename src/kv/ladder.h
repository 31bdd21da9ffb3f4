// The precision ladder: which precision a page of the KV cache has, by the age of its newest token.
//
// Spec grammar (the --kv-ladder flag):  rung ("," rung)*     rung = precision [":" count]
//   precision = f16 | q8 | q4 | q3 | q2 | kXvY (keys X bits, values Y bits; X != Y in 8, 4, 3, 2);
//   count = positive integer, optional suffix k (x1024).
// Counts are lengths: "f16:128,q8:512,q4:4096,q2" keeps the newest 128 tokens in f16, the next 512 in
// 8-bit, the next 4096 in 4-bit and every older token in 2-bit. Every rung but the last needs a count,
// the last takes none, and precision never rises with age (neither the key nor the value width). A single
// precision ("q4") is a uniform preset.
// Sinks: the first n_sinks positions of a sequence stay f16 whatever their age (attention sinks).
//
// Pages move down the ladder whole: a page is re-encoded to the rung that holds its NEWEST token once that
// token has left the page's current rung (the page has wholly left it). Planning is separate from applying
// so that the cache can re-encode off the decode critical path.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kv/page_format.h"
#include "kvtier/status.h"

namespace kvtier::kv {

struct Rung {
  Precision precision = Precision::F16;
  int64_t tokens = -1;  // -1: unbounded (the last rung)
};

struct LadderSpec {
  std::vector<Rung> rungs;  // newest first
  int n_sinks = 4;

  // Index of the rung that holds a token of this age (0 = the newest token).
  int rung_for_age(int64_t age) const;
  std::string describe() const;  // canonical spec text, e.g. "f16:128,q8:512,q4:4096,q2 +4 sinks"
};

// Parses a ladder spec (or a preset). Errors quote the spec and name the offending rung.
Result<LadderSpec> parse_ladder(std::string_view spec, int n_sinks = 4);

// Where a page stands and where it should go.
struct PageMove {
  int64_t page = 0;  // logical page number within the layer
  int from_rung = 0;
  int to_rung = 0;
};

// The ladder as the store runs it: rung 0 is the hot ring's. A spec that starts with f16 is returned as it
// is; one that starts quantized gets a zero-length rung 0 in k16vY, Y the first rung's value width: the
// ring's tail page then holds f16 keys (a per-channel key group needs the whole page) and values already
// quantized as the first rung will hold them (value groups are per token), so that a quantized ladder keeps
// no f16 copy of its newest values. (This rung is internal: parse_ladder does not accept k16vY.)
LadderSpec with_hot_rung(const LadderSpec& spec);

// The rung a full page belongs to: that of its newest token, at position last_pos, when the sequence
// holds n_tokens positions.
int target_rung(const LadderSpec& ladder, int64_t last_pos, int64_t n_tokens);

// Moves for pages whose target rung is below their current one.
//   current_rungs[i]: the rung of logical page i;  page i holds positions
//   [first_pos + i * page_tokens, first_pos + (i + 1) * page_tokens); only full pages move.
std::vector<PageMove> plan_moves(const LadderSpec& ladder, const std::vector<uint8_t>& current_rungs,
                                 int64_t first_pos, int page_tokens, int64_t n_tokens);

}  // namespace kvtier::kv
