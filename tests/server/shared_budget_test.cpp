// One --kv-budget shared by the scheduler's slots (kv/budget_arbiter.h): three conversations in a budget that
// holds about one and a half of them. The budget is never exceeded, idle conversations go to the cold tier least
// recently used first, a returning conversation resumes from its spilled pages (cached_tokens > 0) and answers
// exactly as with no budget at all, requests that do not fit wait or fail clearly, and clearing the slots brings
// the caches back to where they started.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/shared_data.h"
#include "common/test_util.h"
#include "kvtier/model.h"
#include "kvtier/server_scheduler.h"
#include "kvtier/tokenizer.h"

namespace kvtier {
namespace {

using namespace std::chrono_literals;

const char* const kModel = "models/tiny-llama-6m.Q4_0.gguf";

struct Loaded {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
};

Loaded& loaded() {
  static Loaded l = [] {
    Loaded out;
    auto model = Model::load(::kvtier::testing::shared_path(kModel).string());
    if (!model.ok()) return out;
    out.model = std::move(*model);
    auto tok = Tokenizer::from_gguf(out.model->file());
    if (tok.ok()) out.tokenizer = std::move(*tok);
    return out;
  }();
  return l;
}

// A reply: its tokens, each followed by the bits of its log-probability (a greedy token rarely flips when a
// logit changes in its last bits; its log-probability does), and the summary.
struct Reply {
  std::vector<int64_t> ids;
  std::vector<int32_t> tokens;
  GenerationSummary summary;
};

Reply collect(RequestStream& stream) {
  std::vector<GeneratedToken> got;
  while (!stream.wait(got, 100ms)) {
  }
  Reply r;
  for (const GeneratedToken& t : got) {
    uint32_t bits = 0;
    std::memcpy(&bits, &t.chosen.logprob, sizeof bits);
    r.ids.push_back(t.token);
    r.ids.push_back(bits);
    r.tokens.push_back(t.token);
  }
  r.summary = stream.summary();
  return r;
}

class SharedBudgetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    KVTIER_REQUIRE_SHARED(kModel);
    ASSERT_NE(loaded().model, nullptr);
    ASSERT_NE(loaded().tokenizer, nullptr);
  }

  std::unique_ptr<Scheduler> make(size_t budget, int n_ctx = 640) {
    SchedulerOptions o;
    o.n_slots = 3;
    o.n_ctx = n_ctx;
    o.threads = 2;
    o.max_queued = 8;
    o.kv.budget_bytes = budget;
    o.kv.spill_dir = budget > 0 ? spill_.path() : "";
    o.kv.cold_mode = "exact";
    auto s = Scheduler::create(*loaded().model, *loaded().tokenizer, o);
    EXPECT_TRUE(s.ok()) << s.error();
    return s.ok() ? std::move(*s) : nullptr;
  }

  std::shared_ptr<RequestStream> submit(Scheduler& s, const std::vector<int32_t>& prompt, int max_tokens = 24) {
    GenerationRequest request;
    request.prompt = prompt;
    request.sampling.temperature = 0;
    request.max_tokens = max_tokens;
    request.ignore_eos = true;
    request.top_logprobs = 0;
    auto stream = s.submit(std::move(request));
    EXPECT_TRUE(stream.ok()) << stream.error();
    return stream.ok() ? *stream : nullptr;
  }
  Reply ask(Scheduler& s, const std::vector<int32_t>& prompt, int max_tokens = 24) {
    auto stream = submit(s, prompt, max_tokens);
    return stream ? collect(*stream) : Reply{};
  }

  // A prompt of about `length` tokens.
  std::vector<int32_t> prompt(const std::string& opening, size_t length) {
    const Tokenizer& tok = *loaded().tokenizer;
    std::string text = opening;
    const char* words[] = {" the river", " a page of the book", " went home", " under the old bridge", " quietly",
                           " and then the rain", " of memory", " said the teacher"};
    for (int r = 0; tok.encode(text, true, false).size() < length; ++r) text += words[(r * 5 + opening.size()) % 8];
    return tok.encode(text, true, false);
  }
  static std::vector<int32_t> next_turn(const std::vector<int32_t>& prompt, const Reply& reply,
                                        const std::vector<int32_t>& more) {
    std::vector<int32_t> out = prompt;
    out.insert(out.end(), reply.tokens.begin(), reply.tokens.end());
    out.insert(out.end(), more.begin() + 1, more.end());  // without its BOS
    return out;
  }

