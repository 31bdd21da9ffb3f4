// Tokenizer behaviour on small handcrafted vocabularies (no ../shared needed):
// merge order, pre-tokenizer selection, special tokens, SentencePiece scores and
// byte fallback, the streaming detokenizer, UTF-8 helpers, and clear errors for
// broken tokenizer metadata.
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "kvtier/gguf.h"
#include "kvtier/gguf_writer.h"
#include "kvtier/tokenizer.h"

namespace kvtier {
namespace {

using gguf::GgufWriter;

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

// GPT-2's byte-to-unicode table, written independently of the library's.
std::string gpt2_char(uint8_t b) {
  static const std::vector<std::string> table = [] {
    std::vector<std::string> t(256);
    uint32_t next = 256;
    for (uint32_t c = 0; c < 256; ++c) {
      const bool printable = (c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE);
      const uint32_t cpt = printable ? c : next++;
      std::string s;
      if (cpt < 0x80) {
        s.push_back(static_cast<char>(cpt));
      } else {
        s.push_back(static_cast<char>(0xC0 | (cpt >> 6)));
        s.push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
      }
      t[c] = s;
    }
    return t;
  }();
  return table[b];
}

std::string gpt2_encode(std::string_view raw) {
  std::string s;
  for (char c : raw) s += gpt2_char(static_cast<uint8_t>(c));
  return s;
}

// A byte-level BPE vocabulary: ids 0..255 are the bytes, then `extra` tokens
// (given as raw text), then control tokens.
struct BpeSpec {
  std::string pre = "gpt-2";
  std::vector<std::string> extra;            // raw text of merged tokens
  std::vector<std::string> merges;           // raw "left right" (byte-encoded here)
  std::vector<std::string> control = {"<|endoftext|>"};
  std::vector<std::string> user_defined;
};

std::vector<uint8_t> bpe_image(const BpeSpec& spec, GgufWriter* customize = nullptr) {
  GgufWriter w = customize ? *customize : GgufWriter();
  w.set_string("tokenizer.ggml.model", "gpt2");
  if (!spec.pre.empty()) w.set_string("tokenizer.ggml.pre", spec.pre);
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  for (int b = 0; b < 256; ++b) {
    tokens.push_back(gpt2_char(static_cast<uint8_t>(b)));
    types.push_back(1);
  }
  for (const auto& t : spec.extra) {
    tokens.push_back(gpt2_encode(t));
    types.push_back(1);
  }
  for (const auto& t : spec.user_defined) {
    tokens.push_back(t);
    types.push_back(4);
  }
  for (const auto& t : spec.control) {
    tokens.push_back(t);
    types.push_back(3);
  }
  w.set_array_str("tokenizer.ggml.tokens", tokens);
  w.set_array_i32("tokenizer.ggml.token_type", types);
  std::vector<std::string> merges;
  for (const auto& m : spec.merges) {
    const size_t space = m.find(' ', 1);
    merges.push_back(space == std::string::npos ? m
                                                : gpt2_encode(m.substr(0, space)) + " " + gpt2_encode(m.substr(space + 1)));
  }
  w.set_array_str("tokenizer.ggml.merges", merges);
  if (!spec.control.empty()) {
    w.set_u32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(tokens.size() - spec.control.size()));
    w.set_u32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(tokens.size() - spec.control.size()));
  }
  return w.to_bytes();
}

struct Built {
  std::unique_ptr<gguf::File> file;
  Result<std::unique_ptr<Tokenizer>> tokenizer = Status::error("not built");
};

Built build(const std::vector<uint8_t>& image) {
  Built b;
  auto file = gguf::File::from_bytes(image.data(), image.size());
  EXPECT_TRUE(file.ok()) << (file.ok() ? "" : file.error());
  if (!file.ok()) return b;
  b.file = std::move(*file);
  b.tokenizer = Tokenizer::from_gguf(*b.file);
  return b;
}

