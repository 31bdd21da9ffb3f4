// Session files of a cache whose sliding-window layers released pages (a Gemma-3-shaped model, window 32, a
// prompt far longer than the window): the restored session continues with exactly the uninterrupted run's
// greedy tokens and logits, with and without a cold tier; a damaged file or one of a model with another
// window is refused with a message.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "../../tools/gemma_model.h"  // header-only; tools/ is not on the include path
#include "common/shared_data.h"
#include "common/test_util.h"
#include "kvtier/kv_options.h"
#include "kvtier/sampling.h"
#include "kvtier/session.h"

namespace kvtier {
namespace {

namespace fs = std::filesystem;

// The gemma3 test model (tools/gemma_model.h) with the given window, written under dir and loaded.
std::unique_ptr<Model> gemma3(const fs::path& dir, int window) {
  auto source = gguf::File::open(testing::shared_path("models/tiny-llama-6m.f16.gguf").string());
  EXPECT_TRUE(source.ok()) << source.error();
  if (!source.ok()) return nullptr;
  tools::GemmaModelOptions options;
  options.window = window;
  gguf::GgufWriter writer;
  EXPECT_TRUE(tools::make_gemma_model(**source, options, writer).ok());
  const fs::path path = dir / ("gemma3-w" + std::to_string(window) + ".gguf");
  EXPECT_TRUE(writer.write_file(path.string()).ok());
  auto model = Model::load(path.string());
  EXPECT_TRUE(model.ok()) << model.error();
  return model.ok() ? std::move(*model) : nullptr;
}

std::vector<int32_t> prompt_ids(int n, int n_vocab) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  uint32_t x = 4242;
  for (int32_t& t : ids) {
    x = x * 1664525u + 1013904223u;
    t = static_cast<int32_t>(x % static_cast<uint32_t>(n_vocab - 3)) + 3;
  }
  return ids;
}

std::vector<int32_t> greedy(Session& s, int n) {
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(argmax(s.last_logits().data(), static_cast<int>(s.last_logits().size())));
    EXPECT_TRUE(s.append({out.back()}).ok());
  }
  return out;
}

TEST(SessionWindow, ReleasedPagesSaveAndRestoreExactly) {
  KVTIER_REQUIRE_SHARED("models/tiny-llama-6m.f16.gguf");
  testing::TempDir dir("kvtier-session-window", ::testing::TempDir());
  std::unique_ptr<Model> model = gemma3(dir.path(), 32);
  ASSERT_TRUE(model);
  const ModelConfig& c = model->config();
  ASSERT_GT(c.sliding_window, 0);
  ThreadPool pool(2);
  const int n_ctx = 512;
  const std::vector<int32_t> prompt = prompt_ids(400, c.n_vocab);  // 6 pages: far behind the window of 32
  struct Case {
    std::string ladder, budget;  // budget "": none
  };
  for (const Case& k : {Case{"f16", ""}, Case{"f16:64,q8:128,q4", ""}, Case{"f16", "3200K"}}) {
    SCOPED_TRACE(k.ladder + " budget " + k.budget);
    KvCacheOptions options;
    options.ladder = k.ladder;
    if (!k.budget.empty()) {
      options.budget_bytes = *parse_byte_size(k.budget);
      options.spill_dir = dir.path();
      options.cold_mode = "exact";
    }
    auto cache = [&] { return make_kv_cache(c, n_ctx, options, &pool).value(); };
    Session original(*model, cache(), pool);
    ASSERT_TRUE(original.append(prompt).ok());
    const std::string described = original.cache().describe();
    ASSERT_NE(described.find("sliding-window layers released"), std::string::npos) << described;
    ASSERT_EQ(described.find("released 0 pages"), std::string::npos) << described;
    if (!k.budget.empty()) {  // cold pages too, read back into the file
      EXPECT_NE(described.find("cold tier"), std::string::npos) << described;
      EXPECT_EQ(described.find("spilled 0 pages"), std::string::npos) << described;
    }
    const fs::path file = fs::path(dir.path()) / "s.kvs";
    Status saved = original.save(file.string());
    ASSERT_TRUE(saved.ok()) << saved.message();

    Session restored(*model, cache(), pool);
    Status r = restored.restore(file.string());
    ASSERT_TRUE(r.ok()) << r.message();
    EXPECT_EQ(restored.tokens(), prompt);
    const int32_t next = argmax(original.last_logits().data(), c.n_vocab);
    ASSERT_TRUE(original.append({next}).ok());
    ASSERT_TRUE(restored.append({next}).ok());
    EXPECT_EQ(restored.last_logits(), original.last_logits());
    EXPECT_EQ(greedy(restored, 40), greedy(original, 40));
    EXPECT_EQ(restored.last_logits(), original.last_logits());

    // A prompt that diverges inside the released part: the restored session evaluates the kept tokens again
    // and ends where a fresh evaluation of the shorter sequence does.
    Session diverged(*model, cache(), pool);
    ASSERT_TRUE(diverged.restore(file.string()).ok());
    std::vector<int32_t> other(prompt.begin(), prompt.begin() + 100);
    other.push_back(prompt[100] == 5 ? 6 : 5);
    EXPECT_EQ(diverged.reuse_prefix(other), std::vector<int32_t>{other.back()});
    EXPECT_EQ(diverged.n_past(), 100);
    ASSERT_TRUE(diverged.append({other.back()}).ok());
    Session fresh(*model, cache(), pool);
    ASSERT_TRUE(fresh.append(std::vector<int32_t>(other.begin(), other.begin() + 100)).ok());
    ASSERT_TRUE(fresh.append({other.back()}).ok());
    EXPECT_EQ(diverged.last_logits(), fresh.last_logits());
  }
}

TEST(SessionWindow, DamagedOrMismatchedFilesAreRefused) {
  KVTIER_REQUIRE_SHARED("models/tiny-llama-6m.f16.gguf");
  testing::TempDir dir("kvtier-session-window", ::testing::TempDir());
  std::unique_ptr<Model> model = gemma3(dir.path(), 32);
  std::unique_ptr<Model> wider = gemma3(dir.path(), 256);
  ASSERT_TRUE(model && wider);
  ThreadPool pool(2);
  const fs::path file = fs::path(dir.path()) / "s.kvs";
  {
    Session s(*model, make_kv_cache(model->config(), 512, {}).value(), pool);
    ASSERT_TRUE(s.append(prompt_ids(300, model->config().n_vocab)).ok());
    ASSERT_TRUE(s.save(file.string()).ok());
  }
  auto restore_error = [&](Model& m) {
    Session s(m, make_kv_cache(m.config(), 512, {}).value(), pool);
    Status st = s.restore(file.string());
    if (st.ok()) return std::string();
    EXPECT_EQ(s.n_past(), 0) << "a refused file leaves the session empty";
    return st.message();
  };
  EXPECT_EQ(restore_error(*model), "");
  EXPECT_NE(restore_error(*wider).find("another model"), std::string::npos) << restore_error(*wider);
  // A flipped byte in the cache stream: the checksum refuses it.
  std::vector<uint8_t> bytes;
  {
    std::ifstream in(file, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  ASSERT_GT(bytes.size(), 4000u);
  bytes[bytes.size() / 2] ^= 0x10;
  {
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
  EXPECT_NE(restore_error(*model).find("checksum"), std::string::npos) << restore_error(*model);
}

}  // namespace
}  // namespace kvtier
