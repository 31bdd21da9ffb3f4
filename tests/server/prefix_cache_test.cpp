// The scheduler's prefix cache (kvtier/prefix_cache.h): a new conversation that shares a preamble with another
// slot's gets its full pages copied, a restarted scheduler finds them in --cache-dir, a damaged entry is
// recomputed; greedy tokens and log-probability bits are the same as with no prefix cache (f16 cache). On the
// repository's demo model.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kv/page_format.h"
#include "kvtier/model.h"
#include "kvtier/server_scheduler.h"
#include "kvtier/tokenizer.h"

namespace kvtier {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

const std::string kModel = std::string(KVTIER_SOURCE_DIR) + "/models/tiny-llama-6m.Q4_0.gguf";
constexpr int kPage = kv::kTokensPerPage;

struct Loaded {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
};

Loaded& loaded() {
  static Loaded l = [] {
    Loaded r;
    if (!fs::exists(kModel)) return r;
    auto model = Model::load(kModel);
    if (!model.ok()) return r;
    r.model = std::move(*model);
    auto tok = Tokenizer::from_gguf(r.model->file());
    if (tok.ok()) r.tokenizer = std::move(*tok);
    return r;
  }();
  return l;
}

struct Answer {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;  // the chosen tokens'
  GenerationSummary summary;
};

class PrefixCacheSchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kModel)) GTEST_SKIP() << "needs the demo model " << kModel;
    ASSERT_NE(loaded().tokenizer, nullptr);
    dir_ = fs::temp_directory_path() / ("kvtier_prefix_sched_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<Scheduler> make(int slots, bool prefix_cache, const std::string& cache_dir = "",
                                  size_t kv_budget = 0, std::function<void()> transfer_hook = {}) {
    SchedulerOptions o;
    if (kv_budget > 0) {
      fs::create_directories(dir_ / "spill");
      o.kv.budget_bytes = kv_budget;
      o.kv.spill_dir = (dir_ / "spill").string();
      o.kv.cold_mode = "exact";
    }
    o.n_slots = slots;
    o.n_ctx = 512;
    o.threads = 2;
    o.prefix_cache = prefix_cache;
    o.cache_dir = cache_dir;
    o.warn = [this](const std::string& w) { warnings_.push_back(w); };
    o.prefix_transfer_hook = std::move(transfer_hook);
    auto s = Scheduler::create(*loaded().model, *loaded().tokenizer, o);
    EXPECT_TRUE(s.ok()) << s.error();
    return s.ok() ? std::move(*s) : nullptr;
  }
  static std::vector<int32_t> prompt(const std::string& question) {
    std::string text = "You are a careful assistant. Answer in one line.";
    for (int i = 0; i < 14; ++i) text += " Rule " + std::to_string(i) + ": be brief and exact.";
    text += " Question: " + question;
    return loaded().tokenizer->encode(text, loaded().tokenizer->add_bos_default(), true);
  }
  static std::shared_ptr<RequestStream> send(Scheduler& s, const std::vector<int32_t>& prompt_tokens,
                                             int max_tokens = 12) {
    GenerationRequest r;
    r.prompt = prompt_tokens;
    r.sampling.temperature = 0;
    r.max_tokens = max_tokens;
    r.ignore_eos = true;
    r.top_logprobs = 2;
    auto stream = s.submit(r);
    EXPECT_TRUE(stream.ok()) << stream.error();
    return stream.ok() ? *stream : nullptr;
  }
  // The rest of a stream's answer, after the tokens `got` already taken from it.
  static Answer collect(RequestStream& stream, std::vector<GeneratedToken> got = {}) {
    Answer a;
    while (!stream.wait(got, 100ms)) {
    }
    for (const GeneratedToken& t : got) {
      a.tokens.push_back(t.token);
      a.logprobs.push_back(t.chosen.logprob);
    }
    a.summary = stream.summary();
    return a;
  }
  static Answer ask(Scheduler& s, const std::vector<int32_t>& prompt_tokens, int max_tokens = 12) {
    auto stream = send(s, prompt_tokens, max_tokens);
    Answer a;
    if (!stream) return a;
    std::vector<GeneratedToken> got;
    while (!stream->wait(got, 100ms)) {
    }
    for (const GeneratedToken& t : got) {
      a.tokens.push_back(t.token);
      a.logprobs.push_back(t.chosen.logprob);
    }
    a.summary = stream->summary();
    return a;
  }
  static void expect_same(const Answer& a, const Answer& b) {
    EXPECT_EQ(a.tokens, b.tokens);
    ASSERT_EQ(a.logprobs.size(), b.logprobs.size());
    EXPECT_EQ(std::memcmp(a.logprobs.data(), b.logprobs.data(), a.logprobs.size() * sizeof(float)), 0)
        << "log-probability bits";
  }

  fs::path dir_;
  std::vector<std::string> warnings_;
};