std::unique_ptr<Tokenizer> build_ok(const std::vector<uint8_t>& image, Built& holder) {
  holder = build(image);
  EXPECT_TRUE(holder.tokenizer.ok()) << (holder.tokenizer.ok() ? "" : holder.tokenizer.error());
  return holder.tokenizer.ok() ? std::move(*holder.tokenizer) : nullptr;
}

std::vector<int32_t> bytes_of(std::string_view s) {
  std::vector<int32_t> ids;
  for (char c : s) ids.push_back(static_cast<uint8_t>(c));
  return ids;
}

// --- byte-level BPE ----------------------------------------------------------

TEST(BpeTokenizer, MergesApplyInRankOrder) {
  BpeSpec spec;
  spec.extra = {"bc", "ab"};  // ids 256, 257
  spec.merges = {"b c", "a b"};
  Built h;
  auto t = build_ok(bpe_image(spec), h);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->encode("abc", false, false), (std::vector<int32_t>{'a', 256}));

  spec.merges = {"a b", "b c"};  // now "a b" ranks first
  auto t2 = build_ok(bpe_image(spec), h);
  ASSERT_TRUE(t2);
  EXPECT_EQ(t2->encode("abc", false, false), (std::vector<int32_t>{257, 'c'}));
}

TEST(BpeTokenizer, EqualRanksMergeLeftmostFirstAndChain) {
  BpeSpec spec;
  spec.extra = {"aa", "aaaa"};  // 256, 257
  spec.merges = {"a a", "aa aa"};
  Built h;
  auto t = build_ok(bpe_image(spec), h);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->encode("aaa", false, false), (std::vector<int32_t>{256, 'a'}));
  EXPECT_EQ(t->encode("aaaa", false, false), (std::vector<int32_t>{257}));
  EXPECT_EQ(t->encode("aaaaa", false, false), (std::vector<int32_t>{257, 'a'}));
}

TEST(BpeTokenizer, Gpt2PreTokenizerSplitsWordsBeforeMerging) {
  BpeSpec spec;
  spec.extra = {" a", "a "};  // 256, 257: only " a" can ever form, words start with the space
  spec.merges = {"a  ", "  a"};
  Built h;
  auto t = build_ok(bpe_image(spec), h);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->encode("a a", false, false), (std::vector<int32_t>{'a', 256}));
  // Contractions and digits are their own words.
  EXPECT_EQ(t->encode("it's 42", false, false), bytes_of("it's 42"));
}

TEST(BpeTokenizer, UnknownPreTokenizerIsAnErrorNamingIt) {
  BpeSpec spec;
  spec.pre = "no-such-pre";
  Built h = build(bpe_image(spec));
  ASSERT_FALSE(h.tokenizer.ok());
  EXPECT_NE(h.tokenizer.error().find("no-such-pre"), std::string::npos) << h.tokenizer.error();
  EXPECT_NE(h.tokenizer.error().find("tokenizer.ggml.pre"), std::string::npos) << h.tokenizer.error();
}

TEST(BpeTokenizer, MissingPreMeansDefault) {
  BpeSpec spec;
  spec.pre = "";
  Built h;
  auto t = build_ok(bpe_image(spec), h);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->pre_tokenizer_name(), "default");
  EXPECT_EQ(t->encode("x = 12345;", false, false), bytes_of("x = 12345;"));
}

TEST(BpeTokenizer, Llama3WordsThatAreTokensSkipMerges) {
  BpeSpec spec;
  spec.pre = "llama-bpe";
  spec.extra = {"hello"};  // 256, reachable with no merges at all
  Built h;
  auto t = build_ok(bpe_image(spec), h);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->encode("hello", false, false), (std::vector<int32_t>{256}));
  EXPECT_TRUE(t->add_bos_default());  // llama-bpe adds BOS unless the file says otherwise
  // GPT-2's pre-tokenizer has no such shortcut.
  spec.pre = "gpt-2";
  auto t2 = build_ok(bpe_image(spec), h);
  ASSERT_TRUE(t2);
  EXPECT_EQ(t2->encode("hello", false, false), bytes_of("hello"));
  EXPECT_FALSE(t2->add_bos_default());
}

