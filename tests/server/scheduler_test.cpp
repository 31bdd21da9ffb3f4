// The server's scheduler (kvtier/server_scheduler.h) on the repository's demo model: outputs independent of what
// runs beside them, prefix reuse across requests, the bounded queue, cancellation, stop strings and logprobs.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "kvtier/model.h"
#include "kvtier/server_scheduler.h"
#include "kvtier/tokenizer.h"

namespace kvtier {
namespace {

using namespace std::chrono_literals;

const std::string kModel = std::string(KVTIER_SOURCE_DIR) + "/models/tiny-llama-6m.Q4_0.gguf";

struct Shared {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
};

Shared& shared() {
  static Shared s = [] {
    Shared l;
    if (!std::filesystem::exists(kModel)) return l;
    auto model = Model::load(kModel);
    if (!model.ok()) return l;
    l.model = std::move(*model);
    auto tok = Tokenizer::from_gguf(l.model->file());
    if (tok.ok()) l.tokenizer = std::move(*tok);
    return l;
  }();
  return s;
}

struct Outcome {
  std::vector<int32_t> tokens;
  std::string text;
  GenerationSummary summary;
};

Outcome collect(RequestStream& stream) {
  Outcome o;
  std::vector<GeneratedToken> got;
  while (!stream.wait(got, 100ms)) {
  }
  for (const GeneratedToken& t : got) {
    o.tokens.push_back(t.token);
    o.text += t.text;
  }
  o.summary = stream.summary();
  o.text += o.summary.tail_text;
  return o;
}

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(kModel)) GTEST_SKIP() << "needs the demo model " << kModel;
    ASSERT_NE(shared().model, nullptr);
    ASSERT_NE(shared().tokenizer, nullptr);
  }
  std::unique_ptr<Scheduler> make(int slots, int max_queued = 16, int n_ctx = 1024) {
    SchedulerOptions o;
    o.n_slots = slots;
    o.n_ctx = n_ctx;
    o.threads = 2;
    o.max_queued = max_queued;
    auto s = Scheduler::create(*shared().model, *shared().tokenizer, o);
    EXPECT_TRUE(s.ok()) << s.error();
    return s.ok() ? std::move(*s) : nullptr;
  }
  std::vector<int32_t> tokens(const std::string& text) {
    return shared().tokenizer->encode(text, shared().tokenizer->add_bos_default(), true);
  }
  GenerationRequest greedy(const std::string& prompt, int max_tokens) {
    GenerationRequest r;
    r.prompt = tokens(prompt);
    r.sampling.temperature = 0;
    r.max_tokens = max_tokens;
    r.ignore_eos = true;
    return r;
  }
  static std::string long_text() {
    std::string text;
    for (int i = 0; i < 60; ++i) text += "The kernel schedules task " + std::to_string(i) + " on a free core. ";
    return text;  // several hundred tokens: prefilled in more than one chunk
  }
};

TEST_F(SchedulerTest, GreedyOutputIsTheSameAloneAndBesideOthers) {
  const std::vector<GenerationRequest> requests = {
      greedy("The Linux kernel", 24), greedy(long_text(), 16), greedy("In the beginning God created", 20),
      greedy("def parse(text):", 24)};
  std::vector<Outcome> alone;
  for (const GenerationRequest& r : requests) {
    auto scheduler = make(1);
    ASSERT_NE(scheduler, nullptr);
    auto stream = scheduler->submit(r);
    ASSERT_TRUE(stream.ok()) << stream.error();
    alone.push_back(collect(**stream));
  }
  auto scheduler = make(4);
  ASSERT_NE(scheduler, nullptr);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const GenerationRequest& r : requests) {
    auto stream = scheduler->submit(r);
    ASSERT_TRUE(stream.ok()) << stream.error();
    streams.push_back(*stream);
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    const Outcome together = collect(*streams[i]);
    EXPECT_EQ(together.tokens, alone[i].tokens) << "request " << i;
    EXPECT_EQ(together.text, alone[i].text) << "request " << i;
    EXPECT_EQ(together.summary.finish, FinishReason::kLength);
    EXPECT_EQ(together.summary.completion_tokens, requests[i].max_tokens);
    EXPECT_EQ(together.summary.prompt_tokens, static_cast<int>(requests[i].prompt.size()));
  }
  const SchedulerMetrics m = scheduler->metrics();
  EXPECT_EQ(m.requests_finished, 4u);
  EXPECT_EQ(m.active_slots, 0);
  EXPECT_GT(m.kv_resident_bytes, 0u);
}

