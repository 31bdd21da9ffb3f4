// SentencePiece-style BPE ("llama" tokenizer model: Llama 2, Mistral, Phi-3), as
// llama.cpp's llm_tokenizer_spm does it: spaces become U+2581, the text starts as
// one symbol per UTF-8 character, and the adjacent pair whose concatenation is the
// vocabulary token with the highest score is merged until no pair is a token.
// Symbols that are not tokens fall back to <0xXX> byte tokens.
#include <queue>
#include <string>

#include "engine/tokenizer_internal.h"

namespace kvtier::tokenizer_detail {
namespace {

constexpr std::string_view kSpaceMark = "\xE2\x96\x81";  // U+2581 LOWER ONE EIGHTH BLOCK

// Bytes in the UTF-8 sequence a lead byte announces (continuation bytes count 1).
size_t utf8_sequence_length(char lead) {
  static constexpr uint8_t kByHighNibble[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kByHighNibble[static_cast<uint8_t>(lead) >> 4];
}

class SpmTokenizer final : public VocabTokenizer {
 public:
  explicit SpmTokenizer(Vocab vocab) : VocabTokenizer(std::move(vocab)) {
    for (int b = 0; b < 256; ++b) byte_token_[b] = find_byte_token(static_cast<uint8_t>(b));
    pieces_.resize(vocab_.n_vocab());
    for (int32_t id = 0; id < vocab_.n_vocab(); ++id) pieces_[id] = render(id);
    // A merge always yields a text of two or more symbols (split as encode splits).
    for (const std::string& token : vocab_.texts) {
      const size_t first = std::min(utf8_sequence_length(token[0]), token.size());
      if (first == token.size()) continue;
      for (char c : token) joinable_[static_cast<uint8_t>(c)] = true;
    }
  }

 protected:
  void encode_fragment(std::string_view text, bool after_special, EncodeState* state,
                       std::vector<int32_t>& out) const override;

 private:
  struct Symbol {
    uint32_t offset;  // into the escaped text
    uint32_t length;  // 0 once merged into the symbol on its left
    int32_t prev;
    int32_t next;
  };
  int32_t find_byte_token(uint8_t b) const;
  std::string render(int32_t id) const;
  // Merges symbols[begin, end) and appends their tokens.
  void merge_run(std::string_view text, std::vector<Symbol>& symbols, int32_t begin, int32_t end,
                 std::vector<int32_t>& out) const;

  int32_t byte_token_[256];          // token of each byte for byte fallback; -1 if none
  bool joinable_[256] = {};          // byte occurs in a token of two or more characters
};

int32_t SpmTokenizer::find_byte_token(uint8_t b) const {
  static constexpr char kHex[] = "0123456789ABCDEF";
  const char name[6] = {'<', '0', 'x', kHex[b >> 4], kHex[b & 15], '>'};
  if (int32_t id = vocab_.find(std::string_view(name, 6)); id >= 0) return id;
  const char raw = static_cast<char>(b);
  if (int32_t id = vocab_.find(std::string_view(&raw, 1)); id >= 0) return id;
  // llama.cpp would abort here; an unknown token is the honest stand-in.
  return vocab_.unk;
}

// token_to_piece for one token (llama.cpp's rules with special=false).
std::string SpmTokenizer::render(int32_t id) const {
  const std::string& text = vocab_.texts[id];
  switch (vocab_.types[id]) {
    case TokenType::kNormal: {
      std::string piece;
      piece.reserve(text.size());
      for (size_t pos = 0; pos < text.size();) {
        if (text.compare(pos, kSpaceMark.size(), kSpaceMark) == 0) {
          piece.push_back(' ');
          pos += kSpaceMark.size();
        } else {
          piece.push_back(text[pos++]);
        }
      }
      return piece;
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

void SpmTokenizer::encode_fragment(std::string_view fragment, bool after_special, EncodeState* /*state*/,
                                   std::vector<int32_t>& out) const {
  // The text as SentencePiece sees it: optional leading space, spaces escaped.
  std::string text;
  text.reserve(fragment.size() * 2 + 3);
  if (vocab_.add_space_prefix && after_special) text.append(kSpaceMark);
  for (char c : fragment) {
    if (c == ' ') {
      text.append(kSpaceMark);
    } else {
      text.push_back(c);
    }
  }
  if (text.empty()) return;

  // One symbol per character, split by lead byte as llama.cpp does (a broken
  // sequence may swallow the bytes after it).
  std::vector<Symbol> symbols;  // [characters of text]
  symbols.reserve(text.size());
  for (size_t offset = 0; offset < text.size();) {
    const size_t length = std::min(utf8_sequence_length(text[offset]), text.size() - offset);
    symbols.push_back(Symbol{static_cast<uint32_t>(offset), static_cast<uint32_t>(length), -1, -1});
    offset += length;
  }

  // A character that no multi-character token contains can never merge, so the
  // runs between such characters are independent: merging them one at a time
  // gives the same result as one queue over the whole text, with a queue that
  // stays small (whole files are often one fragment).
  const auto n = static_cast<int32_t>(symbols.size());
  int32_t run_begin = 0;
  for (int32_t i = 0; i <= n; ++i) {
    const bool isolated = i < n && symbols[i].length == 1 && !joinable_[static_cast<uint8_t>(text[symbols[i].offset])];
    if (i < n && !isolated) continue;
    merge_run(text, symbols, run_begin, i, out);
    if (i < n) merge_run(text, symbols, i, i + 1, out);
    run_begin = i + 1;
  }
}

void SpmTokenizer::merge_run(std::string_view text, std::vector<Symbol>& symbols, int32_t begin, int32_t end,
                             std::vector<int32_t>& out) const {
  if (begin >= end) return;
  for (int32_t i = begin; i < end; ++i) {
    symbols[i].prev = i - 1 >= begin ? i - 1 : -1;
    symbols[i].next = i + 1 < end ? i + 1 : -1;
  }

  struct Candidate {
    float score;
    int32_t left;
    int32_t right;
    uint32_t length;  // bytes of the merged text when the candidate was made
  };
  // Highest score first; among equal scores the leftmost pair.
  auto worse = [](const Candidate& a, const Candidate& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(worse)> queue(worse);
  auto consider = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const uint32_t length = symbols[left].length + symbols[right].length;
    const int32_t id = vocab_.find(text.substr(symbols[left].offset, length));
    if (id < 0) return;
    queue.push(Candidate{vocab_.scores[id], left, right, length});
  };
  for (int32_t i = begin + 1; i < end; ++i) consider(i - 1, i);

  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& left = symbols[c.left];
    Symbol& right = symbols[c.right];
    // Symbols only grow, so matching lengths mean the pair is unchanged.
    if (left.length == 0 || right.length == 0 || left.length + right.length != c.length) continue;
    left.length += right.length;
    right.length = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = c.left;
    consider(left.prev, c.left);
    consider(c.left, left.next);
  }

  for (int32_t i = begin; i != -1; i = symbols[i].next) {
    const std::string_view piece = text.substr(symbols[i].offset, symbols[i].length);
    if (int32_t id = vocab_.find(piece); id >= 0) {
      out.push_back(id);
      continue;
    }
    for (char c : piece) {
      if (int32_t id = byte_token_[static_cast<uint8_t>(c)]; id >= 0) out.push_back(id);
    }
  }
}

}  // namespace

Result<std::unique_ptr<Tokenizer>> make_spm_tokenizer(const gguf::File& file) {
  VocabDefaults defaults;  // llama.cpp's defaults for SentencePiece vocabularies
  defaults.bos = 1;
  defaults.eos = 2;
  defaults.unk = 0;
  defaults.add_bos = true;
  defaults.add_space_prefix = true;
  auto vocab = load_vocab(file, "llama", "", defaults);
  if (!vocab.ok()) return vocab.status();
  return std::unique_ptr<Tokenizer>(std::make_unique<SpmTokenizer>(std::move(*vocab)));
}

}  // namespace kvtier::tokenizer_detail
