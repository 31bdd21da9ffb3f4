// Tokenizer factory, the parts shared by both tokenizer kinds, the streaming
// detokenizer and UTF-8 helpers.
#include <string>

#include "engine/tokenizer_internal.h"
#include "kvtier/tokenizer.h"

namespace kvtier {

using tokenizer_detail::Fragment;

Result<std::unique_ptr<Tokenizer>> Tokenizer::from_gguf(const gguf::File& file) {
  if (!file.find("tokenizer.ggml.model")) {
    return Status::error("tokenizer: metadata key 'tokenizer.ggml.model' is missing (the file has no tokenizer)");
  }
  auto model = file.get_string("tokenizer.ggml.model");
  if (!model.ok()) return Status::error("tokenizer: " + model.error());
  if (*model == "gpt2") return tokenizer_detail::make_bpe_tokenizer(file);
  if (*model == "llama") return tokenizer_detail::make_spm_tokenizer(file);
  return Status::error("tokenizer: unknown tokenizer model '" + *model +
                       "' (tokenizer.ggml.model); supported: gpt2 (byte-level BPE), llama (SentencePiece)");
}

namespace tokenizer_detail {

std::vector<int32_t> VocabTokenizer::encode(std::string_view text, bool add_bos, bool parse_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_bos && vocab_.bos >= 0) out.push_back(vocab_.bos);
  const std::vector<Fragment> fragments = partition_special(vocab_, text, parse_special);
  std::unique_ptr<EncodeState> state = begin_encode();
  bool after_special = true;  // the start of the text counts as following a special token
  for (const Fragment& f : fragments) {
    if (f.token >= 0) {
      out.push_back(f.token);
      after_special = true;
    } else {
      encode_fragment(text.substr(f.offset, f.length), after_special, state.get(), out);
      after_special = false;
    }
  }
  return out;
}

std::string VocabTokenizer::token_to_piece(int32_t id) const {
  if (!vocab_.valid(id) || static_cast<size_t>(id) >= pieces_.size()) return {};
  return pieces_[id];
}

std::string VocabTokenizer::decode(std::span<const int32_t> ids) const {
  std::string text;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!vocab_.valid(ids[i])) continue;
    std::string_view piece = pieces_[ids[i]];
    // llama.cpp drops the space that add_space_prefix put in front of the text.
    if (i == 0 && vocab_.add_space_prefix && !piece.empty() && piece.front() == ' ') piece.remove_prefix(1);
    text += piece;
  }
  return text;
}