TEST_F(SchedulerTest, ARequestContinuingAnEarlierOneReusesItsSlotsPrefix) {
  auto scheduler = make(2);
  ASSERT_NE(scheduler, nullptr);
  const GenerationRequest first = greedy(long_text(), 8);
  auto a = scheduler->submit(first);
  ASSERT_TRUE(a.ok());
  const Outcome answer = collect(**a);
  EXPECT_EQ(answer.summary.cached_tokens, 0);
  // An unrelated request takes the other slot (it shares only BOS), keeping the first conversation's prefix.
  auto b = scheduler->submit(greedy("Psalm 23", 4));
  ASSERT_TRUE(b.ok());
  EXPECT_LE(collect(**b).summary.cached_tokens, 1);
  // The conversation's next turn: its prompt, the answer, and a new question.
  GenerationRequest next = first;
  next.prompt.insert(next.prompt.end(), answer.tokens.begin(), answer.tokens.end());
  const std::vector<int32_t> more = shared().tokenizer->encode(" And then?", false, false);
  next.prompt.insert(next.prompt.end(), more.begin(), more.end());
  auto c = scheduler->submit(next);
  ASSERT_TRUE(c.ok());
  const Outcome continued = collect(**c);
  // The slot held the prompt and all but the last generated token (never evaluated).
  EXPECT_EQ(continued.summary.cached_tokens, static_cast<int>(first.prompt.size() + answer.tokens.size() - 1));
  EXPECT_EQ(scheduler->metrics().cached_tokens,
            static_cast<uint64_t>(continued.summary.cached_tokens) + collect(**b).summary.cached_tokens);
}

TEST_F(SchedulerTest, RequestsBeyondSlotsAndQueueAreRefused) {
  auto scheduler = make(1, /*max_queued=*/1);
  ASSERT_NE(scheduler, nullptr);
  auto running = scheduler->submit(greedy("The Linux kernel", 400));
  auto queued = scheduler->submit(greedy("The Linux kernel", 4));
  ASSERT_TRUE(running.ok()) << running.error();
  ASSERT_TRUE(queued.ok()) << queued.error();
  auto refused = scheduler->submit(greedy("The Linux kernel", 4));
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(Scheduler::queue_full(refused.status())) << refused.error();
  EXPECT_EQ(scheduler->metrics().requests_refused, 1u);
  (*running)->cancel();
  EXPECT_EQ(collect(**running).summary.finish, FinishReason::kCancelled);
  EXPECT_EQ(collect(**queued).summary.finish, FinishReason::kLength);
}

TEST_F(SchedulerTest, CancellingFreesTheSlotForTheNextRequest) {
  auto scheduler = make(1, 0);
  ASSERT_NE(scheduler, nullptr);
  auto stream = scheduler->submit(greedy("The Linux kernel", 900));
  ASSERT_TRUE(stream.ok());
  std::vector<GeneratedToken> got;
  while (got.empty()) (*stream)->wait(got, 100ms);  // generation is under way
  (*stream)->cancel();
  const Outcome cancelled = collect(**stream);
  EXPECT_EQ(cancelled.summary.finish, FinishReason::kCancelled);
  EXPECT_LT(cancelled.summary.completion_tokens, 900);
  auto next = scheduler->submit(greedy("In the beginning", 3));
  ASSERT_TRUE(next.ok()) << next.error();
  EXPECT_EQ(collect(**next).summary.completion_tokens, 3);
  const SchedulerMetrics m = scheduler->metrics();
  EXPECT_EQ(m.requests_cancelled, 1u);
  EXPECT_EQ(m.requests_finished, 1u);
}

