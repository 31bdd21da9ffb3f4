// Byte-level BPE ("gpt2" tokenizer model), as in GPT-2, Llama 3, Qwen2, Falcon,
// DeepSeek-Coder: pre-tokenize with the regexes of tokenizer.ggml.pre, map every
// byte of a word to a printable code point (GPT-2's byte-to-unicode table), then
// merge adjacent pieces by rank (the index in tokenizer.ggml.merges) until no pair
// has a rank.
//
// Pieces are interned as integers: a piece that is a vocabulary token has that
// token's id, other pieces get ids from n_vocab upwards. A merge maps a pair of
// piece ids to (rank, merged piece id), so the merge loop never touches strings.
#include <algorithm>
#include <array>
#include <queue>
#include <string>
#include <unordered_map>

#include "engine/tokenizer_internal.h"
#include "engine/tokenizer_pretokenize.h"

namespace kvtier::tokenizer_detail {
namespace {

// GPT-2's table: printable Latin-1 bytes stand for themselves, the other 68 bytes
// (controls, space, DEL, NBSP, soft hyphen) for U+0100 onwards, in byte order.
std::array<uint32_t, 256> gpt2_byte_to_codepoint() {
  std::array<uint32_t, 256> table{};
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    table[b] = printable ? b : next++;
  }
  return table;
}

// Decodes one code point of valid UTF-8 at `pos` (advancing it); U+FFFD when invalid.
uint32_t next_codepoint(std::string_view s, size_t& pos) {
  const size_t valid = utf8::valid_prefix_length(s.substr(pos, std::min<size_t>(4, s.size() - pos)));
  const auto b0 = static_cast<uint8_t>(s[pos]);
  size_t len = b0 < 0x80 ? 1 : b0 < 0xE0 ? 2 : b0 < 0xF0 ? 3 : 4;
  if (valid < len) {
    ++pos;
    return 0xFFFD;
  }
  uint32_t cpt = len == 1 ? b0 : len == 2 ? (b0 & 0x1Fu) : len == 3 ? (b0 & 0x0Fu) : (b0 & 0x07u);
  for (size_t k = 1; k < len; ++k) cpt = (cpt << 6) | (static_cast<uint8_t>(s[pos + k]) & 0x3Fu);
  pos += len;
  return cpt;
}

class BpeTokenizer final : public VocabTokenizer {
 public:
  BpeTokenizer(Vocab vocab, std::shared_ptr<const PreTokenizer> pre) : VocabTokenizer(std::move(vocab)), pre_(std::move(pre)) {}

  Status init(const gguf::File& file);

 protected:
  struct State : EncodeState {
    // Words seen in this call: word bytes -> [first, first + count) in cached_ids.
    std::unordered_map<std::string, std::pair<uint32_t, uint32_t>, StringHash, std::equal_to<>> cache;
    std::vector<int32_t> cached_ids;
    std::vector<PreTokenizer::Word> words;
    std::vector<int32_t> word_ids;
  };
  std::unique_ptr<EncodeState> begin_encode() const override { return std::make_unique<State>(); }
  void encode_fragment(std::string_view text, bool after_special, EncodeState* state,
                       std::vector<int32_t>& out) const override;

 private:
  struct Merge {
    int32_t rank;
    int32_t merged_piece;
  };
  static uint64_t pair_key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  int32_t intern(std::string_view piece);
  std::string_view piece_text(int32_t piece) const {
    return piece < vocab_.n_vocab() ? std::string_view(vocab_.texts[piece])
                                    : std::string_view(extra_pieces_[piece - vocab_.n_vocab()]);
  }
  void tokenize_word(std::string_view word, std::vector<int32_t>& out) const;
  std::string render(int32_t id) const;

