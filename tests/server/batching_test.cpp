// Continuous batching through the server's scheduler (kvtier/server_scheduler.h): 16 concurrent greedy requests,
// batched into shared forward passes (decode steps beside prompt chunks), each give exactly the tokens and
// log-probabilities (bit for bit) the same request gives alone, on the shared test models.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/shared_data.h"
#include "kvtier/model.h"
#include "kvtier/server_scheduler.h"
#include "kvtier/tokenizer.h"

namespace kvtier {
namespace {

using kvtier::testing::shared_path;
using namespace std::chrono_literals;

// A request's generated token ids, each followed by the bits of its log-probability: a greedy token rarely
// flips when a logit changes in its last bits, its log-probability does.
std::vector<int64_t> collect_tokens(RequestStream& stream) {
  std::vector<GeneratedToken> got;
  while (!stream.wait(got, 100ms)) {
  }
  std::vector<int64_t> ids;
  for (const GeneratedToken& t : got) {
    uint32_t bits = 0;
    std::memcpy(&bits, &t.chosen.logprob, sizeof bits);
    ids.push_back(t.token);
    ids.push_back(bits);
  }
  return ids;
}

// 16 prompts sharing no prefix but BOS: 14 short ones of different lengths, and two past the prefill chunk
// (256 tokens), whose chunks meet the other requests' decode steps and, when the batch is full, wait a turn.
std::vector<std::vector<int32_t>> prompts(const Tokenizer& tokenizer) {
  const std::string openings[] = {"The Linux kernel", "In the beginning", "A dictionary defines", "Python lists",
                                  "The committee reported", "And the Lord said", "def main():", "Memory pages are",
                                  "Once upon a time", "Section 3 describes", "He walked into", "Return the value",
                                  "Light is", "Many people believe", "Unto thee", "When the scheduler"};
  std::vector<std::vector<int32_t>> out;
  for (int i = 0; i < 16; ++i) {
    std::string text = openings[i];
    const size_t length = i < 14 ? static_cast<size_t>(4 + 2 * i) : static_cast<size_t>(270 + 20 * (i - 14));
    for (int r = 1; tokenizer.encode(text, true, false).size() < length; ++r) text += " " + openings[(i + r) % 16];
    out.push_back(tokenizer.encode(text, true, false));
  }
  return out;
}

std::vector<std::vector<int64_t>> generate(Model& model, const Tokenizer& tokenizer, int slots,
                                           const std::vector<std::vector<int32_t>>& prompt_list, bool together,
                                           int max_tokens) {
  SchedulerOptions options;
  options.n_slots = slots;
  options.n_ctx = 320;
  options.threads = 2;
  options.max_queued = 32;
  auto scheduler = Scheduler::create(model, tokenizer, options);
  EXPECT_TRUE(scheduler.ok()) << scheduler.error();
  if (!scheduler.ok()) return {};
  auto submit = [&](const std::vector<int32_t>& prompt) {
    GenerationRequest request;
    request.prompt = prompt;
    request.sampling.temperature = 0;
    request.max_tokens = max_tokens;
    request.ignore_eos = true;
    request.top_logprobs = 0;
    auto stream = (*scheduler)->submit(std::move(request));
    EXPECT_TRUE(stream.ok()) << stream.error();
    return stream.ok() ? *stream : nullptr;
  };
  std::vector<std::vector<int64_t>> outputs;
  if (together) {
    std::vector<std::shared_ptr<RequestStream>> streams;
    for (const auto& p : prompt_list) streams.push_back(submit(p));
    for (auto& s : streams) outputs.push_back(s ? collect_tokens(*s) : std::vector<int64_t>{});
  } else {
    for (const auto& p : prompt_list) {
      auto s = submit(p);
      outputs.push_back(s ? collect_tokens(*s) : std::vector<int64_t>{});
    }
  }
  return outputs;
}

class BatchingTest : public ::testing::TestWithParam<const char*> {};

TEST_P(BatchingTest, SixteenConcurrentGreedyRequestsEqualTheirSoloRuns) {
  const std::string file = std::string("models/") + GetParam();
  KVTIER_REQUIRE_SHARED(file);
  auto model = Model::load(shared_path(file).string());
  ASSERT_TRUE(model.ok()) << model.error();
  auto tokenizer = Tokenizer::from_gguf((*model)->file());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.error();
  const auto prompt_list = prompts(**tokenizer);
  ASSERT_EQ(prompt_list.size(), 16u);
  constexpr int kTokens = 8;
  // Alone: one request at a time, each in a slot not used before (the least recently used one: the prompts
  // share nothing worth keeping), so that both runs start from empty caches.
  const auto alone = generate(**model, **tokenizer, 16, prompt_list, false, kTokens);
  const auto together = generate(**model, **tokenizer, 16, prompt_list, true, kTokens);
  ASSERT_EQ(alone.size(), 16u);
  ASSERT_EQ(together.size(), 16u);
  for (size_t i = 0; i < 16; ++i) {
    EXPECT_EQ(alone[i].size(), static_cast<size_t>(2 * kTokens)) << "request " << i;
    EXPECT_EQ(together[i], alone[i]) << GetParam() << ": request " << i << " (" << prompt_list[i].size()
                                     << " prompt tokens)";
  }
}

INSTANTIATE_TEST_SUITE_P(SharedModels, BatchingTest,
                         ::testing::Values("tiny-llama-6m.Q4_K_M.gguf", "tiny-llama-31m.Q4_K_M.gguf"),
                         [](const auto& info) {
                           std::string name = info.param;
                           return name.find("31m") != std::string::npos ? std::string("Model31m") : std::string("Model6m");
                         });

}  // namespace
}  // namespace kvtier