  // The conversation: A, B and C one after another (each idle while the next runs), A's second turn, then B's
  // and C's second turns at once.
  struct Transcript {
    std::vector<Reply> replies;  // A1, B1, C1, A2, B2, C2
    std::vector<std::vector<KvUsage>> slots_after;  // [replies] each slot's cache after the reply
  };
  Transcript converse(Scheduler& s) {
    Transcript t;
    const auto a1 = prompt("The Linux kernel", 300), b1 = prompt("Once upon a time", 280),
               c1 = prompt("In the beginning", 320);
    for (const auto* p : {&a1, &b1, &c1}) {
      t.replies.push_back(ask(s, *p));
      t.slots_after.push_back(s.slot_kv_usage());
    }
    const auto more = prompt("And what happened next", 40);
    t.replies.push_back(ask(s, next_turn(a1, t.replies[0], more)));
    t.slots_after.push_back(s.slot_kv_usage());
    auto b2 = submit(s, next_turn(b1, t.replies[1], more)), c2 = submit(s, next_turn(c1, t.replies[2], more));
    if (b2 && c2) {
      t.replies.push_back(collect(*b2));
      t.replies.push_back(collect(*c2));
      t.slots_after.push_back(s.slot_kv_usage());
      t.slots_after.push_back(s.slot_kv_usage());
    }
    return t;
  }

  ::kvtier::testing::TempDir spill_{"kvtier-shared-budget"};
};

TEST_F(SharedBudgetTest, ConversationsSpillLeastRecentlyUsedFirstAndResumeExactly) {
  // The reference: no budget, no cold tier.
  Transcript reference;
  {
    auto s = make(0);
    ASSERT_NE(s, nullptr);
    reference = converse(*s);
    ASSERT_EQ(reference.replies.size(), 6u);
  }
  // How much one conversation holds: A's first turn under a budget too large to spill.
  size_t empty = 0, one_conversation = 0;
  {
    auto s = make(size_t{1} << 30);
    ASSERT_NE(s, nullptr);
    empty = s->metrics().kv_budgeted_bytes;
    ask(*s, prompt("The Linux kernel", 300));
    one_conversation = s->metrics().kv_budgeted_bytes - empty;
    ASSERT_GT(one_conversation, 0u);
    EXPECT_EQ(s->metrics().kv_cold_pages, 0u);
  }

  const size_t budget = empty + one_conversation * 3 / 2;
  auto s = make(budget);
  ASSERT_NE(s, nullptr);
  const SchedulerMetrics start = s->metrics();
  EXPECT_EQ(start.kv_budgeted_bytes, empty);
  EXPECT_EQ(start.kv_budget_bytes, budget);
  const Transcript t = converse(*s);
  ASSERT_EQ(t.replies.size(), 6u);
  const char* names[] = {"A1", "B1", "C1", "A2", "B2", "C2"};
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(t.replies[i].summary.finish, FinishReason::kLength) << names[i] << ": " << t.replies[i].summary.error;
    EXPECT_EQ(t.replies[i].ids, reference.replies[i].ids) << names[i] << " differs from the run without a budget";
    EXPECT_EQ(t.replies[i].summary.cached_tokens, reference.replies[i].summary.cached_tokens) << names[i];
  }
  // Slots: A in 0, B in 1, C in 2 (each new conversation takes the least recently used idle slot).
  // While B ran, A (idle) spilled; while C ran, A went down to its floor first, and C itself kept every page.
  EXPECT_GT(t.slots_after[1][0].cold_pages, 0u);
  EXPECT_EQ(t.slots_after[1][1].cold_pages, 0u);
  EXPECT_EQ(t.slots_after[2][2].cold_pages, 0u);
  EXPECT_GE(t.slots_after[2][0].cold_pages, t.slots_after[2][1].cold_pages);
  EXPECT_LE(t.slots_after[2][0].budgeted_bytes, t.slots_after[2][0].floor_bytes);
  // A returned: it reused its whole first turn (prompt and reply but the last token), pages read from disk.
  EXPECT_EQ(t.replies[3].summary.cached_tokens,
            static_cast<int>(prompt("The Linux kernel", 300).size() + t.replies[0].tokens.size() - 1));
  EXPECT_GT(t.replies[4].summary.cached_tokens, 0);
  EXPECT_GT(t.replies[5].summary.cached_tokens, 0);

  const SchedulerMetrics m = s->metrics();
  EXPECT_LE(m.kv_budgeted_peak_bytes, budget) << "over the budget at some turn";
  EXPECT_GT(m.kv_budgeted_peak_bytes, budget - one_conversation / 2) << "the budget never bound";
  EXPECT_GT(m.kv_spilled_pages, 0u);
  EXPECT_GT(m.kv_cold_pages, 0u);
  EXPECT_EQ(m.kv_dropped_conversations, 0u);
  EXPECT_EQ(m.requests_failed, 0u);

  // Cleared, the caches hold what they held empty: no page in RAM or on disk.
  s->clear_idle_slots();
  const SchedulerMetrics cleared = s->metrics();
  EXPECT_EQ(cleared.kv_budgeted_bytes, start.kv_budgeted_bytes);
  EXPECT_EQ(cleared.kv_resident_bytes, start.kv_resident_bytes);
  EXPECT_EQ(cleared.kv_cold_pages, 0u);
  EXPECT_EQ(cleared.kv_cold_bytes, 0u);
  EXPECT_TRUE(cleared.kv_ram_pages.empty());
  for (const auto& held : s->slot_tokens()) EXPECT_TRUE(held.empty());
}

