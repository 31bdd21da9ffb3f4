// A bounded load test of `kvtier serve` as a process, on loopback: many clients at once (64 × 8 requests by
// default), long and short prompts, some sharing a long preamble (prefix-cache copies between slots), streamed
// and plain, chat and completions, greedy and seeded sampling, clients that hang up mid-stream or give up
// waiting, all under a --kv-budget small enough that idle conversations spill to disk. It stops by itself.
//
// Asserted: every answer that completes is well-formed and equals the same request's solo answer (text, token
// count, finish reason, log-probabilities); what a client read before hanging up is a prefix of it; no request
// fails or is refused; /metrics' pool accounting comes back to its baseline; the server's peak RSS stays within
// its RSS before the load + --kv-budget + kRssOverhead. Latency percentiles are printed, never asserted.
//
// KVTIER_LOAD_CLIENTS and KVTIER_LOAD_REQUESTS change the shape (the sanitizer build runs 32 × 4 by default:
// still concurrent, at a fraction of the time).
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "common/shared_data.h"
#include "common/test_util.h"
#include "kvtier/kv_cache.h"
#include "kvtier/kv_options.h"
#include "kvtier/model.h"
#include "server/serve_process.h"

#if defined(__SANITIZE_ADDRESS__)
#define KVTIER_LOAD_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KVTIER_LOAD_SANITIZED 1
#endif
#endif
#ifndef KVTIER_LOAD_SANITIZED
#define KVTIER_LOAD_SANITIZED 0
#endif

namespace kvtier {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using ::kvtier::testing::ServeProcess;

const char* const kModel = "models/tiny-llama-6m.Q4_0.gguf";
constexpr int kSlots = 8;
constexpr int kContext = 512;
constexpr size_t kShortPrompts = 10;  // the last of the prompts (two templates each: completion, chat)
// What the server's RSS may grow by beyond its KV budget under load: the HTTP threads' stacks (one per slot and
// queued request), glibc's per-thread malloc arenas, request and response buffers, and the prefix cache's copy
// stream (a source cache's whole save() stream, up to a slot's context: ~2 MiB here).
// Measured: 17 MiB above the RSS before the load at the peak, KV growth within the budget included (64 × 8, Release).
constexpr int64_t kRssOverhead = 32ll << 20;
// Room for conversations in RAM beyond the slots' empty caches: about 500 tokens in all, so that eight slots
// holding up to ~230 each must spill.
constexpr size_t kBudgetRoom = 2ull << 20;

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && std::atoi(v) > 0 ? std::atoi(v) : fallback;
}

// Deterministic English-looking text of about `words` words (the tokenizer makes ~1.3 tokens of a word).
std::string make_text(uint32_t seed, int words) {
  static const char* const kWords[] = {
      "the", "little", "dog", "ran", "to", "park", "and", "saw", "a", "big", "red", "ball", "she", "was",
      "happy", "tree", "boy", "girl", "mom", "said", "went", "home", "day", "sun", "cat", "played", "with",
      "friend", "they", "had", "fun", "one", "time", "there", "lived", "bird", "sky", "blue", "cake", "ate"};
  std::mt19937 rng(seed);
  std::string out;
  for (int i = 0; i < words; ++i) {
    std::string w = kWords[rng() % std::size(kWords)];
    if (i % 9 == 0) w[0] = static_cast<char>(w[0] - 'a' + 'A');
    out += w;
    out += (i % 9 == 8) ? ". " : " ";
  }
  return out;
}

// One distinct request; the load sends each many times, streamed or not.
struct Template {
  bool chat = false;
  std::string system;  // chat only: a system message before the user's
  std::string prompt;  // the completion prompt, or the user's message
  int max_tokens = 16;
  double temperature = 0;  // 0: greedy; otherwise sampled with `seed`
  int seed = 0;
  bool logprobs = false;
};

