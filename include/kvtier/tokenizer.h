// Tokenizers built from GGUF metadata (tokenizer.ggml.*), reproducing llama.cpp's
// token ids exactly:
//  - "gpt2": byte-level BPE with a pre-tokenizer regex chosen by tokenizer.ggml.pre
//  - "llama": SentencePiece-style BPE over scores with byte fallback
//
// Rendering (token_to_piece) follows llama.cpp with special=false: control and
// unknown-type tokens render as the empty string, user-defined tokens as their
// text. Callers that want to show a control token use token_text().
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kvtier/gguf.h"
#include "kvtier/status.h"

namespace kvtier {

// tokenizer.ggml.token_type values (GGUF / llama.cpp numbering).
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

class Tokenizer {
 public:
  static Result<std::unique_ptr<Tokenizer>> from_gguf(const gguf::File& file);
  virtual ~Tokenizer() = default;

  // Text to ids. add_bos prepends BOS when the vocabulary has one;
  // parse_special recognises control/user-defined token texts in `text`.
  // (User-defined token texts are recognised even when parse_special is false,
  // as llama.cpp and Hugging Face tokenizers do.)
  virtual std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special) const = 0;
  // The bytes one token stands for (may be a partial UTF-8 sequence). Empty for
  // control/unknown/unused tokens and for ids outside the vocabulary.
  virtual std::string token_to_piece(int32_t id) const = 0;

  virtual int32_t n_vocab() const = 0;
  virtual int32_t bos_id() const = 0;  // -1 if none
  virtual int32_t eos_id() const = 0;  // -1 if none
  virtual bool add_bos_default() const = 0;  // tokenizer.ggml.add_bos_token
  // End-of-generation: EOS, EOT, and similar control tokens.
  virtual bool is_end_of_generation(int32_t id) const = 0;
  virtual std::string_view model_name() const = 0;  // "gpt2" or "llama"

  // --- additions beyond the first interface ---
  virtual int32_t eot_id() const = 0;  // end of turn; -1 if none
  virtual int32_t unk_id() const = 0;  // -1 if none
  // The vocabulary string as stored in the file ("" outside the vocabulary).
  virtual std::string_view token_text(int32_t id) const = 0;
  // The token's type (kUndefined outside the vocabulary).
  virtual TokenType token_type(int32_t id) const = 0;
  // tokenizer.ggml.pre as used ("default" when absent; "" for "llama" models).
  virtual std::string_view pre_tokenizer_name() const = 0;
  // What loading ignored and the user should hear about (a special-token id outside the vocabulary …).
  virtual const std::vector<std::string>& load_warnings() const = 0;
  // Concatenated pieces. For SentencePiece vocabularies the space that encode()
  // prefixes (tokenizer.ggml.add_space_prefix) is removed from the first piece,
  // as llama.cpp's detokenizer does, so decode(encode(x, false, false)) == x for
  // valid UTF-8 x. Unlike llama.cpp it never "cleans" spaces before punctuation.
  virtual std::string decode(std::span<const int32_t> ids) const = 0;
};

// Turns a stream of token ids into text that is always valid UTF-8: bytes of an
// incomplete multi-byte sequence are held back until the sequence completes;
// bytes that can never become valid are replaced by U+FFFD at once.
class StreamingDetokenizer {
 public:
  explicit StreamingDetokenizer(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}
  // Returns the text that became complete with this token (possibly empty).
  std::string push(int32_t id);
  // End of stream: remaining bytes, with invalid/incomplete sequences replaced by U+FFFD.
  std::string flush();

 private:
  const Tokenizer& tokenizer_;
  std::string pending_;
};

// UTF-8 helpers shared by the tokenizers and their tests.
namespace utf8 {
// Length of the longest prefix of `bytes` that is a run of complete, valid UTF-8
// sequences (no overlongs, no surrogates, nothing above U+10FFFF).
size_t valid_prefix_length(std::string_view bytes);
// Length of the longest prefix that does not end inside a sequence that more bytes
// could still complete: what a stream can pass on (after sanitize()) right now.
size_t complete_prefix_length(std::string_view bytes);
// `bytes` with every maximal invalid subpart replaced by U+FFFD (the Unicode
// "substitution of maximal subparts" practice). Valid input comes back unchanged.
std::string sanitize(std::string_view bytes);
}  // namespace utf8

}  // namespace kvtier