  std::shared_ptr<const PreTokenizer> pre_;
  std::array<uint32_t, 256> byte_cpt_{};      // GPT-2 code point of each byte
  std::array<std::string, 256> byte_text_{};  // ... as UTF-8
  std::array<int32_t, 256> byte_piece_{};     // ... as an interned piece
  std::unordered_map<uint32_t, uint8_t> cpt_byte_;  // inverse of byte_cpt_
  std::unordered_map<uint64_t, Merge> merges_;      // (left piece, right piece) -> merge
  std::vector<std::string> extra_pieces_;           // texts of piece ids n_vocab + i
  TextIndex extra_index_;                           // text -> piece id for those
};

int32_t BpeTokenizer::intern(std::string_view piece) {
  if (int32_t id = vocab_.find(piece); id >= 0) return id;
  if (auto it = extra_index_.find(piece); it != extra_index_.end()) return it->second;
  const int32_t id = vocab_.n_vocab() + static_cast<int32_t>(extra_pieces_.size());
  extra_pieces_.emplace_back(piece);
  extra_index_.emplace(std::string(piece), id);
  return id;
}

Status BpeTokenizer::init(const gguf::File& file) {
  byte_cpt_ = gpt2_byte_to_codepoint();
  for (uint32_t b = 0; b < 256; ++b) {
    append_utf8(byte_cpt_[b], byte_text_[b]);
    byte_piece_[b] = intern(byte_text_[b]);
    cpt_byte_[byte_cpt_[b]] = static_cast<uint8_t>(b);
  }

  constexpr std::string_view kMergesKey = "tokenizer.ggml.merges";
  if (!file.find(kMergesKey)) return Status::error("tokenizer: metadata key 'tokenizer.ggml.merges' is missing");
  auto merges = file.get_string_array(kMergesKey);
  if (!merges.ok()) return Status::error("tokenizer: " + merges.error());
  merges_.reserve(merges->size());
  std::string joined;
  for (size_t rank = 0; rank < merges->size(); ++rank) {
    const std::string_view merge = (*merges)[rank];
    // "left right": split at the first space after the first byte, as llama.cpp does.
    const size_t space = merge.size() > 1 ? merge.find(' ', 1) : std::string_view::npos;
    if (space == std::string_view::npos || space + 1 >= merge.size()) {
      return Status::error("tokenizer: tokenizer.ggml.merges[" + std::to_string(rank) + "] = '" + std::string(merge) +
                           "' is not two pieces separated by a space");
    }
    const std::string_view left = merge.substr(0, space);
    const std::string_view right = merge.substr(space + 1);
    joined.assign(left);
    joined.append(right);
    const int32_t left_piece = intern(left);
    const int32_t right_piece = intern(right);
    const int32_t merged_piece = intern(joined);
    // The first (lowest-ranked) occurrence of a pair wins.
    merges_.emplace(pair_key(left_piece, right_piece), Merge{static_cast<int32_t>(rank), merged_piece});
  }

  pieces_.resize(vocab_.n_vocab());
  for (int32_t id = 0; id < vocab_.n_vocab(); ++id) pieces_[id] = render(id);
  return Status();
}

// token_to_piece for one token (llama.cpp's rules with special=false).
std::string BpeTokenizer::render(int32_t id) const {
  const std::string& text = vocab_.texts[id];
  switch (vocab_.types[id]) {
    case TokenType::kNormal: {
      std::string bytes;
      bytes.reserve(text.size());
      for (size_t pos = 0; pos < text.size();) {
        const size_t start = pos;
        const uint32_t cpt = next_codepoint(text, pos);
        auto it = cpt_byte_.find(cpt);
        // A code point outside GPT-2's table (not produced by byte encoding) is kept
        // as its own UTF-8; llama.cpp writes an "[UNK_BYTE_..]" marker instead.
        if (it != cpt_byte_.end()) {
          bytes.push_back(static_cast<char>(it->second));
        } else {
          bytes.append(text, start, pos - start);
        }
      }
      return bytes;
    }
    case TokenType::kUserDefined:
      return text;
    case TokenType::kByte:
      if (auto byte = parse_byte_token(text)) return std::string(1, static_cast<char>(*byte));
      return {};
    default:  // control, unknown, unused, undefined: not rendered
      return {};
  }
}

void BpeTokenizer::encode_fragment(std::string_view text, bool /*after_special*/, EncodeState* base_state,
                                   std::vector<int32_t>& out) const {
  auto& state = *static_cast<State*>(base_state);
  const std::string canonical = canonical_utf8_like_llama(text);
  pre_->split(canonical, state.words);
  for (const PreTokenizer::Word& w : state.words) {
    const std::string_view word = std::string_view(canonical).substr(w.begin, w.end - w.begin);
    if (auto it = state.cache.find(word); it != state.cache.end()) {
      const auto [first, count] = it->second;
      out.insert(out.end(), state.cached_ids.begin() + first, state.cached_ids.begin() + first + count);
      continue;
    }
    state.word_ids.clear();
    tokenize_word(word, state.word_ids);
    const auto first = static_cast<uint32_t>(state.cached_ids.size());
    state.cached_ids.insert(state.cached_ids.end(), state.word_ids.begin(), state.word_ids.end());
    state.cache.emplace(std::string(word), std::make_pair(first, static_cast<uint32_t>(state.word_ids.size())));
    out.insert(out.end(), state.word_ids.begin(), state.word_ids.end());
  }
}

void BpeTokenizer::tokenize_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (pre_->traits().ignore_merges) {
    // Llama 3: a word whose byte encoding is a token is that token.
    std::string encoded;
    encoded.reserve(word.size() * 2);
    for (char c : word) encoded += byte_text_[static_cast<uint8_t>(c)];
    if (int32_t id = vocab_.find(encoded); id >= 0) {
      out.push_back(id);
      return;
    }
  }

