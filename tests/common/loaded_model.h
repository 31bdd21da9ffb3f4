// A test model and its tokenizer, loaded from a GGUF (../shared/models or a file a test made), and the greedy
// continuation the reference tests compare with llama.cpp's.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/shared_data.h"
#include "kvtier/kv_options.h"
#include "kvtier/model.h"
#include "kvtier/sampling.h"
#include "kvtier/session.h"
#include "kvtier/thread_pool.h"
#include "kvtier/tokenizer.h"

namespace kvtier::testing {

struct LoadedModel {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
};

// Loads the GGUF at `path`; failures are reported as test failures and leave members null.
inline LoadedModel load_model_file(const std::string& path) {
  LoadedModel l;
  auto model = Model::load(path);
  EXPECT_TRUE(model.ok()) << path << ": " << model.error();
  if (!model.ok()) return l;
  l.model = std::move(*model);
  auto tok = Tokenizer::from_gguf(l.model->file());
  EXPECT_TRUE(tok.ok()) << tok.error();
  if (tok.ok()) l.tokenizer = std::move(*tok);
  return l;
}

// Loads ../shared/models/<file>.
inline LoadedModel load_shared_model(const std::string& file) {
  return load_model_file(shared_path("models/" + file).string());
}

// Greedy continuation of n tokens after `prompt` (BOS added), detokenized, in a cache made from `kv` that holds
// `cache_tokens` tokens (0: the prompt and the continuation).
inline std::string greedy_continuation(LoadedModel& l, const std::string& prompt, int n, ThreadPool& pool,
                                       const KvCacheOptions& kv = {}, int cache_tokens = 0) {
  std::vector<int32_t> tokens = l.tokenizer->encode(prompt, true, true);
  const int capacity = cache_tokens > 0 ? cache_tokens : static_cast<int>(tokens.size()) + n;
  Session session(*l.model, make_kv_cache(l.model->config(), capacity, kv).value(), pool);
  EXPECT_TRUE(session.append(tokens).ok());
  StreamingDetokenizer detok(*l.tokenizer);
  std::string text;
  for (int i = 0; i < n; ++i) {
    const int32_t next = argmax(session.last_logits().data(), l.model->config().n_vocab);
    text += detok.push(next);
    if (i + 1 < n) {
      EXPECT_TRUE(session.append({next}).ok());
    }
  }
  return text + detok.flush();
}

}  // namespace kvtier::testing