json request_body(const Template& t, bool stream) {
  json body = {{"model", "tiny"}, {"max_tokens", t.max_tokens}, {"temperature", t.temperature}};
  if (t.temperature > 0) body["seed"] = t.seed;
  if (t.chat) {
    json messages = json::array();
    if (!t.system.empty()) messages.push_back({{"role", "system"}, {"content", t.system}});
    messages.push_back({{"role", "user"}, {"content", t.prompt}});
    body["messages"] = messages;
    if (t.logprobs) body["logprobs"] = true;
  } else {
    body["prompt"] = t.prompt;
    if (t.logprobs) body["logprobs"] = 1;
  }
  if (stream) {
    body["stream"] = true;
    body["stream_options"] = {{"include_usage", true}};
  }
  return body;
}

const char* route(const Template& t) { return t.chat ? "/v1/chat/completions" : "/v1/completions"; }

// An answer as the client saw it.
struct Answer {
  std::string text;
  std::vector<double> logprobs;  // the chosen tokens', when asked
  std::string finish;            // "stop" / "length"
  int completion_tokens = -1;
  bool operator==(const Answer&) const = default;
};

std::string describe(const Answer& a) {
  return "{text '" + a.text + "', " + std::to_string(a.logprobs.size()) + " logprobs, finish " + a.finish + ", " +
         std::to_string(a.completion_tokens) + " tokens}";
}

// The choice's text and logprobs, in either API's shape; `delta`: a stream chunk. Throws (json's exceptions,
// or std::runtime_error) on anything malformed.
void read_choice(const json& choice, bool chat, bool delta, Answer& into) {
  if (choice.at("index").get<int>() != 0) throw std::runtime_error("choice index is not 0");
  if (chat) {
    const json& message = choice.at(delta ? "delta" : "message");
    if (message.contains("content")) into.text += message.at("content").get<std::string>();
  } else {
    into.text += choice.at("text").get<std::string>();
  }
  const json& logprobs = choice.at("logprobs");
  if (!logprobs.is_null()) {
    if (chat) {
      for (const json& e : logprobs.at("content")) into.logprobs.push_back(e.at("logprob").get<double>());
    } else {
      for (const json& v : logprobs.at("token_logprobs")) into.logprobs.push_back(v.get<double>());
    }
  }
  const json& finish = choice.at("finish_reason");
  if (!finish.is_null()) {
    if (!into.finish.empty()) throw std::runtime_error("two finish reasons");
    into.finish = finish.get<std::string>();
  }
}

Answer parse_plain(const std::string& body, const Template& t) {
  const json r = json::parse(body);
  if (r.at("object") != (t.chat ? "chat.completion" : "text_completion")) throw std::runtime_error("wrong object");
  if (r.at("choices").size() != 1) throw std::runtime_error("not one choice");
  Answer a;
  read_choice(r.at("choices")[0], t.chat, false, a);
  a.completion_tokens = r.at("usage").at("completion_tokens").get<int>();
  return a;
}

// A stream's events: `data: {json}` each, then `data: [DONE]` once at the end. With `complete` false (the client
// hung up) the text may end anywhere: only whole events are read, and no end is required.
Answer parse_stream(const std::string& text, const Template& t, bool complete) {
  Answer a;
  std::string id;
  bool done = false;
  size_t at = 0;
  for (;;) {
    const size_t end = text.find("\n\n", at);
    if (end == std::string::npos) break;
    const std::string event = text.substr(at, end - at);
    at = end + 2;
    if (done) throw std::runtime_error("an event after [DONE]");
    if (event.rfind("data: ", 0) != 0) throw std::runtime_error("not a data event: '" + event + "'");
    const std::string data = event.substr(6);
    if (data == "[DONE]") {
      done = true;
      continue;
    }
    const json chunk = json::parse(data);
    if (chunk.contains("error")) throw std::runtime_error("an error event: " + data);
    if (chunk.at("object") != (t.chat ? "chat.completion.chunk" : "text_completion")) {
      throw std::runtime_error("wrong object: " + data);
    }
    if (id.empty()) id = chunk.at("id").get<std::string>();
    if (chunk.at("id") != id) throw std::runtime_error("the id changed within a stream");
    if (chunk.contains("usage")) {
      if (!chunk.at("choices").empty() || a.finish.empty()) throw std::runtime_error("usage before the finish");
      a.completion_tokens = chunk.at("usage").at("completion_tokens").get<int>();
      continue;
    }
    if (chunk.at("choices").size() != 1) throw std::runtime_error("not one choice: " + data);
    if (!a.finish.empty()) throw std::runtime_error("text after the finish reason");
    read_choice(chunk.at("choices")[0], t.chat, true, a);
  }
  if (complete && (!done || at != text.size() || a.completion_tokens < 0)) {
    throw std::runtime_error("the stream did not end with usage and [DONE]");
  }
  return a;
}