TEST(BpeTokenizer, EveryPreTokenizerRoundTripsArbitraryText) {
  const std::string text =
      "Hello, World! It's 2024: x=3.14159; ÄÖÜ ñ 日本語のテキスト 한국어 😀🚀\n\n\t  spaced   out\r\n"
      "'S 'LL 'd caf\u00e9 \u2003em-space \u3000ideographic 000123456789 $+<=>^~|` [{(\\)}]";
  for (const char* pre : {"default", "llama-bpe", "qwen2", "smollm", "gpt-2", "deepseek-coder", "falcon", "dbrx",
                          "stablelm2", "starcoder", "mpt"}) {
    BpeSpec spec;
    spec.pre = pre;
    Built h;
    auto t = build_ok(bpe_image(spec), h);
    ASSERT_TRUE(t) << pre;
    const std::vector<int32_t> ids = t->encode(text, false, false);
    // With no merges every byte is its own token, so the pre-tokenizer must cover
    // the whole text exactly once.
    EXPECT_EQ(ids, bytes_of(text)) << pre;
    EXPECT_EQ(t->decode(ids), text) << pre;
  }
}

TEST(BpeTokenizer, InvalidUtf8IsReadAsReplacementCharacters) {
  Built h;
  auto t = build_ok(bpe_image(BpeSpec{}), h);
  ASSERT_TRUE(t);
  // llama.cpp decodes a bad byte as U+FFFD before pre-tokenizing.
  EXPECT_EQ(t->encode("a\xFF" "b", false, false), bytes_of("a\xEF\xBF\xBD" "b"));
  EXPECT_EQ(t->encode("\xE2\x82", false, false), bytes_of("\xEF\xBF\xBD\xEF\xBF\xBD"));
  // Random bytes never crash and only produce ids inside the vocabulary.
  std::mt19937 rng(7);
  for (int i = 0; i < 300; ++i) {
    std::string s(rng() % 64, '\0');
    for (char& c : s) c = static_cast<char>(rng());
    for (int32_t id : t->encode(s, true, true)) {
      EXPECT_GE(id, 0);
      EXPECT_LT(id, t->n_vocab());
    }
  }
}

TEST(BpeTokenizer, EncodeIsSafeFromSeveralThreads) {
  BpeSpec spec;
  spec.pre = "llama-bpe";
  spec.extra = {"th", "the", " the"};
  spec.merges = {"t h", "th e", "  the"};
  Built h;
  auto t = build_ok(bpe_image(spec), h);
  ASSERT_TRUE(t);
  std::string text;
  for (int i = 0; i < 2000; ++i) text += "the cat and the  dog 123456 😀\n";
  const std::vector<int32_t> expected = t->encode(text, true, false);
  std::vector<std::vector<int32_t>> results(4);
  std::vector<std::thread> threads;
  for (auto& r : results) threads.emplace_back([&] { r = t->encode(text, true, false); });
  for (auto& th : threads) th.join();
  for (const auto& r : results) EXPECT_EQ(r, expected);
  EXPECT_EQ(t->decode(expected), text);
}

TEST(BpeTokenizer, SpecialTokens) {
  BpeSpec spec;
  spec.control = {"<|end|>", "<|endoftext|>"};
  spec.user_defined = {"<tool>"};
  Built h;
  auto t = build_ok(bpe_image(spec), h);
  ASSERT_TRUE(t);
  const int32_t tool = 256, end = 257, eot = 258;
  EXPECT_EQ(t->token_text(tool), "<tool>");
  EXPECT_EQ(t->token_type(tool), TokenType::kUserDefined);
  // Control tokens only with parse_special; user-defined ones always.
  EXPECT_EQ(t->encode("a<|end|>b", false, true), (std::vector<int32_t>{'a', end, 'b'}));
  EXPECT_EQ(t->encode("a<|end|>b", false, false), bytes_of("a<|end|>b"));
  EXPECT_EQ(t->encode("x<tool>y", false, false), (std::vector<int32_t>{'x', tool, 'y'}));
  // BOS is <|end|> in this vocabulary.
  EXPECT_EQ(t->encode("<|endoftext|><|endoftext|>", true, true), (std::vector<int32_t>{end, eot, eot}));
  // Rendering: control tokens are empty, user-defined tokens are their text.
  EXPECT_EQ(t->token_to_piece(end), "");
  EXPECT_EQ(t->token_to_piece(tool), "<tool>");
  EXPECT_EQ(t->token_to_piece(' '), " ");
  // <|end|> and <|endoftext|> end generation by their text; a plain token does not.
  EXPECT_TRUE(t->is_end_of_generation(end));
  EXPECT_TRUE(t->is_end_of_generation(eot));
  EXPECT_FALSE(t->is_end_of_generation(tool));
  EXPECT_FALSE(t->is_end_of_generation('a'));
  EXPECT_EQ(t->eot_id(), end);
}

