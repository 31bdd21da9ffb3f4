// Private parts of the tokenizers: the vocabulary read from GGUF metadata, the
// special-token partition of the input, the shared Tokenizer base, and the two
// model-specific factories (byte-level BPE, SentencePiece BPE).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "kvtier/gguf.h"
#include "kvtier/status.h"
#include "kvtier/tokenizer.h"

namespace kvtier::tokenizer_detail {

// Hash and equality that let an unordered_map<std::string, ...> be searched with a
// string_view without building a std::string.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
using TextIndex = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;
// The same over views of strings kept elsewhere (a vocabulary's texts: no second copy of 100K+ strings).
using TextViewIndex = std::unordered_map<std::string_view, int32_t, StringHash, std::equal_to<>>;

// Everything llama.cpp derives from tokenizer.ggml.* that is not specific to one
// algorithm. Arrays are indexed by token id: [n_vocab].
// Move-only: `index` views the strings of `texts`, which a move keeps in place and a copy would not.
struct Vocab {
  Vocab() = default;
  Vocab(Vocab&&) = default;
  Vocab& operator=(Vocab&&) = default;
  Vocab(const Vocab&) = delete;
  Vocab& operator=(const Vocab&) = delete;

  std::string model;  // tokenizer.ggml.model: "gpt2" or "llama"
  std::string pre;    // tokenizer.ggml.pre as used ("default" if absent; "" for llama)

  std::vector<std::string> texts;  // [n_vocab] token strings (empty ones renamed "[EMPTY_i]")
  std::vector<float> scores;       // [n_vocab] 0 when the file has none
  std::vector<TokenType> types;    // [n_vocab] after llama.cpp's overrides
  std::vector<uint8_t> lstrip;     // [n_vocab] 1: eat whitespace left of this special token
  std::vector<uint8_t> rstrip;     // [n_vocab] 1: eat whitespace right of it
  std::vector<uint8_t> eog;        // [n_vocab] 1: ends generation
  std::vector<std::string> warnings;  // what loading ignored (e.g. a special id outside the vocabulary)
  TextViewIndex index;             // text -> id; views into `texts`

  int32_t bos = -1, eos = -1, eot = -1, eom = -1, unk = -1, sep = -1, pad = -1, mask = -1;
  int32_t fim_pre = -1, fim_suf = -1, fim_mid = -1, fim_pad = -1, fim_rep = -1, fim_sep = -1;
  bool add_bos = false;
  bool add_eos = false;
  bool add_space_prefix = false;

  // Control, user-defined and unknown-type tokens, longest text first: the order
  // in which llama.cpp cuts them out of the input.
  std::vector<int32_t> specials_longest_first;

  int32_t n_vocab() const { return static_cast<int32_t>(texts.size()); }
  bool valid(int32_t id) const { return id >= 0 && id < n_vocab(); }
  int32_t find(std::string_view text) const {
    auto it = index.find(text);
    return it == index.end() ? -1 : it->second;
  }
};

// Per-model defaults that the metadata may override (llama.cpp's per-type table).
struct VocabDefaults {
  int32_t bos = -1, eos = -1, unk = -1;
  bool add_bos = false;
  bool add_space_prefix = false;
};

// Reads tokens, scores, types and special ids; applies llama.cpp's text-based
// special-token detection (EOT/EOM/FIM/EOG). `defaults` must already reflect the
// model type and pre-tokenizer.
Result<Vocab> load_vocab(const gguf::File& file, std::string model, std::string pre, VocabDefaults defaults);

// One piece of the input after special tokens were cut out: either a token id or a
// byte range of the original text.
struct Fragment {
  int32_t token = -1;  // >= 0: a special token
  size_t offset = 0;   // token < 0: text bytes [offset, offset + length)
  size_t length = 0;
};

// Cuts special-token texts out of `text` the way llama.cpp's tokenizer_st_partition
// does: each special token in turn (longest first) is found in every remaining text
// fragment. Control and unknown-type tokens only when parse_special; user-defined
// always.
std::vector<Fragment> partition_special(const Vocab& vocab, std::string_view text, bool parse_special);

// Shared implementation of the public interface; subclasses turn a text fragment
// into ids.
class VocabTokenizer : public Tokenizer {
 public:
  explicit VocabTokenizer(Vocab vocab) : vocab_(std::move(vocab)) {}

  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special) const override;
  std::string token_to_piece(int32_t id) const override;
  int32_t n_vocab() const override { return vocab_.n_vocab(); }
  int32_t bos_id() const override { return vocab_.bos; }
  int32_t eos_id() const override { return vocab_.eos; }
  int32_t eot_id() const override { return vocab_.eot; }
  int32_t unk_id() const override { return vocab_.unk; }
  bool add_bos_default() const override { return vocab_.add_bos; }
  bool is_end_of_generation(int32_t id) const override { return vocab_.valid(id) && vocab_.eog[id]; }
  std::string_view model_name() const override { return vocab_.model; }
  std::string_view pre_tokenizer_name() const override { return vocab_.pre; }
  const std::vector<std::string>& load_warnings() const override { return vocab_.warnings; }
  std::string_view token_text(int32_t id) const override {
    return vocab_.valid(id) ? std::string_view(vocab_.texts[id]) : std::string_view();
  }
  TokenType token_type(int32_t id) const override { return vocab_.valid(id) ? vocab_.types[id] : TokenType::kUndefined; }
  std::string decode(std::span<const int32_t> ids) const override;

  const Vocab& vocab() const { return vocab_; }

 protected:
  // Per-call state a subclass may keep across the fragments of one encode() call
  // (e.g. a cache of words already tokenized). Created by begin_encode().
  struct EncodeState {
    virtual ~EncodeState() = default;
  };
  virtual std::unique_ptr<EncodeState> begin_encode() const { return nullptr; }
  // Appends the ids of one text fragment. `after_special` is true for the first
  // fragment and for fragments that follow a special token (SentencePiece adds
  // its space prefix there).
  virtual void encode_fragment(std::string_view text, bool after_special, EncodeState* state,
                               std::vector<int32_t>& out) const = 0;
  // Precomputed token_to_piece results: [n_vocab]. Subclasses fill it.
  std::vector<std::string> pieces_;
  Vocab vocab_;
};

Result<std::unique_ptr<Tokenizer>> make_bpe_tokenizer(const gguf::File& file);
Result<std::unique_ptr<Tokenizer>> make_spm_tokenizer(const gguf::File& file);

// UTF-8 as llama.cpp reads it before pre-tokenizing: a lead byte announces the
// length; a sequence that is cut short or has a bad continuation byte yields
// U+FFFD and the decoder moves on by one byte. Overlong forms decode to their
// code point. The result is re-encoded canonically, so it is valid UTF-8 (code
// points PCRE2 cannot hold, surrogates and values above U+10FFFF, become U+FFFD;
// llama.cpp would crash or emit them raw there).
std::string canonical_utf8_like_llama(std::string_view text);
void append_utf8(uint32_t cpt, std::string& out);

// The byte a "<0xXX>" token stands for; nullopt if `text` is not of that form.
std::optional<uint8_t> parse_byte_token(std::string_view text);

}  // namespace kvtier::tokenizer_detail
