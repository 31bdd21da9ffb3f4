// Tokenizers built from GGUF metadata (tokenizer.ggml.*):
//  - "gpt2": byte-level BPE with a pre-tokenizer regex chosen by tokenizer.ggml.pre
//  - "llama": SentencePiece-style BPE over scores with byte fallback
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kvtier/gguf.h"
#include "kvtier/status.h"

namespace kvtier {

class Tokenizer {
 public:
  static Result<std::unique_ptr<Tokenizer>> from_gguf(const gguf::File& file);
  virtual ~Tokenizer() = default;

  // Text to ids. add_bos prepends BOS when the vocabulary has one;
  // parse_special recognises control/user-defined token texts in `text`.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special) const = 0;
  // The bytes one token stands for (may be a partial UTF-8 sequence).
  virtual std::string token_to_piece(int32_t id) const = 0;

  virtual int32_t n_vocab() const = 0;
  virtual int32_t bos_id() const = 0;  // -1 if none
  virtual int32_t eos_id() const = 0;  // -1 if none
  virtual bool add_bos_default() const = 0;  // tokenizer.ggml.add_bos_token
  // End-of-generation: EOS, EOT, and similar control tokens.
  virtual bool is_end_of_generation(int32_t id) const = 0;
  virtual std::string_view model_name() const = 0;  // "gpt2" or "llama"
};

// Turns a stream of token ids into text that is always valid UTF-8: bytes of an
// incomplete multi-byte sequence are held back until the sequence completes.
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

}  // namespace kvtier
