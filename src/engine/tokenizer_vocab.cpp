// The vocabulary shared by both tokenizers: tokens, scores, types, special ids,
// and the special-token partition of the input text.
#include <algorithm>
#include <array>
#include <cctype>
#include <initializer_list>
#include <string>

#include "engine/tokenizer_internal.h"

namespace kvtier::tokenizer_detail {
namespace {

constexpr std::string_view kTokensKey = "tokenizer.ggml.tokens";

TokenType token_type_from_int(int32_t v) {
  if (v >= 0 && v <= static_cast<int32_t>(TokenType::kByte)) return static_cast<TokenType>(v);
  return TokenType::kUndefined;  // llama.cpp maps unknown values to UNDEFINED too
}

// Reads an optional special-token id. A present key of the wrong type is an
// error; an id outside the vocabulary keeps the default with a warning (as llama.cpp does).
Status read_special_id(const gguf::File& file, std::string_view key, int32_t n_vocab, int32_t& id,
                       std::vector<std::string>& warnings) {
  if (!file.find(key)) return Status();
  auto value = file.get_u32(key);
  if (!value.ok()) return value.status();
  if (*value < static_cast<uint32_t>(n_vocab)) {
    id = static_cast<int32_t>(*value);
  } else {
    warnings.push_back(std::string(key) + " = " + std::to_string(*value) + " is outside the vocabulary of " +
                       std::to_string(n_vocab) + " tokens; ignored");
  }
  return Status();
}

Status read_optional_bool(const gguf::File& file, std::string_view key, bool& out) {
  if (!file.find(key)) return Status();
  auto value = file.get_bool(key);
  if (!value.ok()) return value.status();
  out = *value;
  return Status();
}

// llama.cpp recognises some special tokens by their text when the metadata does not
// name them, and forces them to be control tokens.
void detect_by_text(Vocab& v, int32_t& slot, std::initializer_list<std::string_view> texts) {
  if (slot >= 0) return;
  for (std::string_view t : texts) {
    int32_t id = v.find(t);
    if (id < 0) continue;
    slot = id;
    v.types[id] = TokenType::kControl;
    return;
  }
}

void mark_end_of_generation(Vocab& v) {
  auto add = [&](int32_t id) {
    if (v.valid(id)) v.eog[id] = 1;
  };
  add(v.fim_pad);
  add(v.fim_rep);
  add(v.fim_sep);
  // Texts llama.cpp treats as end-of-generation whatever the metadata says.
  static constexpr std::array<std::string_view, 17> kEogTexts = {
      "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<end_of_turn>",
      "<|endoftext|>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
      "<end_of_utterance>", "<eos>", "<turn|>", "<｜end▁of▁sentence｜>"};
  for (std::string_view t : kEogTexts) {
    int32_t id = v.find(t);
    if (id < 0) continue;
    v.eog[id] = 1;
    v.types[id] = TokenType::kControl;
  }
  add(v.eos);
  add(v.eot);
  add(v.eom);
  // gpt-oss style vocabularies end turns with <|return|>/<|call|>; there <|end|>
  // only ends a message and must not stop generation.
  const int32_t end = v.find("<|end|>");
  if (end >= 0 && v.eog[end] && v.find("<|return|>") >= 0 && v.find("<|call|>") >= 0) {
    v.eog[end] = 0;
    v.types[end] = TokenType::kUserDefined;
  }
}

bool ascii_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

std::string lower_ascii(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

Result<Vocab> load_vocab(const gguf::File& file, std::string model, std::string pre, VocabDefaults defaults) {
  Vocab v;
  v.model = std::move(model);
  v.pre = std::move(pre);

  if (!file.find(kTokensKey)) return Status::error("tokenizer: metadata key 'tokenizer.ggml.tokens' is missing");
  auto tokens = file.get_string_array(kTokensKey);
  if (!tokens.ok()) return Status::error("tokenizer: " + tokens.error());
  const size_t n = tokens->size();
  if (n == 0) return Status::error("tokenizer: 'tokenizer.ggml.tokens' is empty");
  if (n > static_cast<size_t>(INT32_MAX)) return Status::error("tokenizer: too many tokens");

  v.texts.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    std::string text((*tokens)[i]);
    if (text.empty()) text = "[EMPTY_" + std::to_string(i) + "]";  // as llama.cpp renames them
    v.texts.push_back(std::move(text));
  }
  // The index views the finished texts (they never change after this; moving the Vocab keeps them in place).
  v.index.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    auto [it, inserted] = v.index.emplace(v.texts[i], static_cast<int32_t>(i));
    if (!inserted) {
      return Status::error("tokenizer: duplicate token in 'tokenizer.ggml.tokens': '" + v.texts[i] + "' has ids " +
                           std::to_string(it->second) + " and " + std::to_string(i));
    }
  }