void append_utf8(uint32_t cpt, std::string& out) {
  if (cpt <= 0x7F) {
    out.push_back(static_cast<char>(cpt));
  } else if (cpt <= 0x7FF) {
    out.push_back(static_cast<char>(0xC0 | (cpt >> 6)));
    out.push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  } else if (cpt <= 0xFFFF) {
    out.push_back(static_cast<char>(0xE0 | (cpt >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cpt >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cpt >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cpt >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cpt >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  }
}

std::optional<uint8_t> parse_byte_token(std::string_view text) {
  if (text.size() != 6 || !text.starts_with("<0x") || text.back() != '>') return std::nullopt;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int hi = nibble(text[3]), lo = nibble(text[4]);
  if (hi < 0 || lo < 0) return std::nullopt;
  return static_cast<uint8_t>(hi * 16 + lo);
}

std::string canonical_utf8_like_llama(std::string_view text) {
  // Strictly valid UTF-8 decodes and re-encodes to itself.
  if (utf8::valid_prefix_length(text) == text.size()) return std::string(text);
  std::string out;
  out.reserve(text.size() + 8);
  const size_t n = text.size();
  auto byte = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
  auto continuation = [&](size_t i) { return (byte(i) & 0xC0) == 0x80; };
  size_t i = 0;
  while (i < n) {
    const uint8_t b = byte(i);
    uint32_t cpt = 0xFFFD;
    size_t len = 1;
    if (!(b & 0x80)) {
      cpt = b;
    } else if (!(b & 0x40)) {
      // a continuation byte where a sequence should start: invalid
    } else if (!(b & 0x20)) {
      if (i + 1 < n && continuation(i + 1)) {
        cpt = ((b & 0x1Fu) << 6) | (byte(i + 1) & 0x3Fu);
        len = 2;
      }
    } else if (!(b & 0x10)) {
      if (i + 2 < n && continuation(i + 1) && continuation(i + 2)) {
        cpt = ((b & 0x0Fu) << 12) | ((byte(i + 1) & 0x3Fu) << 6) | (byte(i + 2) & 0x3Fu);
        len = 3;
      }
    } else if (!(b & 0x08)) {
      if (i + 3 < n && continuation(i + 1) && continuation(i + 2) && continuation(i + 3)) {
        cpt = ((b & 0x07u) << 18) | ((byte(i + 1) & 0x3Fu) << 12) | ((byte(i + 2) & 0x3Fu) << 6) |
              (byte(i + 3) & 0x3Fu);
        len = 4;
      }
    }
    if ((cpt >= 0xD800 && cpt <= 0xDFFF) || cpt > 0x10FFFF) cpt = 0xFFFD;
    append_utf8(cpt, out);
    i += len;
  }
  return out;
}

}  // namespace tokenizer_detail

namespace utf8 {
namespace {

// One step of strict UTF-8 decoding at `pos`.
enum class StepKind { kValid, kInvalid, kIncomplete };
struct Step {
  StepKind kind;
  size_t length;  // bytes consumed (for kInvalid: the maximal invalid subpart)
};

Step step(std::string_view s, size_t pos) {
  const uint8_t b = static_cast<uint8_t>(s[pos]);
  if (b < 0x80) return {StepKind::kValid, 1};
  size_t need = 0;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b >= 0xC2 && b <= 0xDF) {
    need = 1;
  } else if (b >= 0xE0 && b <= 0xEF) {
    need = 2;
    if (b == 0xE0) lo = 0xA0;  // no overlongs
    if (b == 0xED) hi = 0x9F;  // no surrogates
  } else if (b >= 0xF0 && b <= 0xF4) {
    need = 3;
    if (b == 0xF0) lo = 0x90;  // no overlongs
    if (b == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return {StepKind::kInvalid, 1};
  }
  for (size_t k = 1; k <= need; ++k) {
    if (pos + k >= s.size()) return {StepKind::kIncomplete, s.size() - pos};
    const uint8_t c = static_cast<uint8_t>(s[pos + k]);
    const uint8_t min = k == 1 ? lo : 0x80;
    const uint8_t max = k == 1 ? hi : 0xBF;
    if (c < min || c > max) return {StepKind::kInvalid, k};
  }
  return {StepKind::kValid, need + 1};
}

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

}  // namespace

size_t complete_prefix_length(std::string_view bytes) {
  size_t pos = 0;
  while (pos < bytes.size()) {
    const Step st = step(bytes, pos);
    if (st.kind == StepKind::kIncomplete) break;
    pos += st.length;
  }
  return pos;
}

size_t valid_prefix_length(std::string_view bytes) {
  size_t pos = 0;
  while (pos < bytes.size()) {
    // ASCII fast path: most text is ASCII.
    if (static_cast<uint8_t>(bytes[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const Step st = step(bytes, pos);
    if (st.kind != StepKind::kValid) break;
    pos += st.length;
  }
  return pos;
}

std::string sanitize(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t pos = 0;
  while (pos < bytes.size()) {
    const Step st = step(bytes, pos);
    if (st.kind == StepKind::kValid) {
      out.append(bytes.substr(pos, st.length));
    } else {
      out.append(kReplacement);
    }
    pos += st.length;
  }
  return out;
}

}  // namespace utf8

std::string StreamingDetokenizer::push(int32_t id) {
  pending_ += tokenizer_.token_to_piece(id);
  const size_t ready = utf8::complete_prefix_length(pending_);
  std::string out = utf8::sanitize(std::string_view(pending_).substr(0, ready));
  pending_.erase(0, ready);
  return out;
}

std::string StreamingDetokenizer::flush() {
  std::string out = utf8::sanitize(pending_);
  pending_.clear();
  return out;
}

}  // namespace kvtier
