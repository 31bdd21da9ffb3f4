// The fuzzer's seed corpus (fuzz/corpus/gguf/): files named valid_* must parse and
// broken_* must be rejected, so the seeds keep covering both paths as the reader
// changes. KVTIER_WRITE_FUZZ_CORPUS=1 regenerates the seeds with the writer first.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kvtier/gguf.h"
#include "kvtier/gguf_writer.h"

namespace kvtier::gguf {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

const fs::path kCorpusDir = fs::path(KVTIER_SOURCE_DIR) / "fuzz" / "corpus" / "gguf";

GgufWriter model_like() {
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.set_u32("llama.block_count", 1);
  w.set_u32("llama.embedding_length", 8);
  w.set_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  w.set_string("tokenizer.ggml.model", "gpt2");
  w.set_array_str("tokenizer.ggml.tokens", {"<s>", "a", "b", "ab"});
  w.set_array_f32("tokenizer.ggml.scores", std::vector<float>{0, -1, -2, -3});
  w.set_array_i32("tokenizer.ggml.token_type", std::vector<int32_t>{3, 1, 1, 1});
  w.set_array_str("tokenizer.ggml.merges", {"a b"});
  w.set_u32("tokenizer.ggml.bos_token_id", 0);
  (void)w.add_tensor_f32("token_embd.weight", {8, 4}, std::vector<float>(32, 0.25f));
  (void)w.add_tensor("blk.0.attn_q.weight", GgmlType::Q4_0, {32, 8}, Bytes(8 * 18, 0x5a));
  (void)w.add_tensor("blk.0.attn_k.weight", GgmlType::Q8_0, {32, 2}, Bytes(2 * 34, 0x11));
  (void)w.add_tensor("blk.0.ffn_up.weight", GgmlType::F16, {8, 2, 2}, Bytes(8 * 2 * 2 * 2, 0x3c));
  return w;
}

GgufWriter every_value_type() {
  GgufWriter w(2);
  w.set_alignment(64);
  w.set_u8("u8", 1);
  w.set_i8("i8", -1);
  w.set_u16("u16", 2);
  w.set_i16("i16", -2);
  w.set_u32("u32", 3);
  w.set_i32("i32", -3);
  w.set_u64("u64", 4);
  w.set_i64("i64", -4);
  w.set_f32("f32", 0.5f);
  w.set_f64("f64", 0.25);
  w.set_bool("bool", true);
  w.set_string("str", "text");
  w.set_array_bool("a.bool", {true, false});
  w.set_array_u16("a.u16", std::vector<uint16_t>{1, 2});
  w.set_array_i64("a.i64", std::vector<int64_t>{-1});
  w.set_array_f64("a.f64", std::vector<double>{1.0});
  // An array of two arrays of u8.
  w.set_raw("a.nested", static_cast<uint32_t>(ValueType::ARRAY),
            {9, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0,  // 2 arrays
             0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7,  // [u8 7]
             0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0});   // []
  (void)w.add_tensor_f32("t", {3}, std::vector<float>{1, 2, 3});
  return w;
}

std::vector<std::pair<std::string, Bytes>> seeds() {
  std::vector<std::pair<std::string, Bytes>> out;
  out.emplace_back("valid_empty", GgufWriter().to_bytes());
  out.emplace_back("valid_model_like", model_like().to_bytes());
  out.emplace_back("valid_every_value_type_v2", every_value_type().to_bytes());
  GgufWriter vocab_only;
  vocab_only.set_array_str("tokenizer.ggml.tokens", {"x", "y"});
  vocab_only.set_array_f32("tokenizer.ggml.scores", std::vector<float>{0, 0});
  out.emplace_back("valid_vocab_only", vocab_only.to_bytes());
  // Broken seeds start the fuzzer next to the checks.
  Bytes b = model_like().to_bytes();
  b.resize(b.size() / 2);
  out.emplace_back("broken_truncated", b);
  GgufWriter w = model_like();
  w.set_array_f32("tokenizer.ggml.scores", std::vector<float>{0});
  out.emplace_back("broken_scores_length", w.to_bytes());
  w = model_like();
  w.set_alignment(48);
  out.emplace_back("broken_alignment", w.to_bytes());
  b = model_like().to_bytes();
  b[4] = 9;  // version
  out.emplace_back("broken_version", b);
  return out;
}

TEST(GgufFuzzCorpus, SeedsParseAsLabelled) {
  if (const char* regenerate = std::getenv("KVTIER_WRITE_FUZZ_CORPUS"); regenerate && std::string(regenerate) == "1") {
    fs::create_directories(kCorpusDir);
    for (const auto& [name, bytes] : seeds()) {
      std::ofstream out(kCorpusDir / name, std::ios::binary);
      out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    }
  }
  if (!fs::exists(kCorpusDir)) GTEST_SKIP() << "no seed corpus at " << kCorpusDir;
  size_t valid = 0, broken = 0, total_bytes = 0;
  for (const auto& entry : fs::directory_iterator(kCorpusDir)) {
    const std::string name = entry.path().filename().string();
    SCOPED_TRACE(name);
    std::ifstream in(entry.path(), std::ios::binary);
    const Bytes bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    total_bytes += bytes.size();
    auto f = File::from_bytes(bytes.data(), bytes.size());
    if (name.rfind("valid_", 0) == 0) {
      EXPECT_TRUE(f.ok()) << f.error();
      ++valid;
    } else if (name.rfind("broken_", 0) == 0) {
      EXPECT_FALSE(f.ok());
      ++broken;
    }
  }
  EXPECT_GE(valid, 3u);
  EXPECT_GE(broken, 3u);
  EXPECT_LT(total_bytes, 200u * 1024);  // the corpus is committed: keep it small
}

}  // namespace
}  // namespace kvtier::gguf