// Whether what a client read before hanging up could be the start of `full` (up to its finish reason, and its
// usage when that came too).
bool is_prefix(const Answer& part, const Answer& full) {
  if (full.text.compare(0, part.text.size(), part.text) != 0 || part.logprobs.size() > full.logprobs.size()) {
    return false;
  }
  if (!std::equal(part.logprobs.begin(), part.logprobs.end(), full.logprobs.begin())) return false;
  if (part.finish.empty()) return true;
  return part.text == full.text && part.logprobs == full.logprobs && part.finish == full.finish &&
         (part.completion_tokens < 0 || part.completion_tokens == full.completion_tokens);
}

// Parsed Prometheus text: "name{labels}" -> value.
std::map<std::string, double> parse_metrics(const std::string& text) {
  std::map<std::string, double> out;
  const std::regex line(R"(^([a-z_]+(\{[^}]*\})?) ([-0-9.e+]+)$)");
  size_t at = 0;
  while (at < text.size()) {
    size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    const std::string l = text.substr(at, end - at);
    std::smatch m;
    if (std::regex_match(l, m, line)) out[m[1]] = std::stod(m[3]);
    at = end + 1;
  }
  return out;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

class ServeLoadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    KVTIER_REQUIRE_SHARED(kModel);
    if (!std::filesystem::exists(::kvtier::testing::kvtier_binary())) {
      GTEST_SKIP() << "needs the kvtier binary " << ::kvtier::testing::kvtier_binary() << " (build the kvtier target)";
    }
  }
};

// The slots' caches empty, as the server makes them (Scheduler::create refuses a budget below this).
size_t empty_caches_bytes(const std::string& model_path, const std::string& spill_dir) {
  auto model = Model::load(model_path);
  if (!model.ok()) return 0;
  KvCacheOptions kv;
  kv.budget_bytes = size_t{1} << 40;  // any budget: a cache with a cold tier, as each slot's under --kv-budget
  kv.spill_dir = spill_dir;
  kv.cold_mode = "exact";
  auto cache = make_kv_cache((*model)->config(), kContext, kv);
  return cache.ok() ? (*cache)->usage().empty_bytes * kSlots : 0;
}

