// Precision ladder: spec parsing and page-move planning.
#include "kv/ladder.h"

#include <cassert>
#include <cctype>
#include <charconv>

namespace kvtier::kv {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

bool parse_precision(std::string_view name, Precision* out) {
  for (int i = 0; i < kPrecisionCount; ++i) {
    const Precision p = static_cast<Precision>(i);
    if (key_bits(p) == 16 && value_bits(p) != 16) continue;  // k16vY: the hot tail page's format, not a rung
    if (name == precision_name(p)) {
      *out = static_cast<Precision>(i);
      return true;
    }
  }
  return false;
}

}  // namespace

int LadderSpec::rung_for_age(int64_t age) const {
  int64_t end = 0;
  for (size_t i = 0; i < rungs.size(); ++i) {
    if (rungs[i].tokens < 0) return static_cast<int>(i);
    end += rungs[i].tokens;
    if (age < end) return static_cast<int>(i);
  }
  return static_cast<int>(rungs.size()) - 1;
}

std::string LadderSpec::describe() const {
  std::string s;
  for (const Rung& r : rungs) {
    if (!s.empty()) s += ',';
    s += precision_name(r.precision);
    if (r.tokens >= 0) s += ':' + std::to_string(r.tokens);
  }
  return s + " +" + std::to_string(n_sinks) + " sinks";
}

Result<LadderSpec> parse_ladder(std::string_view spec, int n_sinks) {
  const std::string quoted = "KV ladder \"" + std::string(spec) + "\": ";
  if (n_sinks < 0) return Status::error(quoted + "the number of sink tokens must be >= 0, got " + std::to_string(n_sinks));
  LadderSpec ladder;
  ladder.n_sinks = n_sinks;
  if (trim(spec).empty()) return Status::error(quoted + "empty; expected e.g. \"f16:128,q8:512,q4:4096,q2\" or a preset f16|q8|q4|q3|q2");
  std::string_view rest = spec;
  int index = 0;
  while (true) {
    ++index;
    const size_t comma = rest.find(',');
    const std::string_view item = trim(rest.substr(0, comma));
    const std::string where = "rung " + std::to_string(index) + " \"" + std::string(item) + "\"";
    if (item.empty()) return Status::error(quoted + "rung " + std::to_string(index) + " is empty");
    const size_t colon = item.find(':');
    const std::string_view name = trim(item.substr(0, colon));
    Rung rung;
    if (!parse_precision(name, &rung.precision)) {
      return Status::error(quoted + where + ": unknown precision \"" + std::string(name) +
                           "\"; expected one of f16, q8, q4, q3, q2, or kXvY (keys X bits, values Y bits, X != Y "
                           "in 8, 4, 3, 2, e.g. k4v2)");
    }
    if (colon != std::string_view::npos) {
      std::string_view count = trim(item.substr(colon + 1));
      int64_t multiplier = 1;
      if (!count.empty() && (count.back() == 'k' || count.back() == 'K')) {
        multiplier = 1024;
        count.remove_suffix(1);
      }
      int64_t value = 0;
      const auto [end, ec] = std::from_chars(count.data(), count.data() + count.size(), value);
      if (count.empty() || ec != std::errc() || end != count.data() + count.size() || value <= 0 ||
          value > (int64_t{1} << 40)) {
        return Status::error(quoted + where + ": the token count must be a positive integer (optionally with k), got \"" +
                             std::string(item.substr(colon + 1)) + "\"");
      }
      rung.tokens = value * multiplier;
    }
    if (!ladder.rungs.empty() && (key_bits(rung.precision) > key_bits(ladder.rungs.back().precision) ||
                                  value_bits(rung.precision) > value_bits(ladder.rungs.back().precision))) {
      return Status::error(quoted + where + ": precision must not rise with age (" +
                           precision_name(ladder.rungs.back().precision) + " is followed by " +
                           precision_name(rung.precision) + ")");
    }
    ladder.rungs.push_back(rung);
    if (comma == std::string_view::npos) break;
    if (rung.tokens < 0) {
      return Status::error(quoted + where + ": every rung but the last needs a token count (\"" + std::string(name) +
                           ":N\")");
    }
    rest = rest.substr(comma + 1);
  }
  if (ladder.rungs.back().tokens >= 0) {
    return Status::error(quoted + "the last rung \"" + std::string(precision_name(ladder.rungs.back().precision)) + ":" +
                         std::to_string(ladder.rungs.back().tokens) +
                         "\" takes no count: it holds every older token (write \"" +
                         precision_name(ladder.rungs.back().precision) + "\")");
  }
  return ladder;
}

LadderSpec with_hot_rung(const LadderSpec& spec) {
  LadderSpec hot = spec;
  const Precision first = spec.rungs.front().precision;
  if (first == Precision::F16) return hot;
  Precision tail = Precision::F16;
  [[maybe_unused]] const bool found = precision_from_bits(16, value_bits(first), &tail);
  assert(found);
  hot.rungs.insert(hot.rungs.begin(), Rung{tail, 0});
  return hot;
}

int target_rung(const LadderSpec& ladder, int64_t last_pos, int64_t n_tokens) {
  return ladder.rung_for_age(n_tokens - 1 - last_pos);
}

std::vector<PageMove> plan_moves(const LadderSpec& ladder, const std::vector<uint8_t>& current_rungs,
                                 int64_t first_pos, int page_tokens, int64_t n_tokens) {
  std::vector<PageMove> moves;
  for (size_t i = 0; i < current_rungs.size(); ++i) {
    const int64_t last_pos = first_pos + static_cast<int64_t>(i + 1) * page_tokens - 1;
    if (last_pos >= n_tokens) break;  // partial page: it stays where new tokens arrive
    const int target = target_rung(ladder, last_pos, n_tokens);
    if (target > current_rungs[i]) moves.push_back({static_cast<int64_t>(i), current_rungs[i], target});
  }
  return moves;
}

}  // namespace kvtier::kv