TEST_F(SchedulerTest, BadRequestsAreRefusedWithAReason) {
  auto scheduler = make(1, 4, 64);
  ASSERT_NE(scheduler, nullptr);
  auto too_long = scheduler->submit(greedy(long_text(), 4));
  ASSERT_FALSE(too_long.ok());
  EXPECT_NE(too_long.error().find("context size"), std::string::npos) << too_long.error();
  EXPECT_FALSE(Scheduler::queue_full(too_long.status()));
  GenerationRequest none = greedy("Hello", 0);
  EXPECT_FALSE(scheduler->submit(none).ok());
  GenerationRequest nan = greedy("Hello", 4);
  nan.sampling.temperature = std::nanf("");
  EXPECT_FALSE(scheduler->submit(nan).ok());
  GenerationRequest bad_token = greedy("Hello", 4);
  bad_token.prompt.push_back(1 << 30);
  EXPECT_FALSE(scheduler->submit(bad_token).ok());
  GenerationRequest empty = greedy("", 4);
  empty.prompt.clear();
  EXPECT_FALSE(scheduler->submit(empty).ok());
}

TEST_F(SchedulerTest, GenerationStopsAtTheSlotsContext) {
  auto scheduler = make(1, 4, 32);
  ASSERT_NE(scheduler, nullptr);
  GenerationRequest r = greedy("The Linux kernel", 1000);
  const int prompt = static_cast<int>(r.prompt.size());
  auto stream = scheduler->submit(r);
  ASSERT_TRUE(stream.ok());
  const Outcome o = collect(**stream);
  EXPECT_EQ(o.summary.finish, FinishReason::kLength);
  EXPECT_EQ(o.summary.completion_tokens, 32 - prompt + 1);  // the last token is sent, never evaluated
}

TEST_F(SchedulerTest, StopStringsEndTheAnswerAndNeverAppearInIt) {
  auto scheduler = make(1);
  ASSERT_NE(scheduler, nullptr);
  const Outcome full = collect(**scheduler->submit(greedy("The Linux kernel", 40)));
  ASSERT_GT(full.text.size(), 12u);
  // A stop string taken from the middle of the full answer: the answer ends right before it.
  const std::string stop = full.text.substr(full.text.size() / 2, 4);
  GenerationRequest r = greedy("The Linux kernel", 40);
  r.stop_strings = {stop};
  const Outcome stopped = collect(**scheduler->submit(r));
  EXPECT_EQ(stopped.summary.finish, FinishReason::kStop);
  EXPECT_EQ(stopped.text, full.text.substr(0, full.text.find(stop)));
}

TEST_F(SchedulerTest, LogprobsRankTheGreedyChoiceFirst) {
  auto scheduler = make(1);
  ASSERT_NE(scheduler, nullptr);
  GenerationRequest r = greedy("The Linux kernel", 6);
  r.top_logprobs = 3;
  auto stream = scheduler->submit(r);
  ASSERT_TRUE(stream.ok());
  std::vector<GeneratedToken> got;
  while (!(*stream)->wait(got, 100ms)) {
  }
  ASSERT_EQ(got.size(), 6u);
  for (const GeneratedToken& t : got) {
    ASSERT_EQ(t.top.size(), 3u);
    EXPECT_EQ(t.top[0].token, t.token);
    EXPECT_EQ(t.top[0].logprob, t.chosen.logprob);
    EXPECT_LE(t.chosen.logprob, 0.0f);
    EXPECT_GE(t.top[0].logprob, t.top[1].logprob);
    EXPECT_GE(t.top[1].logprob, t.top[2].logprob);
    EXPECT_LE(std::exp(t.top[0].logprob) + std::exp(t.top[1].logprob) + std::exp(t.top[2].logprob), 1.0001);
  }
}

TEST_F(SchedulerTest, ShutdownEndsRunningAndQueuedRequests) {
  auto scheduler = make(1, 4);
  ASSERT_NE(scheduler, nullptr);
  auto running = scheduler->submit(greedy("The Linux kernel", 900));
  auto waiting = scheduler->submit(greedy("The Linux kernel", 900));
  ASSERT_TRUE(running.ok());
  ASSERT_TRUE(waiting.ok());
  scheduler->shutdown();
  EXPECT_EQ(collect(**running).summary.finish, FinishReason::kCancelled);
  EXPECT_EQ(collect(**waiting).summary.finish, FinishReason::kCancelled);
  EXPECT_FALSE(scheduler->submit(greedy("Hello", 2)).ok());
}

}  // namespace
}  // namespace kvtier