  // One symbol per byte to start with; merged symbols absorb their right neighbour.
  struct Symbol {
    int32_t piece;
    int32_t prev;
    int32_t next;
    bool alive;
  };
  const auto n = static_cast<int32_t>(word.size());
  std::vector<Symbol> symbols(n);  // [n] linked list over the word's bytes
  for (int32_t i = 0; i < n; ++i) {
    symbols[i] = Symbol{byte_piece_[static_cast<uint8_t>(word[i])], i - 1, i + 1 < n ? i + 1 : -1, true};
  }

  struct Candidate {
    int32_t rank;
    int32_t left;
    int32_t right;
    int32_t left_piece;
    int32_t right_piece;
    int32_t merged_piece;
  };
  // Lowest rank first; among equal ranks the leftmost pair (llama.cpp's order).
  auto later = [](const Candidate& a, const Candidate& b) {
    return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(later)> queue(later);
  auto consider = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    auto it = merges_.find(pair_key(symbols[left].piece, symbols[right].piece));
    if (it == merges_.end()) return;
    queue.push(Candidate{it->second.rank, left, right, symbols[left].piece, symbols[right].piece,
                         it->second.merged_piece});
  };
  for (int32_t i = 1; i < n; ++i) consider(i - 1, i);

  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& left = symbols[c.left];
    Symbol& right = symbols[c.right];
    // A candidate is stale once either side has changed (pieces only ever grow, so
    // an unchanged piece id means an unchanged symbol).
    if (!left.alive || !right.alive || left.piece != c.left_piece || right.piece != c.right_piece) continue;
    left.piece = c.merged_piece;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = c.left;
    consider(left.prev, c.left);
    consider(c.left, left.next);
  }

  for (int32_t i = 0; i != -1; i = symbols[i].next) {
    const int32_t piece = symbols[i].piece;
    if (piece < vocab_.n_vocab()) {
      out.push_back(piece);
      continue;
    }
    // Not a token: llama.cpp looks up each byte of the piece's text on its own.
    for (char c : piece_text(piece)) {
      if (int32_t id = vocab_.find(std::string_view(&c, 1)); id >= 0) out.push_back(id);
    }
  }
}

}  // namespace

Result<std::unique_ptr<Tokenizer>> make_bpe_tokenizer(const gguf::File& file) {
  std::string pre = "default";  // llama.cpp's fallback for files without tokenizer.ggml.pre
  if (file.find("tokenizer.ggml.pre")) {
    auto value = file.get_string("tokenizer.ggml.pre");
    if (!value.ok()) return Status::error("tokenizer: " + value.error());
    if (!value->empty()) pre = *value;
  }
  auto pre_tokenizer = PreTokenizer::create(pre);
  if (!pre_tokenizer.ok()) return pre_tokenizer.status();

  VocabDefaults defaults;
  defaults.bos = 11;  // llama.cpp's defaults for BPE vocabularies
  defaults.eos = 11;
  defaults.add_bos = (*pre_tokenizer)->traits().add_bos;
  auto vocab = load_vocab(file, "gpt2", pre, defaults);
  if (!vocab.ok()) return vocab.status();

  auto tokenizer = std::make_unique<BpeTokenizer>(std::move(*vocab), std::move(*pre_tokenizer));
  if (Status s = tokenizer->init(file); !s.ok()) return s;
  return std::unique_ptr<Tokenizer>(std::move(tokenizer));
}

}  // namespace kvtier::tokenizer_detail