TEST(BpeTokenizer, LongerSpecialTokensWinWhenTheyOverlap) {
  BpeSpec spec;
  spec.control = {"<a>", "<a><b>"};
  Built h;
  auto t = build_ok(bpe_image(spec), h);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->encode("<a><b><a>", false, true), (std::vector<int32_t>{257, 256}));
}

// --- SentencePiece -------------------------------------------------------------

// <unk> <s> </s>, the 256 byte tokens, then `pieces` with their scores.
std::vector<uint8_t> spm_image(const std::vector<std::pair<std::string, float>>& pieces,
                               bool add_space_prefix = true) {
  GgufWriter w;
  w.set_string("tokenizer.ggml.model", "llama");
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  std::vector<float> scores = {0, 0, 0};
  std::vector<int32_t> types = {2, 3, 3};
  static const char* hex = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) {
    tokens.push_back(std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">");
    scores.push_back(0);
    types.push_back(6);
  }
  for (const auto& [text, score] : pieces) {
    tokens.push_back(text);
    scores.push_back(score);
    types.push_back(1);
  }
  w.set_array_str("tokenizer.ggml.tokens", tokens);
  w.set_array_f32("tokenizer.ggml.scores", scores);
  w.set_array_i32("tokenizer.ggml.token_type", types);
  if (!add_space_prefix) w.set_bool("tokenizer.ggml.add_space_prefix", false);
  return w.to_bytes();
}

constexpr int32_t kFirstPiece = 3 + 256;

TEST(SpmTokenizer, HighestScoringMergeWins) {
  // "▁ab": ▁a scores better than ab, so ▁a + b; then ▁ab if present.
  Built h;
  auto t = build_ok(spm_image({{"\u2581", -5}, {"a", -5}, {"b", -5}, {"\u2581a", -1}, {"ab", -2}}), h);
  ASSERT_TRUE(t);
  const int32_t space = kFirstPiece, b = kFirstPiece + 2, space_a = kFirstPiece + 3;
  EXPECT_EQ(t->encode("ab", false, false), (std::vector<int32_t>{space_a, b}));
  EXPECT_EQ(t->encode("ab", true, false), (std::vector<int32_t>{1, space_a, b}));
  EXPECT_EQ(t->encode(" ", false, false), (std::vector<int32_t>{space, space}));
  EXPECT_EQ(t->decode(t->encode("ab", false, false)), "ab");

  auto t2 = build_ok(spm_image({{"\u2581", -5}, {"a", -5}, {"b", -5}, {"\u2581a", -3}, {"ab", -2}}), h);
  ASSERT_TRUE(t2);
  EXPECT_EQ(t2->encode("ab", false, false), (std::vector<int32_t>{space, kFirstPiece + 4}));
}

TEST(SpmTokenizer, ByteFallbackAndPieces) {
  Built h;
  auto t = build_ok(spm_image({{"\u2581", -1}, {"h", -1}, {"i", -1}, {"hi", -0.7f}, {"\u2581hi", -0.5f}}), h);
  ASSERT_TRUE(t);
  // "é" is not a piece: its two UTF-8 bytes become <0xC3> <0xA9>.
  EXPECT_EQ(t->encode("hié", false, false), (std::vector<int32_t>{kFirstPiece + 4, 3 + 0xC3, 3 + 0xA9}));
  EXPECT_EQ(t->token_to_piece(kFirstPiece + 4), " hi");
  EXPECT_EQ(t->token_to_piece(3 + 0xC3), "\xC3");
  EXPECT_EQ(t->token_to_piece(0), "");  // <unk> has the unknown type
  EXPECT_EQ(t->decode(t->encode("hié hi", false, false)), "hié hi");
}