TEST_F(SharedBudgetTest, AStepThatDoesNotFitWaitsForRoom) {
  // Two prompts sent together in a budget too small for both prompt chunks at once: they take turns, and both
  // answer as without a budget.
  const auto p1 = prompt("The committee reported", 300), p2 = prompt("Memory pages are", 300);
  std::vector<Reply> reference;
  {
    auto s = make(0);
    ASSERT_NE(s, nullptr);
    auto r1 = submit(*s, p1), r2 = submit(*s, p2);
    ASSERT_TRUE(r1 && r2);
    reference = {collect(*r1), collect(*r2)};
  }
  size_t empty = 0, one_conversation = 0;
  {
    auto s = make(size_t{1} << 30);
    ASSERT_NE(s, nullptr);
    empty = s->metrics().kv_budgeted_bytes;
    ask(*s, p1);
    one_conversation = s->metrics().kv_budgeted_bytes - empty;
  }
  // Three quarters of a conversation: two prompt chunks (or a chunk beside the other's last one) never fit together.
  const size_t budget = empty + one_conversation * 3 / 4;
  auto s = make(budget);
  ASSERT_NE(s, nullptr);
  auto r1 = submit(*s, p1), r2 = submit(*s, p2);
  ASSERT_TRUE(r1 && r2);
  const Reply a = collect(*r1), b = collect(*r2);
  EXPECT_EQ(a.summary.finish, FinishReason::kLength) << a.summary.error;
  EXPECT_EQ(b.summary.finish, FinishReason::kLength) << b.summary.error;
  EXPECT_EQ(a.ids, reference[0].ids);
  EXPECT_EQ(b.ids, reference[1].ids);
  const SchedulerMetrics m = s->metrics();
  EXPECT_GT(m.kv_budget_waits, 0u);
  EXPECT_LE(m.kv_budgeted_peak_bytes, budget);
  EXPECT_GT(m.kv_spilled_pages, 0u);  // the first request's pages made room for the second's
  EXPECT_EQ(m.requests_failed, 0u);
}

TEST_F(SharedBudgetTest, ARequestThatCannotFitFailsClearly) {
  size_t empty = 0;
  {
    auto s = make(size_t{1} << 30);
    ASSERT_NE(s, nullptr);
    empty = s->metrics().kv_budgeted_bytes;
  }
  // Room for the empty caches and a few bytes: a prompt longer than the hot rings hold cannot be evaluated.
  auto s = make(empty + 100);
  ASSERT_NE(s, nullptr);
  const Reply r = ask(*s, prompt("Light is", 300));
  EXPECT_EQ(r.summary.finish, FinishReason::kError);
  EXPECT_NE(r.summary.error.find("the KV budget cannot hold this request"), std::string::npos) << r.summary.error;
  EXPECT_TRUE(r.tokens.empty());
  EXPECT_LE(s->metrics().kv_budgeted_peak_bytes, empty + 100);

  // Below what the empty caches hold: refused at the start, naming the slots.
  SchedulerOptions o;
  o.n_slots = 3;
  o.n_ctx = 640;
  o.threads = 2;
  o.kv.budget_bytes = empty - 1;
  o.kv.spill_dir = spill_.path();
  auto refused = Scheduler::create(*loaded().model, *loaded().tokenizer, o);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().find("3 slots' caches hold empty"), std::string::npos) << refused.error();
}

}  // namespace
}  // namespace kvtier