TEST_F(PrefixCacheSchedulerTest, ANewConversationGetsAPreambleAnotherSlotHoldsAndAnswersAsWithout) {
  std::string long_question = "what is a page?";  // the first conversation goes on for pages past the preamble
  for (int i = 0; i < 12; ++i) long_question += " Consider case " + std::to_string(i) + " too.";
  const std::vector<int32_t> first = prompt(long_question), second = prompt("why is the sky blue?");
  size_t shared = 0;
  while (first[shared] == second[shared]) ++shared;
  ASSERT_GE(shared, static_cast<size_t>(2 * kPage)) << "the preamble spans full pages";
  Answer reference;
  {  // a cold run: no prefix cache, an empty slot
    auto s = make(1, false);
    ASSERT_NE(s, nullptr);
    reference = ask(*s, second);
    EXPECT_EQ(reference.summary.cached_tokens, 0);
  }
  auto s = make(2, true);
  ASSERT_NE(s, nullptr);
  const SchedulerMetrics start = s->metrics();
  const Answer a = ask(*s, first);
  EXPECT_EQ(a.summary.cached_tokens, 0);
  const Answer b = ask(*s, second);
  // The second conversation went to the other slot (the first one's stays whole) with the preamble's pages.
  EXPECT_EQ(b.summary.cached_tokens, static_cast<int>(shared / kPage * kPage));
  expect_same(b, reference);
  const SchedulerMetrics m = s->metrics();
  EXPECT_EQ(m.prefix_hits_slot, 1u);
  EXPECT_EQ(m.prefix_tokens_slot, static_cast<uint64_t>(b.summary.cached_tokens));
  EXPECT_EQ(m.cached_tokens, static_cast<uint64_t>(b.summary.cached_tokens));
  EXPECT_EQ(m.prompt_tokens_evaluated, first.size() + second.size() - b.summary.cached_tokens);
  const auto held = s->slot_tokens();
  ASSERT_EQ(held.size(), 2u);
  EXPECT_GE(held[0].size(), first.size()) << "the first conversation was not cut back to the preamble";
  EXPECT_GE(held[1].size(), second.size());

  // A returning conversation still resumes in its own slot, from all of its tokens.
  std::vector<int32_t> next = first;
  next.insert(next.end(), a.tokens.begin(), a.tokens.end());
  EXPECT_EQ(ask(*s, next).summary.cached_tokens, static_cast<int>(first.size() + a.tokens.size() - 1));
  EXPECT_EQ(s->metrics().prefix_hits_slot, 1u);
  // A request repeated after a long answer (more than a page past its prompt) is still served by its slot.
  const std::vector<int32_t> short_prompt = loaded().tokenizer->encode("Once upon a time", true, true);
  ask(*s, short_prompt, 80);
  EXPECT_EQ(ask(*s, short_prompt, 4).summary.cached_tokens, static_cast<int>(short_prompt.size()) - 1);
  EXPECT_EQ(s->metrics().prefix_hits_slot, 1u);

  s->clear_idle_slots();
  const SchedulerMetrics cleared = s->metrics();
  EXPECT_EQ(cleared.kv_budgeted_bytes, start.kv_budgeted_bytes) << "pages back to the empty caches'";
  EXPECT_TRUE(cleared.kv_ram_pages.empty());
  EXPECT_TRUE(warnings_.empty());
}

TEST_F(PrefixCacheSchedulerTest, APreambleIsCopiedFromASlotWhosePagesWentToDiskWithinTheBudget) {
  std::string long_question = "what is a page?";
  for (int i = 0; i < 12; ++i) long_question += " Consider case " + std::to_string(i) + " too.";
  const std::vector<int32_t> first = prompt(long_question), second = prompt("why is the sky blue?");
  Answer reference;
  {
    auto s = make(1, false);
    ASSERT_NE(s, nullptr);
    reference = ask(*s, second);
  }
  const size_t budget = 7u << 20;  // the two empty caches take most of it: the idle conversation spills
  auto s = make(2, true, "", budget);
  ASSERT_NE(s, nullptr);
  ask(*s, first);
  const Answer b = ask(*s, second);
  EXPECT_GE(b.summary.cached_tokens, 2 * kPage);
  expect_same(b, reference);
  const SchedulerMetrics m = s->metrics();
  EXPECT_EQ(m.prefix_hits_slot, 1u);
  EXPECT_EQ(m.prefix_failures, 0u);
  EXPECT_GT(m.kv_spilled_pages, 0u) << "the source's pages went to disk (the copy read them back)";
  EXPECT_LE(m.kv_budgeted_peak_bytes, budget);
  s->clear_idle_slots();
  EXPECT_EQ(s->metrics().kv_cold_pages, 0u);
  EXPECT_TRUE(warnings_.empty());
}