TEST(SpmTokenizer, AddSpacePrefixCanBeTurnedOff) {
  Built h;
  auto t = build_ok(spm_image({{"\u2581", -1}, {"h", -1}, {"i", -1}}, false), h);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->encode("hi", false, false), (std::vector<int32_t>{kFirstPiece + 1, kFirstPiece + 2}));
  EXPECT_EQ(t->decode(t->encode(" hi", false, false)), " hi");
}

TEST(SpmTokenizer, SpacePrefixAfterSpecialTokens) {
  Built h;
  auto t = build_ok(spm_image({{"\u2581", -1}, {"h", -1}, {"i", -1}, {"hi", -0.7f}, {"\u2581hi", -0.5f}}), h);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->encode("hi</s>hi", false, true), (std::vector<int32_t>{kFirstPiece + 4, 2, kFirstPiece + 4}));
  EXPECT_EQ(t->encode("hi</s>hi", false, false).size(), 6u);  // </s> is plain text here
}

TEST(SpmTokenizer, NewlinesMergeOnlyWhenATokenHasThem) {
  Built h;
  auto with = build_ok(spm_image({{"\u2581", -1}, {"\n", -1}, {"\n\n", -0.5f}, {"a", -1}}), h);
  ASSERT_TRUE(with);
  const int32_t space = kFirstPiece, nl = kFirstPiece + 1, nlnl = kFirstPiece + 2, a = kFirstPiece + 3;
  EXPECT_EQ(with->encode("\n\na\n", false, false), (std::vector<int32_t>{space, nlnl, a, nl}));
  Built h2;
  auto without = build_ok(spm_image({{"\u2581", -1}, {"\n", -1}, {"a", -1}}), h2);
  ASSERT_TRUE(without);
  EXPECT_EQ(without->encode("\n\na\n", false, false), (std::vector<int32_t>{space, nl, nl, kFirstPiece + 2, nl}));
}

TEST(SpmTokenizer, OddTokenMetadataLoadsAndRendersNothing) {
  GgufWriter w;
  w.set_string("tokenizer.ggml.model", "llama");
  w.set_array_str("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "<0xZZ>", "a", "b"});
  w.set_array_i32("tokenizer.ggml.token_type", std::vector<int32_t>{2, 3, 3, 6, 1, 42});
  Built h;
  auto t = build_ok(w.to_bytes(), h);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->token_type(3), TokenType::kByte);
  EXPECT_EQ(t->token_to_piece(3), "");  // a byte token that names no byte
  EXPECT_EQ(t->token_type(5), TokenType::kUndefined);
  EXPECT_EQ(t->token_to_piece(5), "");
  EXPECT_EQ(t->token_to_piece(4), "a");
  // No byte tokens: each byte of "▁" (3) and of "c" falls back to <unk>.
  EXPECT_EQ(t->encode("ac", false, false), (std::vector<int32_t>{0, 0, 0, 4, 0}));
}

// --- streaming detokenizer ------------------------------------------------------

TEST(StreamingDetokenizer, HoldsBackSplitMultiByteCharacters) {
  Built h;
  auto t = build_ok(bpe_image(BpeSpec{}), h);
  ASSERT_TRUE(t);
  StreamingDetokenizer d(*t);
  const std::string emoji = "\xF0\x9F\x98\x80";  // U+1F600, one byte token each
  EXPECT_EQ(d.push('A'), "A");
  EXPECT_EQ(d.push(0xF0), "");
  EXPECT_EQ(d.push(0x9F), "");
  EXPECT_EQ(d.push(0x98), "");
  EXPECT_EQ(d.push(0x80), emoji);
  EXPECT_EQ(d.push(256), "");  // a control token renders as nothing
  EXPECT_EQ(d.push('z'), "z");
  EXPECT_EQ(d.flush(), "");
}

