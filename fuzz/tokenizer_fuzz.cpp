// libFuzzer target for the tokenizers: arbitrary bytes through encode, decode and the streaming detokenizer of
// the demo model's byte-level BPE vocabulary (and, when ../shared is beside the checkout, the Llama-2
// SentencePiece one). Invariants: every id is inside the vocabulary; the streamed text is valid UTF-8 and equals
// sanitize(decode(ids)); for valid UTF-8 input without special-token parsing, BPE decode(encode(x)) == x.
// Build and run: scripts/fuzz_smoke.sh [seconds].
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "kvtier/gguf.h"
#include "kvtier/tokenizer.h"

namespace {

struct Loaded {
  std::unique_ptr<kvtier::gguf::File> file;
  std::unique_ptr<kvtier::Tokenizer> tokenizer;
};
std::vector<Loaded> g_tokenizers;

void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "tokenizer_fuzz: invariant violated: %s\n", what);
    std::abort();
  }
}

void load(const std::string& path) {
  auto file = kvtier::gguf::File::open(path);
  if (!file.ok()) return;
  auto tokenizer = kvtier::Tokenizer::from_gguf(**file);
  if (!tokenizer.ok()) return;
  g_tokenizers.push_back({std::move(*file), std::move(*tokenizer)});
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const std::string source = KVTIER_SOURCE_DIR;
  load(source + "/models/tiny-llama-6m.Q4_0.gguf");
  load(source + "/../shared/vocab/ggml-vocab-llama-spm.gguf");
  if (g_tokenizers.empty()) {
    std::fprintf(stderr, "tokenizer_fuzz: no vocabulary found under %s\n", source.c_str());
    std::abort();
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0 || size > 4096) return 0;
  const uint8_t control = data[0];
  const kvtier::Tokenizer& tok = *g_tokenizers[control % g_tokenizers.size()].tokenizer;
  const bool add_bos = (control & 2) != 0;
  const bool parse_special = (control & 4) != 0;
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);

  const std::vector<int32_t> ids = tok.encode(text, add_bos, parse_special);
  for (int32_t id : ids) require(id >= 0 && id < tok.n_vocab(), "encode returned an id outside the vocabulary");
  const std::string decoded = tok.decode(ids);

  kvtier::StreamingDetokenizer stream(tok);
  std::string streamed;
  for (int32_t id : ids) streamed += stream.push(id);
  streamed += stream.flush();
  require(kvtier::utf8::valid_prefix_length(streamed) == streamed.size(), "streamed text is not valid UTF-8");

  const bool valid_utf8 = kvtier::utf8::valid_prefix_length(text) == text.size();
  if (valid_utf8 && !parse_special && !add_bos && tok.model_name() == "gpt2") {
    require(decoded == text, "BPE decode(encode(x)) != x for valid UTF-8 x");
  }
  return 0;
}
