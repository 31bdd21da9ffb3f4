// Pre-tokenizer regexes per tokenizer.ggml.pre, run with PCRE2 (UTF + UCP, JIT).
//
// llama.cpp runs these through hand-written scanners (gpt2, llama3) or through
// std::regex on a "collapsed" text where each code point becomes one byte naming
// its category. Both amount to the regexes below with two details made explicit:
//  - \s is llama.cpp's whitespace set (Unicode White_Space: U+0009-000D, U+0020,
//    U+0085, U+00A0, U+1680, U+2000-200A, U+2028, U+2029, U+202F, U+205F, U+3000),
//    which is not PCRE2's (PCRE2 adds U+180E), so it is spelled out;
//  - literal code point ranges (deepseek-coder's CJK class) never match those
//    whitespace characters, because llama.cpp turns them into U+000B first.
#include "engine/tokenizer_pretokenize.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <string>

namespace kvtier::tokenizer_detail {

struct PreTokenizer::Regex {
  pcre2_code* code = nullptr;
  std::string pattern;
  ~Regex() { pcre2_code_free(code); }
};

namespace {

// llama.cpp's whitespace set, as the inside of a character class.
const std::string kWs =
    R"(\t\n\x0B\f\r\x20\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})";
const std::string kSpace = "[" + kWs + "]";
const std::string kNotSpace = "[^" + kWs + "]";

// GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)
std::string gpt2_regex() {
  return R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^)" + kWs + R"(\p{L}\p{N}]+|)" + kSpace + "+(?!" +
         kNotSpace + ")";
}

// Llama 3 (digits in runs of up to 3) and Qwen2 (single digits):
// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
std::string llama3_style_regex(const std::string& digits) {
  return R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|)" + digits +
         R"(| ?[^)" + kWs + R"(\p{L}\p{N}]+[\r\n]*|)" + kSpace + R"(*[\r\n]+|)" + kSpace + "+(?!" + kNotSpace +
         ")|" + kSpace + "+";
}

enum class RegexSet { kLlama3, kQwen2, kGpt2, kSmollm, kDeepseekCoder, kFalcon, kDefault };

std::vector<std::string> regexes_for(RegexSet set) {
  switch (set) {
    case RegexSet::kLlama3:
      return {llama3_style_regex(R"(\p{N}{1,3})")};
    case RegexSet::kQwen2:
      return {llama3_style_regex(R"(\p{N})")};
    case RegexSet::kGpt2:
      return {gpt2_regex()};
    case RegexSet::kSmollm:
      return {R"(\p{N})", gpt2_regex()};
    case RegexSet::kDeepseekCoder:
      // [一-龥ࠀ-一가-퟿]+ is U+0800-9FA5 and U+AC00-D7FF, less the whitespace in it.
      return {R"([\r\n])", kSpace + R"(?\p{L}+)", kSpace + R"(?\p{P}+)",
              R"([\x{0800}-\x{167F}\x{1681}-\x{1FFF}\x{200B}-\x{2027}\x{202A}-\x{202E}\x{2030}-\x{205E})"
              R"(\x{2060}-\x{2FFF}\x{3001}-\x{9FA5}\x{AC00}-\x{D7FF}]+)",
              R"(\p{N})"};
    case RegexSet::kFalcon:
      return {R"([\p{P}$+<=>^~|`]+)", gpt2_regex(), "[0-9][0-9][0-9]"};
    case RegexSet::kDefault:
      return {R"([\p{P}$+<=>^~|]+)", gpt2_regex(), R"(\p{N}+)", "[0-9][0-9][0-9]"};
  }
  return {};
}

struct PreTokenizerName {
  std::string_view name;
  RegexSet regexes;
  PreTokenizerTraits traits;
};

// tokenizer.ggml.pre values and what llama.cpp does with them.
constexpr PreTokenizerTraits kPlain{};
constexpr PreTokenizerTraits kLlama3Traits{.ignore_merges = true, .add_bos = true};
constexpr PreTokenizerName kPreTokenizers[] = {
    {"default", RegexSet::kDefault, kPlain},
    {"llama3", RegexSet::kLlama3, kLlama3Traits},
    {"llama-v3", RegexSet::kLlama3, kLlama3Traits},
    {"llama-bpe", RegexSet::kLlama3, kLlama3Traits},
    {"falcon3", RegexSet::kLlama3, kLlama3Traits},
    {"falcon-h1", RegexSet::kLlama3, kLlama3Traits},
    {"pixtral", RegexSet::kLlama3, kLlama3Traits},
    {"midm-2.0", RegexSet::kLlama3, kLlama3Traits},
    {"lfm2", RegexSet::kLlama3, kLlama3Traits},
    {"dbrx", RegexSet::kLlama3, kPlain},
    {"smaug-bpe", RegexSet::kLlama3, kPlain},
    {"qwen2", RegexSet::kQwen2, kPlain},
    {"deepseek-r1-qwen", RegexSet::kQwen2, kPlain},
    {"stablelm2", RegexSet::kQwen2, kPlain},
    {"megrez", RegexSet::kQwen2, kPlain},
    {"gpt-2", RegexSet::kGpt2, kPlain},
    {"phi-2", RegexSet::kGpt2, kPlain},
    {"mpt", RegexSet::kGpt2, kPlain},
    {"olmo", RegexSet::kGpt2, kPlain},
    {"jais", RegexSet::kGpt2, kPlain},
    {"gigachat", RegexSet::kGpt2, kPlain},
    {"exaone4", RegexSet::kGpt2, kPlain},
    {"trillion", RegexSet::kGpt2, kPlain},
    {"smollm", RegexSet::kSmollm, kPlain},
    {"starcoder", RegexSet::kSmollm, kPlain},
    {"refact", RegexSet::kSmollm, kPlain},
    {"command-r", RegexSet::kSmollm, kPlain},
    {"codeshell", RegexSet::kSmollm, kPlain},
    {"exaone", RegexSet::kSmollm, kPlain},
    {"minerva-7b", RegexSet::kSmollm, kPlain},
    {"deepseek-coder", RegexSet::kDeepseekCoder, kPlain},
    {"falcon", RegexSet::kFalcon, kPlain},
};

