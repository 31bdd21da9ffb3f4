// Pre-tokenizers of byte-level BPE vocabularies: a list of PCRE2 regexes chosen by
// tokenizer.ggml.pre, applied in sequence as llama.cpp does. Each regex splits every
// current piece into its matches and the gaps between them (both are kept), so
// later regexes refine the pieces of earlier ones.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kvtier/status.h"

namespace kvtier::tokenizer_detail {

// What a pre-tokenizer name selects beyond its regexes (llama.cpp's per-type flags).
struct PreTokenizerTraits {
  bool ignore_merges = false;  // a word that is itself a token skips the merges (Llama 3)
  bool add_bos = false;        // default of tokenizer.ggml.add_bos_token
};

class PreTokenizer {
 public:
  // Byte range [begin, end) of one word in the text given to split().
  struct Word {
    uint32_t begin;
    uint32_t end;
  };

  // Errors name the pre-tokenizer when it is unknown.
  static Result<std::shared_ptr<const PreTokenizer>> create(std::string_view pre_name);
  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;

  // Splits valid UTF-8 `text` (at most 4 GiB) into words covering all of it, in order.
  // Thread-safe.
  void split(std::string_view text, std::vector<Word>& words) const;

  const PreTokenizerTraits& traits() const { return traits_; }

 private:
  struct Regex;
  PreTokenizer() = default;
  std::vector<std::unique_ptr<Regex>> regexes_;
  PreTokenizerTraits traits_;
};

}  // namespace kvtier::tokenizer_detail