TEST(StreamingDetokenizer, ReplacesInvalidBytes) {
  Built h;
  auto t = build_ok(bpe_image(BpeSpec{}), h);
  ASSERT_TRUE(t);
  StreamingDetokenizer d(*t);
  // A byte that can never start a sequence is replaced at once.
  EXPECT_EQ(d.push(0xFF), kReplacement);
  // A lead byte followed by a non-continuation: the lead becomes U+FFFD, the
  // ASCII byte passes through.
  EXPECT_EQ(d.push(0xE2), "");
  EXPECT_EQ(d.push('x'), std::string(kReplacement) + "x");
  // An incomplete sequence at the end of the stream becomes one U+FFFD.
  EXPECT_EQ(d.push(0xE2), "");
  EXPECT_EQ(d.push(0x82), "");
  EXPECT_EQ(d.flush(), kReplacement);
  EXPECT_EQ(d.flush(), "");
}

TEST(StreamingDetokenizer, OutputIsAlwaysValidUtf8) {
  Built h;
  auto t = build_ok(bpe_image(BpeSpec{}), h);
  ASSERT_TRUE(t);
  std::mt19937 rng(11);
  for (int round = 0; round < 50; ++round) {
    StreamingDetokenizer d(*t);
    std::string all;
    for (int i = 0; i < 40; ++i) {
      const std::string out = d.push(static_cast<int32_t>(rng() % 257));
      EXPECT_EQ(utf8::valid_prefix_length(out), out.size());
      all += out;
    }
    const std::string tail = d.flush();
    EXPECT_EQ(utf8::valid_prefix_length(tail), tail.size());
  }
  // Valid text streamed byte by byte comes back unchanged.
  const std::string text = "naïve café — 日本 😀!";
  StreamingDetokenizer d(*t);
  std::string out;
  for (int32_t id : t->encode(text, false, false)) out += d.push(id);
  out += d.flush();
  EXPECT_EQ(out, text);
}

TEST(Utf8, Helpers) {
  EXPECT_EQ(utf8::valid_prefix_length("abc"), 3u);
  EXPECT_EQ(utf8::valid_prefix_length("ab\xC3\xA9z"), 5u);
  EXPECT_EQ(utf8::valid_prefix_length("ab\xC3"), 2u);
  EXPECT_EQ(utf8::valid_prefix_length("\xC0\x80"), 0u);      // overlong
  EXPECT_EQ(utf8::valid_prefix_length("\xED\xA0\x80"), 0u);  // surrogate
  EXPECT_EQ(utf8::valid_prefix_length("\xF4\x90\x80\x80"), 0u);  // above U+10FFFF
  EXPECT_EQ(utf8::complete_prefix_length("ab\xF0\x9F\x98"), 2u);
  EXPECT_EQ(utf8::complete_prefix_length("ab\xFF"), 3u);
  EXPECT_EQ(utf8::complete_prefix_length("ab\xE0\x80"), 4u);  // E0 80 can never complete
  EXPECT_EQ(utf8::sanitize("ok"), "ok");
  EXPECT_EQ(utf8::sanitize("a\xFF" "b"), "a\xEF\xBF\xBD" "b");
  EXPECT_EQ(utf8::sanitize("\xF0\x9F\x98"), kReplacement);  // one maximal subpart
  EXPECT_EQ(utf8::sanitize("\xE0\x80"), std::string(kReplacement) + std::string(kReplacement));
}

// --- errors -----------------------------------------------------------------------

void expect_error(const std::vector<uint8_t>& image, std::initializer_list<std::string_view> mentions) {
  Built h = build(image);
  ASSERT_TRUE(h.file);
  ASSERT_FALSE(h.tokenizer.ok()) << "expected an error mentioning " << *mentions.begin();
  for (std::string_view m : mentions) {
    EXPECT_NE(h.tokenizer.error().find(m), std::string::npos) << "'" << h.tokenizer.error() << "' lacks '" << m << "'";
  }
}