TEST_F(PrefixCacheSchedulerTest, ARestartedSchedulerFindsThePrefixInTheCacheDirAndRecomputesADamagedOne) {
  const std::vector<int32_t> first = prompt("what is a page?"), second = prompt("why is the sky blue?");
  Answer reference;
  {
    auto s = make(1, false);
    ASSERT_NE(s, nullptr);
    reference = ask(*s, second);
  }
  {
    auto s = make(1, true, dir_.string());
    ASSERT_NE(s, nullptr);
    ask(*s, first);
    const SchedulerMetrics m = s->metrics();
    EXPECT_TRUE(m.prefix_disk);
    EXPECT_EQ(m.prefix_disk_entries, 1u);
    EXPECT_EQ(m.prefix_disk_stored, 1u);
    EXPECT_GT(m.prefix_disk_bytes, 0u);
  }
  {  // a new process: the preamble comes from disk
    auto s = make(1, true, dir_.string());
    ASSERT_NE(s, nullptr);
    const Answer b = ask(*s, second);
    EXPECT_GE(b.summary.cached_tokens, 2 * kPage);
    expect_same(b, reference);
    EXPECT_EQ(s->metrics().prefix_hits_disk, 1u);
    EXPECT_EQ(s->metrics().prefix_tokens_disk, static_cast<uint64_t>(b.summary.cached_tokens));
  }
  EXPECT_TRUE(warnings_.empty());
  // Damage every entry (a flipped byte in its middle): the next process recomputes and warns.
  int damaged = 0;
  for (const auto& e : fs::directory_iterator(dir_)) {
    const auto size = static_cast<std::streamoff>(fs::file_size(e.path()));
    std::fstream f(e.path(), std::ios::in | std::ios::out | std::ios::binary);
    char c = 0;
    f.seekg(size / 2);
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x40);
    f.seekp(size / 2);
    f.write(&c, 1);
    ++damaged;
  }
  ASSERT_GE(damaged, 1);
  {
    auto s = make(1, true, dir_.string());
    ASSERT_NE(s, nullptr);
    const Answer b = ask(*s, second);
    EXPECT_EQ(b.summary.cached_tokens, 0);
    expect_same(b, reference);
    const SchedulerMetrics m = s->metrics();
    EXPECT_EQ(m.prefix_hits_disk, 0u);
    EXPECT_EQ(m.prefix_failures, 1u);
    EXPECT_GE(m.prefix_disk_dropped, 1u);
  }
  ASSERT_FALSE(warnings_.empty());
  EXPECT_NE(warnings_[0].find("checksum"), std::string::npos) << warnings_[0];
}

// Holds every prefix transfer at its start (on the transfer thread) until released; the test's waits are bounded
// so that a transfer that blocked the worker fails the test instead of hanging it.
struct TransferGate {
  std::mutex mutex;
  std::condition_variable changed;
  int entered = 0;
  bool released = false;
  std::function<void()> hook() {
    return [this] {
      std::unique_lock lock(mutex);
      ++entered;
      changed.notify_all();
      changed.wait_for(lock, 60s, [&] { return released; });
    };
  }
  bool wait_entered() {
    std::unique_lock lock(mutex);
    return changed.wait_for(lock, 60s, [&] { return entered > 0; });
  }
  void release() {
    std::lock_guard lock(mutex);
    released = true;
    changed.notify_all();
  }
};

enum class TransferSource { kSlot, kSpilledSlot, kDisk };

class PrefixTransferTest : public PrefixCacheSchedulerTest, public ::testing::WithParamInterface<TransferSource> {};

