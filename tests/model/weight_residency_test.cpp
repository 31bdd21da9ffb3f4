// Where the weights live after Model::load (kvtier/model.h WeightResidency): mapped and read on first use,
// locked in RAM, or copied into process memory — each giving the same logits.
#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "common/shared_data.h"
#include "kvtier/model.h"

namespace kvtier {
namespace {

using kvtier::testing::shared_path;

// A field of /proc/self/status in bytes ("RssFile:   1234 kB"), or -1.
int64_t status_bytes(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1)) * 1024;
  }
  return -1;
}

// Logits of a short prompt: [n_vocab] for its last token.
std::vector<float> last_logits(Model& model) {
  const std::vector<int32_t> tokens = {8190, 39, 7428, 2604, 469, 1515};
  auto cache = make_contiguous_kv_cache(model.config(), 16);
  ThreadPool pool(2);
  std::vector<float> logits(model.config().n_vocab);
  const Status s = model.forward(tokens.data(), static_cast<int>(tokens.size()), 0, *cache, pool,
                                 static_cast<int>(tokens.size()) - 1, logits.data());
  EXPECT_TRUE(s.ok()) << s.message();
  return logits;
}

constexpr const char* kModel = "models/tiny-llama-31m.f16.gguf";  // 59 MiB of weights: RSS changes stand out

TEST(WeightResidency, MappedWeightsAreReadOnFirstUseNotAtLoad) {
  KVTIER_REQUIRE_SHARED(kModel);
  const int64_t before = status_bytes("RssFile");
  ASSERT_GE(before, 0) << "no RssFile in /proc/self/status";
  auto model = Model::load(shared_path(kModel).string());
  ASSERT_TRUE(model.ok()) << model.error();
  const uint64_t weights = (*model)->file().tensor_bytes();
  const int64_t after_load = status_bytes("RssFile");
  // Loading reads the header and metadata, and converts the 1-D norm vectors: far less than the weights.
  EXPECT_LT(after_load - before, static_cast<int64_t>(weights / 4))
      << "loading faulted in " << (after_load - before) << " of " << weights << " weight bytes";
  last_logits(**model);
  const int64_t after_forward = status_bytes("RssFile");
  EXPECT_GT(after_forward - before, static_cast<int64_t>(weights / 2)) << "a forward pass reads the matrices";
}

TEST(WeightResidency, CopiedWeightsGiveTheSameLogitsAndLeaveTheFileUnused) {
  KVTIER_REQUIRE_SHARED(kModel);
  auto mapped = Model::load(shared_path(kModel).string());
  ASSERT_TRUE(mapped.ok()) << mapped.error();
  const std::vector<float> expected = last_logits(**mapped);
  mapped->reset();

  const int64_t anon_before = status_bytes("RssAnon");
  uint64_t reported = 0, total = 0;
  auto copied = Model::load(shared_path(kModel).string(), ModelLoadOptions{.residency = WeightResidency::kCopied},
                            [&](uint64_t done, uint64_t all) {
                              EXPECT_GE(done, reported) << "progress never goes back";
                              reported = done;
                              total = all;
                            });
  ASSERT_TRUE(copied.ok()) << copied.error();
  const uint64_t weights = (*copied)->file().tensor_bytes();
  EXPECT_EQ(total, weights);
  EXPECT_EQ(reported, weights) << "the progress callback ends at the total";
  EXPECT_GE(status_bytes("RssAnon") - anon_before, static_cast<int64_t>(weights * 9 / 10))
      << "the weights are in process memory";
  for (const gguf::TensorInfo& t : (*copied)->file().tensors()) {
    const uint8_t* map_begin = (*copied)->file().base();
    const uint8_t* map_end = map_begin + (*copied)->file().file_size();
    ASSERT_FALSE(t.data >= map_begin && t.data < map_end) << t.name << " still points into the file's mapping";
  }
  const int64_t file_before = status_bytes("RssFile");
  EXPECT_EQ(last_logits(**copied), expected) << "the same bytes, the same logits";
  EXPECT_LT(status_bytes("RssFile") - file_before, static_cast<int64_t>(weights / 4))
      << "the forward pass reads the copy, not the file";
}

TEST(WeightResidency, LockedWeightsAreLockedOrTheLoadSaysWhyNot) {
  KVTIER_REQUIRE_SHARED(kModel);
  auto locked = Model::load(shared_path(kModel).string(), ModelLoadOptions{.residency = WeightResidency::kLocked});
  ASSERT_TRUE(locked.ok()) << locked.error();
  const uint64_t weights = (*locked)->file().tensor_bytes();
#if defined(__SANITIZE_ADDRESS__)
  // AddressSanitizer intercepts mlock and makes it a no-op that succeeds (it would lock the shadow memory too),
  // so nothing is locked and no warning is given: only the logits are comparable here.
  const bool lock_is_real = false;
#else
  const bool lock_is_real = true;
#endif
  if (!lock_is_real) {
    EXPECT_TRUE((*locked)->load_warnings().empty());
  } else if ((*locked)->load_warnings().empty()) {
    EXPECT_GE(status_bytes("VmLck"), static_cast<int64_t>(weights)) << "no warning, so every weight page is locked";
    EXPECT_GE(status_bytes("RssFile"), static_cast<int64_t>(weights)) << "locking reads the pages";
  } else {
    const std::string& w = (*locked)->load_warnings().front();
    EXPECT_NE(w.find("RLIMIT_MEMLOCK"), std::string::npos) << w;
    EXPECT_NE(w.find("could not lock the weights"), std::string::npos) << w;
  }
  auto mapped = Model::load(shared_path(kModel).string());
  ASSERT_TRUE(mapped.ok()) << mapped.error();
  EXPECT_EQ(last_logits(**locked), last_logits(**mapped));
}

}  // namespace
}  // namespace kvtier