  v.scores.assign(n, 0.0f);
  if (file.find("tokenizer.ggml.scores")) {
    auto scores = file.get_f32_array("tokenizer.ggml.scores", n);
    if (!scores.ok()) return Status::error("tokenizer: " + scores.error());
    v.scores = std::move(*scores);
  }
  v.types.assign(n, TokenType::kNormal);
  if (file.find("tokenizer.ggml.token_type")) {
    auto types = file.get_i32_array("tokenizer.ggml.token_type", n);
    if (!types.ok()) return Status::error("tokenizer: " + types.error());
    for (size_t i = 0; i < n; ++i) v.types[i] = token_type_from_int((*types)[i]);
  }

  const int32_t n_vocab = static_cast<int32_t>(n);
  auto in_range_or_none = [&](int32_t id) { return id >= 0 && id < n_vocab ? id : -1; };
  v.bos = in_range_or_none(defaults.bos);
  v.eos = in_range_or_none(defaults.eos);
  v.unk = in_range_or_none(defaults.unk);
  v.add_bos = defaults.add_bos;
  v.add_space_prefix = defaults.add_space_prefix;

  const std::pair<std::string_view, int32_t*> special_keys[] = {
      {"tokenizer.ggml.bos_token_id", &v.bos},
      {"tokenizer.ggml.eos_token_id", &v.eos},
      {"tokenizer.ggml.eot_token_id", &v.eot},
      {"tokenizer.ggml.eom_token_id", &v.eom},
      {"tokenizer.ggml.unknown_token_id", &v.unk},
      {"tokenizer.ggml.seperator_token_id", &v.sep},  // sic: the GGUF key is spelled so
      {"tokenizer.ggml.padding_token_id", &v.pad},
      {"tokenizer.ggml.mask_token_id", &v.mask},
      {"tokenizer.ggml.fim_pre_token_id", &v.fim_pre},
      {"tokenizer.ggml.fim_suf_token_id", &v.fim_suf},
      {"tokenizer.ggml.fim_mid_token_id", &v.fim_mid},
      {"tokenizer.ggml.fim_pad_token_id", &v.fim_pad},
      {"tokenizer.ggml.fim_rep_token_id", &v.fim_rep},
      {"tokenizer.ggml.fim_sep_token_id", &v.fim_sep},
      {"tokenizer.ggml.prefix_token_id", &v.fim_pre},  // deprecated spellings
      {"tokenizer.ggml.suffix_token_id", &v.fim_suf},
      {"tokenizer.ggml.middle_token_id", &v.fim_mid},
  };
  for (const auto& [key, slot] : special_keys) {
    if (Status s = read_special_id(file, key, n_vocab, *slot, v.warnings); !s.ok()) return Status::error("tokenizer: " + s.message());
  }
  if (Status s = read_optional_bool(file, "tokenizer.ggml.add_bos_token", v.add_bos); !s.ok())
    return Status::error("tokenizer: " + s.message());
  if (Status s = read_optional_bool(file, "tokenizer.ggml.add_eos_token", v.add_eos); !s.ok())
    return Status::error("tokenizer: " + s.message());
  if (Status s = read_optional_bool(file, "tokenizer.ggml.add_space_prefix", v.add_space_prefix); !s.ok())
    return Status::error("tokenizer: " + s.message());
  if (v.add_bos && v.bos < 0) {
    return Status::error("tokenizer: tokenizer.ggml.add_bos_token is true but the vocabulary has no BOS token");
  }