TEST_P(PrefixTransferTest, AnotherStreamKeepsSteppingWhileACopyIsInProgress) {
  std::string long_question = "what is a page?";  // the source conversation goes on for pages past the preamble
  for (int i = 0; i < 12; ++i) long_question += " Consider case " + std::to_string(i) + " too.";
  const std::vector<int32_t> first = prompt(long_question), second = prompt("why is the sky blue?");
  const std::vector<int32_t> runner_prompt = loaded().tokenizer->encode("Once upon a time", true, true);
  constexpr int kRunnerTokens = 160;
  Answer reference, runner_reference;
  {  // cold runs: no prefix cache, one request at a time
    auto s = make(1, false);
    ASSERT_NE(s, nullptr);
    reference = ask(*s, second);
    runner_reference = ask(*s, runner_prompt, kRunnerTokens);
  }
  const TransferSource source = GetParam();
  fs::create_directories(dir_);
  if (source == TransferSource::kDisk) {  // an earlier server leaves the preamble in the cache dir
    auto s = make(1, true, dir_.string());
    ASSERT_NE(s, nullptr);
    ask(*s, first);
  }
  TransferGate gate;
  // Three slots: the preamble's conversation, the runner, the new conversation (the last two with --cache-dir).
  const size_t budget = source == TransferSource::kSpilledSlot ? 10u << 20 : 0;
  auto s = make(3, true, source == TransferSource::kDisk ? dir_.string() : "", budget, gate.hook());
  ASSERT_NE(s, nullptr);
  if (source != TransferSource::kDisk) ask(*s, first);

  // A long stream runs; then the new conversation's prefix transfer begins, and is held there.
  auto runner = send(*s, runner_prompt, kRunnerTokens);
  ASSERT_NE(runner, nullptr);
  std::vector<GeneratedToken> runner_got;
  for (int i = 0; i < 600 && runner_got.empty(); ++i) runner->wait(runner_got, 100ms);
  ASSERT_FALSE(runner_got.empty());
  auto copied = send(*s, second);
  ASSERT_NE(copied, nullptr);
  ASSERT_TRUE(gate.wait_entered()) << "no prefix transfer began";
  // While the transfer is held, the runner keeps getting tokens (bounded wait: 60 s), and the new conversation
  // gets none: it waits for its prefix.
  const size_t at_hold = runner_got.size();
  bool runner_done = false;
  for (int i = 0; i < 600 && runner_got.size() < at_hold + 16 && !runner_done; ++i) {
    runner_done = runner->wait(runner_got, 100ms);
  }
  std::vector<GeneratedToken> copied_got;
  copied->wait(copied_got, 0ms);
  EXPECT_TRUE(copied_got.empty()) << "the new conversation ran before its prefix was there";
  gate.release();
  EXPECT_GE(runner_got.size(), at_hold + 16) << "the other stream stopped while a prefix copy was held";

  const Answer b = collect(*copied, std::move(copied_got));
  EXPECT_GE(b.summary.cached_tokens, 2 * kPage);
  expect_same(b, reference);
  const Answer r = collect(*runner, std::move(runner_got));
  expect_same(r, runner_reference);
  const SchedulerMetrics m = s->metrics();
  EXPECT_EQ(source == TransferSource::kDisk ? m.prefix_hits_disk : m.prefix_hits_slot, 1u);
  EXPECT_EQ(m.prefix_failures, 0u);
  if (budget > 0) {
    EXPECT_GT(m.kv_spilled_pages, 0u);
    EXPECT_LE(m.kv_budgeted_peak_bytes, budget);
  }
  s->clear_idle_slots();
  EXPECT_EQ(s->metrics().kv_cold_pages, 0u);
  EXPECT_TRUE(warnings_.empty());
}

INSTANTIATE_TEST_SUITE_P(Sources, PrefixTransferTest,
                         ::testing::Values(TransferSource::kSlot, TransferSource::kSpilledSlot, TransferSource::kDisk),
                         [](const ::testing::TestParamInfo<TransferSource>& info) {
                           switch (info.param) {
                             case TransferSource::kSlot: return std::string("FromASlot");
                             case TransferSource::kSpilledSlot: return std::string("FromASpilledSlotWithinTheBudget");
                             case TransferSource::kDisk: return std::string("FromTheCacheDir");
                           }
                           return std::string();
                         });

TEST_F(PrefixCacheSchedulerTest, ACacheDirThatIsAFileIsRefusedAtStart) {
  fs::create_directories(dir_);
  std::ofstream(dir_ / "file") << "x";
  SchedulerOptions o;
  o.n_ctx = 128;
  o.cache_dir = (dir_ / "file").string();
  auto s = Scheduler::create(*loaded().model, *loaded().tokenizer, o);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error(), "--cache-dir " + o.cache_dir + ": not a directory");
}

}  // namespace
}  // namespace kvtier