TEST(TokenizerErrors, MissingOrUnknownModel) {
  GgufWriter w;
  w.set_array_str("tokenizer.ggml.tokens", {"a", "b"});
  expect_error(w.to_bytes(), {"tokenizer.ggml.model", "missing"});
  w.set_string("tokenizer.ggml.model", "bert");
  expect_error(w.to_bytes(), {"'bert'", "tokenizer.ggml.model"});
  w.set_u32("tokenizer.ggml.model", 3);
  expect_error(w.to_bytes(), {"tokenizer.ggml.model"});
}

TEST(TokenizerErrors, MissingTokens) {
  GgufWriter w;
  w.set_string("tokenizer.ggml.model", "llama");
  expect_error(w.to_bytes(), {"tokenizer.ggml.tokens", "missing"});
  w.set_array_str("tokenizer.ggml.tokens", {});
  expect_error(w.to_bytes(), {"tokenizer.ggml.tokens", "empty"});
}

TEST(TokenizerErrors, DuplicateTokens) {
  GgufWriter w;
  w.set_string("tokenizer.ggml.model", "llama");
  w.set_array_str("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "x", "x"});
  expect_error(w.to_bytes(), {"duplicate", "'x'", "3", "4"});
}

TEST(TokenizerErrors, MalformedMerges) {
  BpeSpec spec;
  spec.merges = {"a b", "abc"};
  expect_error(bpe_image(spec), {"tokenizer.ggml.merges[1]", "'abc'"});
  spec.merges = {"a "};
  expect_error(bpe_image(spec), {"tokenizer.ggml.merges[0]"});
  GgufWriter w;
  w.set_string("tokenizer.ggml.model", "gpt2");
  w.set_string("tokenizer.ggml.pre", "gpt-2");
  w.set_array_str("tokenizer.ggml.tokens", {"a", "b"});
  expect_error(w.to_bytes(), {"tokenizer.ggml.merges", "missing"});
  w.set_array_i32("tokenizer.ggml.merges", std::vector<int32_t>{1, 2});
  const std::vector<uint8_t> image = w.to_bytes();
  auto file = gguf::File::from_bytes(image.data(), image.size());
  // The GGUF reader itself may reject this; either way no tokenizer comes out.
  if (file.ok()) {
    EXPECT_FALSE(Tokenizer::from_gguf(**file).ok());
  }
}

TEST(TokenizerErrors, BadSpecialTokenMetadata) {
  BpeSpec spec;
  spec.control = {};  // so that bpe_image sets no ids of its own
  GgufWriter w;
  w.set_string("tokenizer.ggml.bos_token_id", "one");
  expect_error(bpe_image(spec, &w), {"tokenizer.ggml.bos_token_id"});
  GgufWriter w2;
  w2.set_string("tokenizer.ggml.add_bos_token", "yes");
  expect_error(bpe_image(spec, &w2), {"tokenizer.ggml.add_bos_token"});

  // add_bos_token with no usable BOS: the id is outside the vocabulary and the BPE
  // default (11) is too.
  GgufWriter w3;
  w3.set_string("tokenizer.ggml.model", "gpt2");
  w3.set_string("tokenizer.ggml.pre", "gpt-2");
  w3.set_array_str("tokenizer.ggml.tokens", {"a", "b", "ab"});
  w3.set_array_str("tokenizer.ggml.merges", {"a b"});
  w3.set_bool("tokenizer.ggml.add_bos_token", true);
  w3.set_u32("tokenizer.ggml.bos_token_id", 100000);
  expect_error(w3.to_bytes(), {"add_bos_token", "BOS"});
  w3.set_bool("tokenizer.ggml.add_bos_token", false);
  Built h;
  auto t = build_ok(w3.to_bytes(), h);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->bos_id(), -1);
  EXPECT_EQ(t->encode("ab", true, false), (std::vector<int32_t>{2}));
}

}  // namespace
}  // namespace kvtier