TEST_F(ServeLoadTest, ManyClientsGetTheirSoloAnswersWithinTheBudgetAndThePoolReturnsToBaseline) {
  const int clients = env_int("KVTIER_LOAD_CLIENTS", KVTIER_LOAD_SANITIZED ? 32 : 64);
  const int per_client = env_int("KVTIER_LOAD_REQUESTS", KVTIER_LOAD_SANITIZED ? 4 : 8);
  const std::string model_path = ::kvtier::testing::shared_path(kModel).string();
  ::kvtier::testing::TempDir dir("kvtier-serveload");
  const std::string spill = dir.path() + "/spill";
  std::filesystem::create_directories(spill);
  const size_t empty = empty_caches_bytes(model_path, spill);
  ASSERT_GT(empty, 0u);
  const size_t budget = empty + kBudgetRoom;
  ServeProcess server(dir.path(), {"-m", model_path, "--port", "0", "-np", std::to_string(kSlots), "-c",
                                   std::to_string(kContext), "-t", "2", "--alias", "tiny", "--max-queue",
                                   std::to_string(clients), "--kv-budget", std::to_string(budget), "--kv-spill",
                                   spill, "--kv-cold", "exact"});
  const int port = server.port();
  ASSERT_GT(port, 0) << server.log();
  auto client = [&] {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(120, 0);
    return c;
  };
  auto metrics = [&] {
    auto r = client().Get("/metrics");
    return r && r->status == 200 ? parse_metrics(r->body) : std::map<std::string, double>{};
  };

  // The requests: a preamble shared by several prompts (a full page and more: copied between slots), long
  // prompts of their own (~170-210 tokens), and short ones (most: a few seconds in all); each as a completion and
  // a chat, greedy, some sampled with a seed, some with log-probabilities.
  const std::string preamble = make_text(1, 70);
  std::vector<std::string> prompts;
  // Each goes on for more than a page past the preamble, so that another one takes a new slot and gets the
  // preamble copied there (the solo runs below do it at least once) rather than cutting this conversation back.
  for (int i = 0; i < 5; ++i) prompts.push_back(preamble + make_text(100 + i, 55 + 5 * i));
  for (int i = 0; i < 2; ++i) prompts.push_back(make_text(200 + i, 130 + 30 * i));
  for (int i = 0; i < kShortPrompts; ++i) prompts.push_back(make_text(300 + i, 3 + 2 * i));
  std::vector<Template> templates;
  for (size_t i = 0; i < prompts.size(); ++i) {
    Template completion;
    completion.prompt = prompts[i];
    completion.max_tokens = 4 + static_cast<int>(i * 7 % 17);
    completion.logprobs = i % 3 == 0;
    templates.push_back(completion);
    Template chat = completion;
    chat.chat = true;
    if (i < 5) {  // the preamble as a system message: the chat template's prefix, then the same text
      chat.system = preamble;
      chat.prompt = prompts[i].substr(preamble.size());
    }
    chat.logprobs = i % 3 == 1;
    chat.max_tokens = 24 - completion.max_tokens / 2;
    if (i % 4 == 2) {
      chat.temperature = 0.9;
      chat.seed = static_cast<int>(i);
    }
    templates.push_back(chat);
  }
  // Short unrelated requests that leave every slot holding a short sequence: the state the pool accounting is
  // compared in, before and after the load (one per slot: each goes to the least recently used one).
  std::vector<Template> resets;
  for (int i = 0; i < kSlots; ++i) {
    Template t;
    t.prompt = make_text(400 + i, 8);
    t.max_tokens = 4;
    resets.push_back(t);
  }

  std::atomic<int> issued{0};
  auto ask = [&](const Template& t) -> Answer {
    ++issued;
    auto r = client().Post(route(t), request_body(t, false).dump(), "application/json");
    if (!r || r->status != 200) {
      ADD_FAILURE() << "solo request failed: " << (r ? r->body : httplib::to_string(r.error()));
      return {};
    }
    return parse_plain(r->body, t);
  };
  std::vector<Answer> solo;  // [templates]
  for (const Template& t : templates) solo.push_back(ask(t));
  for (const Template& t : resets) ask(t);
  const std::map<std::string, double> baseline = metrics();
  const int64_t rss_before = server.status_bytes("VmRSS");
  ASSERT_GT(rss_before, 0);
  ASSERT_FALSE(::testing::Test::HasFailure());

  // The load. Each client runs its requests one after another on one keep-alive connection (a new one after a
  // hang-up); the plan (which request, streamed or not, hang-ups) comes from the client's own seed.
  std::mutex mutex;  // guards the vectors below
  std::vector<std::string> problems;
  std::vector<double> latency_ms, first_token_ms;
  int completed = 0, hung_up = 0, gave_up = 0;
  auto problem = [&](const std::string& what) {
    std::lock_guard lock(mutex);
    problems.push_back(what);
  };
  const auto load_start = Clock::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      std::mt19937 rng(static_cast<uint32_t>(1000 + c));
      httplib::Client http("127.0.0.1", port);
      http.set_read_timeout(120, 0);
      for (int r = 0; r < per_client; ++r) {
        // Short prompts 75% of the time (the work stays a few seconds), the others evenly.
        const size_t first_short = 2 * (prompts.size() - kShortPrompts);
        const size_t which = rng() % 100 < 75 ? first_short + rng() % (templates.size() - first_short)
                                              : rng() % first_short;
        const Template& t = templates[which];
        const bool stream = rng() % 2 == 0;
        const uint32_t roll = rng() % 100;
        const std::string where = "client " + std::to_string(c) + " request " + std::to_string(r) + " (template " +
                                  std::to_string(which) + (stream ? ", streamed" : "") + ")";
        const auto start = Clock::now();
        ++issued;
        if (stream) {
          // 15% hang up after 1-3 events (a chat stream's first event is the role alone).
          const int hang_up_after = roll < 15 ? 1 + static_cast<int>(rng() % 3) : -1;
          std::string received;
          int events = 0;
          double first_ms = -1;
          httplib::Request req;
          req.method = "POST";
          req.path = route(t);
          req.body = request_body(t, true).dump();
          req.set_header("Content-Type", "application/json");
          req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
            received.append(data, n);
            events = static_cast<int>(std::count(received.begin(), received.end(), '\n')) / 2;
            // The first token's event: a chat stream's first event is the assistant's role alone.
            if (first_ms < 0 && events >= (t.chat ? 2 : 1)) {
              first_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
            }
            return hang_up_after < 0 || events < hang_up_after;
          };
          httplib::Response res;
          httplib::Error error = httplib::Error::Success;
          const bool ok = http.send(req, res, error);
          const bool hung = hang_up_after >= 0 && events >= hang_up_after;
          if (!ok && !hung) {
            problem(where + ": " + httplib::to_string(error));
            continue;
          }
          if (ok && res.status != 200) {
            problem(where + ": status " + std::to_string(res.status) + " " + received);
            continue;
          }
          try {
            const Answer got = parse_stream(received, t, !hung);
            if (hung ? !is_prefix(got, solo[which]) : !(got == solo[which])) {
              problem(where + ": got " + describe(got) + ", alone " + describe(solo[which]));
            }
          } catch (const std::exception& e) {
            problem(where + ": garbled stream (" + e.what() + "): " + received);
          }
          std::lock_guard lock(mutex);
          if (hung) {
            ++hung_up;
          } else {
            ++completed;
            latency_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
            if (first_ms >= 0) first_token_ms.push_back(first_ms);
          }
        } else {
          // 5% give up waiting after 20 ms (closing the connection): the answer, if it came, must still be right.
          const bool impatient = roll < 5;
          httplib::Client once("127.0.0.1", port);
          httplib::Client& use = impatient ? once : http;
          if (impatient) use.set_read_timeout(0, 20000);
          auto res = use.Post(route(t), request_body(t, false).dump(), "application/json");
          if (!res) {
            if (!impatient) problem(where + ": " + httplib::to_string(res.error()));
            std::lock_guard lock(mutex);
            gave_up += impatient ? 1 : 0;
            continue;
          }
          if (res->status != 200) {
            problem(where + ": status " + std::to_string(res->status) + " " + res->body);
            continue;
          }
          try {
            const Answer got = parse_plain(res->body, t);
            if (!(got == solo[which])) problem(where + ": got " + describe(got) + ", alone " + describe(solo[which]));
          } catch (const std::exception& e) {
            problem(where + ": garbled answer (" + e.what() + "): " + res->body);
          }
          std::lock_guard lock(mutex);
          ++completed;
          latency_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const double load_seconds = std::chrono::duration<double>(Clock::now() - load_start).count();

  for (size_t i = 0; i < std::min<size_t>(problems.size(), 10); ++i) ADD_FAILURE() << problems[i];
  EXPECT_TRUE(problems.empty()) << problems.size() << " of " << clients * per_client << " requests went wrong";

  // Hung-up requests end at the server's next step: wait (bounded) until no slot is busy, then leave every slot
  // holding a short sequence again, as before the load.
  std::map<std::string, double> after;
  for (int i = 0; i < 600; ++i) {
    after = metrics();
    if (after["kvtier_slots_busy"] == 0 && after["kvtier_queue_depth"] == 0) break;
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(after["kvtier_slots_busy"], 0);
  for (const Template& t : resets) ask(t);
  after = metrics();
  const int64_t rss_peak = server.status_bytes("VmHWM"), rss_after = server.status_bytes("VmRSS");

  std::printf("[ load ] %d clients x %d requests in %.2f s: %d completed, %d hung up mid-stream, %d gave up waiting\n",
              clients, per_client, load_seconds, completed, hung_up, gave_up);
  std::printf("[ load ] latency of completed requests: p50 %.0f ms, p99 %.0f ms; first streamed token: p50 %.0f ms, "
              "p99 %.0f ms\n",
              percentile(latency_ms, 0.5), percentile(latency_ms, 0.99), percentile(first_token_ms, 0.5),
              percentile(first_token_ms, 0.99));
  std::printf("[ load ] prompt tokens %.0f (%.0f evaluated), %.0f generated\n", after["kvtier_prompt_tokens_total"],
              after["kvtier_prompt_tokens_evaluated_total"], after["kvtier_generated_tokens_total"]);
  std::printf("[ load ] spilled pages %.0f, prefix-cache copies from slots %.0f (%.0f tokens), budget waits %.0f, "
              "dropped conversations %.0f, cancelled %.0f, budgeted peak %.0f of %zu bytes\n",
              after["kvtier_kv_spilled_pages_total"], after["kvtier_prefix_cache_hits_total{source=\"slot\"}"],
              after["kvtier_prefix_cache_tokens_total{source=\"slot\"}"], after["kvtier_kv_budget_waits_total"],
              after["kvtier_kv_dropped_conversations_total"], after["kvtier_requests_total{outcome=\"cancelled\"}"],
              after["kvtier_kv_budgeted_peak_bytes"], budget);
  std::printf("[ load ] server RSS: %.1f MiB before the load, peak %.1f MiB, %.1f MiB after (bound: before + "
              "budget %.1f MiB + %lld MiB)%s\n",
              rss_before / 1048576.0, rss_peak / 1048576.0, rss_after / 1048576.0, budget / 1048576.0,
              static_cast<long long>(kRssOverhead >> 20),
              KVTIER_LOAD_SANITIZED ? " (sanitizer build: shadow memory and the quarantine make it no bound)" : "");

  // Every request the server saw ended as finished or cancelled; none failed or was refused.
  EXPECT_EQ(after["kvtier_requests_total{outcome=\"failed\"}"], 0);
  EXPECT_EQ(after["kvtier_requests_total{outcome=\"refused\"}"], 0);
  EXPECT_EQ(after["kvtier_requests_total{outcome=\"finished\"}"] + after["kvtier_requests_total{outcome=\"cancelled\"}"],
            issued.load());
  // The load did what it is meant to: pages went to disk, prefixes were copied between slots.
  EXPECT_GT(after["kvtier_kv_spilled_pages_total"], 0);
  EXPECT_GT(after["kvtier_prefix_cache_hits_total{source=\"slot\"}"], 0);
  EXPECT_LE(after["kvtier_kv_budgeted_peak_bytes"], static_cast<double>(budget));
  // The pool accounting is back where it was: the same sequences held, nothing left on disk or in the pools.
  for (const auto& [name, value] : baseline) {
    if (name.rfind("kvtier_kv_bytes", 0) == 0 || name.rfind("kvtier_kv_pages", 0) == 0 ||
        name == "kvtier_kv_budgeted_bytes" || name == "kvtier_slots_busy" || name == "kvtier_queue_depth") {
      EXPECT_EQ(after[name], value) << name;
    }
  }
  if (!KVTIER_LOAD_SANITIZED) {
    EXPECT_LE(rss_peak, rss_before + static_cast<int64_t>(budget) + kRssOverhead);
  }
  EXPECT_EQ(server.stop(SIGTERM), 0) << server.log();
}

}  // namespace
}  // namespace kvtier