  detect_by_text(v, v.eot, {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                            "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>",
                            "<end_of_utterance>"});
  detect_by_text(v, v.eom, {"<|eom_id|>"});
  detect_by_text(v, v.fim_pre, {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>",
                                "▁<PRE>", "<|code_prefix|>"});
  detect_by_text(v, v.fim_suf, {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>",
                                "▁<SUF>", "<|code_suffix|>"});
  detect_by_text(v, v.fim_mid, {"<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>",
                                "▁<MID>", "<|code_middle|>"});
  detect_by_text(v, v.fim_pad, {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"});
  detect_by_text(v, v.fim_rep, {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"});
  detect_by_text(v, v.fim_sep, {"<|file_sep|>"});

  v.eog.assign(n, 0);
  mark_end_of_generation(v);

  for (int32_t id = 0; id < n_vocab; ++id) {
    TokenType t = v.types[id];
    if (t == TokenType::kControl || t == TokenType::kUserDefined || t == TokenType::kUnknown) {
      v.specials_longest_first.push_back(id);
    }
  }
  std::stable_sort(v.specials_longest_first.begin(), v.specials_longest_first.end(),
                   [&](int32_t a, int32_t b) { return v.texts[a].size() > v.texts[b].size(); });

  // Phi-3's special tokens swallow the whitespace to their right (llama.cpp keys
  // this on the model name, as the attribute is not stored in GGUF).
  v.lstrip.assign(n, 0);
  v.rstrip.assign(n, 0);
  std::string name;
  if (file.find("general.name")) {
    if (auto s = file.get_string("general.name"); s.ok()) name = lower_ascii(*s);
  }
  if (name.find("phi-3") != std::string::npos || name.find("phi3") != std::string::npos) {
    for (int32_t id : v.specials_longest_first) v.rstrip[id] = 1;
    if (int32_t id = v.find("</s>"); id >= 0) v.rstrip[id] = 1;
    for (std::string_view t : {"<unk>", "<s>", "<|endoftext|>"}) {
      if (int32_t id = v.find(t); id >= 0) v.rstrip[id] = 0;
    }
  }
  return v;
}

std::vector<Fragment> partition_special(const Vocab& vocab, std::string_view text, bool parse_special) {
  std::vector<Fragment> fragments;
  if (text.empty()) return fragments;
  fragments.push_back(Fragment{-1, 0, text.size()});

  std::vector<Fragment> next;
  for (int32_t id : vocab.specials_longest_first) {
    const TokenType type = vocab.types[id];
    if (!parse_special && (type == TokenType::kControl || type == TokenType::kUnknown)) continue;
    const std::string& needle = vocab.texts[id];

    bool any = false;
    next.clear();
    for (const Fragment& f : fragments) {
      if (f.token >= 0) {
        next.push_back(f);
        continue;
      }
      size_t begin = f.offset;
      const size_t end = f.offset + f.length;
      while (begin < end) {
        const size_t match = text.substr(0, end).find(needle, begin);
        if (match == std::string_view::npos) break;
        any = true;
        size_t left_end = match;
        if (vocab.lstrip[id]) {
          while (left_end > begin && ascii_space(text[left_end - 1])) --left_end;
        }
        if (left_end > begin) next.push_back(Fragment{-1, begin, left_end - begin});
        next.push_back(Fragment{id, 0, 0});
        begin = match + needle.size();
        if (vocab.rstrip[id]) {
          while (begin < end && ascii_space(text[begin])) ++begin;
        }
      }
      if (begin < end) next.push_back(Fragment{-1, begin, end - begin});
    }
    if (any) fragments.swap(next);
  }
  return fragments;
}

}  // namespace kvtier::tokenizer_detail