// Appends the matches of `code` in text[word.begin, word.end) and the gaps between
// them, as std::regex_iterator over that range would see them (the regex sees only
// the word, so lookaheads stop at its end).
void split_word(const pcre2_code* code, std::string_view text, PreTokenizer::Word word, pcre2_match_data* match,
                pcre2_match_context* context, std::vector<PreTokenizer::Word>& out) {
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data() + word.begin);
  const PCRE2_SIZE length = word.end - word.begin;
  PCRE2_SIZE gap_start = 0;
  PCRE2_SIZE pos = 0;
  while (pos < length) {
    const int rc = pcre2_match(code, subject, length, pos, PCRE2_NO_UTF_CHECK, match, context);
    if (rc < 0) break;  // no match (or a resource limit): the rest is one gap
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match);
    const PCRE2_SIZE match_begin = ovector[0];
    PCRE2_SIZE match_end = ovector[1];
    if (match_end == match_begin) {
      // An empty match splits nothing; step over one code point and search again.
      pos = match_begin + 1;
      while (pos < length && (subject[pos] & 0xC0) == 0x80) ++pos;
      continue;
    }
    if (match_begin > gap_start) out.push_back({word.begin + uint32_t(gap_start), word.begin + uint32_t(match_begin)});
    out.push_back({word.begin + uint32_t(match_begin), word.begin + uint32_t(match_end)});
    gap_start = pos = match_end;
  }
  if (gap_start < length) out.push_back({word.begin + uint32_t(gap_start), word.end});
}

}  // namespace

PreTokenizer::~PreTokenizer() = default;

Result<std::shared_ptr<const PreTokenizer>> PreTokenizer::create(std::string_view pre_name) {
  const PreTokenizerName* found = nullptr;
  for (const auto& entry : kPreTokenizers) {
    if (entry.name == pre_name) found = &entry;
  }
  if (!found) {
    std::string known;
    for (const auto& entry : kPreTokenizers) {
      known += (known.empty() ? "" : ", ") + std::string(entry.name);
    }
    return Status::error("tokenizer: unknown pre-tokenizer type '" + std::string(pre_name) +
                         "' (tokenizer.ggml.pre); supported: " + known);
  }

  std::shared_ptr<PreTokenizer> pre(new PreTokenizer());
  pre->traits_ = found->traits;
  for (std::string& pattern : regexes_for(found->regexes)) {
    int error_code = 0;
    PCRE2_SIZE error_offset = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                     PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
    if (!code) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error_code, message, sizeof(message));
      return Status::error("tokenizer: pre-tokenizer '" + std::string(pre_name) + "': regex does not compile at " +
                           std::to_string(error_offset) + ": " + reinterpret_cast<const char*>(message));
    }
    // JIT makes matching several times faster; without it PCRE2 interprets.
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
    auto regex = std::make_unique<Regex>();
    regex->code = code;
    regex->pattern = std::move(pattern);
    pre->regexes_.push_back(std::move(regex));
  }
  return std::shared_ptr<const PreTokenizer>(std::move(pre));
}

void PreTokenizer::split(std::string_view text, std::vector<Word>& words) const {
  words.clear();
  if (text.empty()) return;
  words.push_back({0, static_cast<uint32_t>(text.size())});

  pcre2_match_data* match = pcre2_match_data_create(1, nullptr);
  // A private JIT stack per call keeps split() thread-safe and lets long runs of
  // whitespace backtrack without hitting the 32 KiB default.
  pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  if (stack && context) pcre2_jit_stack_assign(context, nullptr, stack);

  std::vector<Word> next;
  for (const auto& regex : regexes_) {
    next.clear();
    next.reserve(words.size() * 2);
    for (const Word& w : words) split_word(regex->code, text, w, match, context, next);
    words.swap(next);
  }

  pcre2_match_context_free(context);
  pcre2_jit_stack_free(stack);
  pcre2_match_data_free(match);
}

}  // namespace kvtier::tokenizer_detail
