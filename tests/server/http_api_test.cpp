// The HTTP API of `kvtier serve` (app/http_api.h), started in-process on 127.0.0.1 with an ephemeral port and
// checked with httplib's client: routes, streaming = non-streaming, errors, concurrency, disconnects.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "app/http_api.h"
#include "app/loading.h"
#include "kvtier/model.h"
#include "kvtier/server_scheduler.h"

namespace kvtier::app {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

const std::string kModel = std::string(KVTIER_SOURCE_DIR) + "/models/tiny-llama-6m.Q4_0.gguf";

struct SharedModel {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<ChatFormatter> formatter;
};

SharedModel& shared() {
  static SharedModel s = [] {
    SharedModel l;
    if (!std::filesystem::exists(kModel)) return l;
    auto model = Model::load(kModel);
    if (!model.ok()) return l;
    l.model = std::move(*model);
    auto tok = Tokenizer::from_gguf(l.model->file());
    if (!tok.ok()) return l;
    l.tokenizer = std::move(*tok);
    auto formatter = load_chat_formatter(&l.model->file(), l.tokenizer.get(), "chatml");
    if (formatter.ok()) l.formatter = std::make_unique<ChatFormatter>(std::move(*formatter));
    return l;
  }();
  return s;
}

// A server on its own thread, stopped and joined on destruction.
class TestServer {
 public:
  TestServer(int slots, int max_queued, ApiSettings settings = {}, int n_ctx = 256,
             const std::function<void(SchedulerOptions&)>& configure = {}) {
    SchedulerOptions o;
    o.n_slots = slots;
    o.n_ctx = n_ctx;
    o.threads = 2;
    o.max_queued = max_queued;
    if (configure) configure(o);
    auto scheduler = Scheduler::create(*shared().model, *shared().tokenizer, o);
    EXPECT_TRUE(scheduler.ok()) << scheduler.error();
    scheduler_ = std::move(*scheduler);
    if (settings.model_id.empty()) settings.model_id = "tiny";
    settings.model_names = {settings.model_id};
    server_ = std::make_unique<ApiServer>(*scheduler_, *shared().tokenizer, *shared().formatter, 1024, settings);
    auto port = server_->bind("127.0.0.1", 0);
    EXPECT_TRUE(port.ok()) << port.error();
    port_ = port.ok() ? *port : -1;
    thread_ = std::thread([this] { server_->listen(); });
  }
  ~TestServer() {
    scheduler_->shutdown();
    server_->stop();
    thread_.join();
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(60, 0);
    return c;
  }
  Scheduler& scheduler() { return *scheduler_; }

 private:
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<ApiServer> server_;
  int port_ = -1;
  std::thread thread_;
};

json parse(const std::string& body) {
  json j = json::parse(body, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << body;
  return j;
}

// The events of a server-sent-event body: each "data: …" payload; the last must be [DONE].
std::vector<json> sse_events(const std::string& body, bool* done) {
  std::vector<json> events;
  *done = false;
  size_t at = 0;
  while (at < body.size()) {
    const size_t end = body.find("\n\n", at);
    if (end == std::string::npos) break;
    const std::string event = body.substr(at, end - at);
    at = end + 2;
    EXPECT_EQ(event.rfind("data: ", 0), 0u) << event;
    const std::string payload = event.substr(6);
    if (payload == "[DONE]") {
      *done = true;
      EXPECT_EQ(at, body.size()) << "[DONE] ends the stream";
      break;
    }
    events.push_back(parse(payload));
  }
  return events;
}

// The text of a streamed answer, its finish reason and its usage (if sent).
struct Streamed {
  std::string text;
  std::string finish;
  json usage;
};

Streamed streamed(const std::string& body, bool chat) {
  bool done = false;
  Streamed s;
  for (const json& e : sse_events(body, &done)) {
    if (e.contains("usage") && e["choices"].empty()) {
      s.usage = e["usage"];
      continue;
    }
    const json& choice = e["choices"][0];
    s.text += chat ? choice["delta"].value("content", "") : choice["text"].get<std::string>();
    if (!choice["finish_reason"].is_null()) s.finish = choice["finish_reason"];
  }
  EXPECT_TRUE(done) << body;
  return s;
}

class HttpApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(kModel)) GTEST_SKIP() << "needs the demo model " << kModel;
    ASSERT_NE(shared().formatter, nullptr);
  }
};

json completion_body(const std::string& prompt, int max_tokens, bool stream = false) {
  return {{"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0}, {"stream", stream}};
}

json chat_body(const std::string& message, int max_tokens, bool stream = false) {
  return {{"model", "tiny"},
          {"messages", json::array({{{"role", "system"}, {"content", "You are terse."}},
                                    {{"role", "user"}, {"content", message}}})},
          {"max_completion_tokens", max_tokens},
          {"temperature", 0},
          {"stream", stream},
          {"stream_options", {{"include_usage", true}}}};
}

TEST_F(HttpApiTest, HealthModelsTokenizeAndDetokenize) {
  TestServer server(1, 4);
  auto client = server.client();
  auto health = client.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(parse(health->body)["status"], "ok");
  auto models = client.Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(parse(models->body)["data"][0]["id"], "tiny");
  auto tokens = client.Post("/tokenize", json{{"content", "Hello world"}}.dump(), "application/json");
  ASSERT_TRUE(tokens);
  const json ids = parse(tokens->body)["tokens"];
  EXPECT_EQ(ids.get<std::vector<int32_t>>(), shared().tokenizer->encode("Hello world", false, true));
  auto text = client.Post("/detokenize", json{{"tokens", ids}}.dump(), "application/json");
  ASSERT_TRUE(text);
  EXPECT_EQ(parse(text->body)["content"], "Hello world");
}

TEST_F(HttpApiTest, StreamedTextEqualsTheNonStreamedTextForGreedyRequests) {
  TestServer server(2, 4);
  auto client = server.client();
  for (bool chat : {false, true}) {
    const char* route = chat ? "/v1/chat/completions" : "/v1/completions";
    const json body = chat ? chat_body("Tell me about the kernel.", 20) : completion_body("The Linux kernel", 20);
    auto plain = client.Post(route, body.dump(), "application/json");
    ASSERT_TRUE(plain);
    ASSERT_EQ(plain->status, 200) << plain->body;
    const json answer = parse(plain->body);
    const json& choice = answer["choices"][0];
    const std::string text = chat ? choice["message"]["content"].get<std::string>() : choice["text"].get<std::string>();
    EXPECT_FALSE(text.empty());
    EXPECT_EQ(answer["object"], chat ? "chat.completion" : "text_completion");
    EXPECT_EQ(answer["usage"]["completion_tokens"], 20);
    EXPECT_EQ(choice["finish_reason"], "length");

    json stream_body = body;
    stream_body["stream"] = true;
    stream_body["stream_options"] = {{"include_usage", true}};
    auto events = client.Post(route, stream_body.dump(), "application/json");
    ASSERT_TRUE(events);
    ASSERT_EQ(events->status, 200) << events->body;
    EXPECT_EQ(events->get_header_value("Content-Type"), "text/event-stream");
    const Streamed s = streamed(events->body, chat);
    EXPECT_EQ(s.text, text) << (chat ? "chat" : "completion");
    EXPECT_EQ(s.finish, "length");
    EXPECT_EQ(s.usage["completion_tokens"], 20);
    EXPECT_EQ(s.usage["prompt_tokens"], answer["usage"]["prompt_tokens"]);
    // The same prompt again: the slot that served it still holds it.
    EXPECT_EQ(s.usage["prompt_tokens_details"]["cached_tokens"].get<int>(),
              answer["usage"]["prompt_tokens"].get<int>() - 1);
  }
}

// Alone and beside others with the same cache history (empty slots): a reused prefix evaluates the prompt in other
// pieces than a cold run, which may change the last bits of the logits (docs/server.md), so each solo run gets a
// fresh server.
TEST_F(HttpApiTest, ConcurrentGreedyRequestsGiveTheirSoloAnswers) {
  const std::vector<std::string> prompts = {"The Linux kernel", "In the beginning", "def parse(text):",
                                            "A dictionary defines"};
  std::vector<std::string> solo;
  for (const std::string& p : prompts) {
    TestServer server(1, 0);
    auto r = server.client().Post("/v1/completions", completion_body(p, 16).dump(), "application/json");
    ASSERT_TRUE(r);
    solo.push_back(parse(r->body)["choices"][0]["text"]);
  }
  TestServer server(4, 8);
  std::vector<std::string> parallel(prompts.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < prompts.size(); ++i) {
    threads.emplace_back([&, i] {
      // Streamed, so that all four are generating at once.
      auto r = server.client().Post("/v1/completions", completion_body(prompts[i], 16, true).dump(),
                                    "application/json");
      if (r) parallel[i] = streamed(r->body, false).text;
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(parallel, solo);
}

TEST_F(HttpApiTest, BadRequestsGetOpenAiErrorObjects) {
  ApiSettings settings;
  settings.max_body_bytes = 64 << 10;
  TestServer server(1, 4, settings);
  auto client = server.client();
  auto expect_error = [&](const char* route, const std::string& body, int status, const std::string& type) {
    auto r = client.Post(route, body, "application/json");
    ASSERT_TRUE(r) << body.substr(0, 80);
    EXPECT_EQ(r->status, status) << body.substr(0, 80) << " -> " << r->body;
    const json j = parse(r->body);
    EXPECT_EQ(j["error"]["type"], type) << r->body;
    EXPECT_TRUE(j["error"]["message"].is_string());
  };
  expect_error("/v1/completions", "{\"prompt\": \"x\",", 400, "invalid_request_error");
  expect_error("/v1/completions", "[1, 2]", 400, "invalid_request_error");
  expect_error("/v1/completions", R"({"prompt": "x", "temperature": "hot"})", 400, "invalid_request_error");
  expect_error("/v1/completions", R"({"prompt": "x", "temperature": -1})", 400, "invalid_request_error");
  expect_error("/v1/completions", R"({"prompt": "x", "max_tokens": 0})", 400, "invalid_request_error");
  expect_error("/v1/completions", R"({"prompt": "x", "max_tokens": 1000000000})", 400, "invalid_request_error");
  expect_error("/v1/completions", R"({"prompt": "x", "max_tokens": 2.5})", 400, "invalid_request_error");
  expect_error("/v1/completions", R"({"prompt": "x", "seed": -3})", 400, "invalid_request_error");
  expect_error("/v1/completions", R"({"prompt": "x", "stop": [1]})", 400, "invalid_request_error");
  expect_error("/v1/completions", R"({"prompt": 5})", 400, "invalid_request_error");
  expect_error("/v1/completions", R"({"prompt": [1, 99999999]})", 400, "invalid_request_error");
  expect_error("/v1/chat/completions", R"({"messages": "hi"})", 400, "invalid_request_error");
  const std::string deep = "{\"messages\": [{\"role\": \"user\", \"content\": " + std::string(10000, '[') +
                           std::string(10000, ']') + "}]}";
  expect_error("/v1/chat/completions", deep, 400, "invalid_request_error");  // not a stack overflow
  expect_error("/v1/chat/completions", R"({"messages": [{"content": "no role"}]})", 400, "invalid_request_error");
  expect_error("/v1/chat/completions", R"({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]})", 404,
               "invalid_request_error");
  std::string long_prompt;
  for (int i = 0; i < 300; ++i) long_prompt += "word ";
  auto too_long = client.Post("/v1/completions", completion_body(long_prompt, 4).dump(), "application/json");
  ASSERT_TRUE(too_long);
  EXPECT_EQ(too_long->status, 400);
  EXPECT_EQ(parse(too_long->body)["error"]["code"], "context_length_exceeded");
  expect_error("/v1/completions", json{{"prompt", std::string(100 << 10, 'a')}}.dump(), 413, "invalid_request_error");
  auto missing = client.Get("/v2/nothing");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(parse(missing->body)["error"]["type"], "not_found_error");
  // The server still answers.
  auto ok = client.Post("/v1/completions", completion_body("Hello", 2).dump(), "application/json");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
}

TEST_F(HttpApiTest, AnApiKeyIsRequiredWhenSet) {
  ApiSettings settings;
  settings.api_key = "sesame";
  TestServer server(1, 4, settings);
  auto client = server.client();
  auto health = client.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  for (const char* key : {"", "Bearer sesamE", "Bearer sesame2", "sesame"}) {
    httplib::Headers headers;
    if (*key) headers.emplace("Authorization", key);
    auto r = client.Get("/v1/models", headers);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401) << key;
    EXPECT_EQ(parse(r->body)["error"]["code"], "invalid_api_key");
  }
  auto r = client.Get("/v1/models", {{"Authorization", "Bearer sesame"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

// Waits (bounded) until the scheduler has counted `n` cancelled requests.
bool wait_for_cancelled(Scheduler& scheduler, uint64_t n) {
  for (int i = 0; i < 600 && scheduler.metrics().requests_cancelled < n; ++i) std::this_thread::sleep_for(50ms);
  return scheduler.metrics().requests_cancelled >= n;
}

TEST_F(HttpApiTest, AClosedConnectionCancelsItsRequestAndFreesTheSlot) {
  TestServer server(1, 0, {}, 1024);
  {
    // Streaming: the client reads the first event and hangs up.
    auto client = server.client();
    int events = 0;
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.body = completion_body("The Linux kernel", 1000, true).dump();
    req.set_header("Content-Type", "application/json");
    req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++events < 2; };
    client.send(req);
    EXPECT_GE(events, 1);
  }
  ASSERT_TRUE(wait_for_cancelled(server.scheduler(), 1));
  {
    // Not streaming: the client gives up waiting and closes the connection.
    auto client = server.client();
    client.set_read_timeout(0, 100000);
    auto r = client.Post("/v1/completions", completion_body("The Linux kernel", 1000).dump(), "application/json");
    EXPECT_FALSE(r);
  }
  ASSERT_TRUE(wait_for_cancelled(server.scheduler(), 2));
  EXPECT_LT(server.scheduler().metrics().generated_tokens, 2000u);  // neither ran to its end
  // The only slot is free again (-np 1, no queue): the next request is served.
  auto r = server.client().Post("/v1/completions", completion_body("Hello", 3).dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
}

TEST_F(HttpApiTest, RequestsBeyondSlotsAndQueueGet503AndMetricsCountThem) {
  TestServer server(1, 0);
  std::thread busy([&] {
    server.client().Post("/v1/completions", completion_body("The Linux kernel", 250, true).dump(),
                         "application/json");
  });
  for (int i = 0; i < 600 && server.scheduler().metrics().active_slots == 0; ++i) std::this_thread::sleep_for(10ms);
  auto refused = server.client().Post("/v1/completions", completion_body("Hello", 2).dump(), "application/json");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 503) << refused->body;
  EXPECT_EQ(parse(refused->body)["error"]["type"], "server_error");
  auto metrics = server.client().Get("/metrics");
  ASSERT_TRUE(metrics);
  for (const char* name : {"kvtier_requests_total{outcome=\"refused\"} 1", "kvtier_generated_tokens_total",
                           "kvtier_kv_bytes{tier=\"ram\"}", "kvtier_kv_bytes{tier=\"cold\"} 0",
                           "kvtier_kv_pages{tier=\"cold\"} 0", "kvtier_kv_budget_bytes 0", "kvtier_queue_depth",
                           "kvtier_cached_tokens_total", "kvtier_decode_tokens_per_second"}) {
    EXPECT_NE(metrics->body.find(name), std::string::npos) << name << "\n" << metrics->body;
  }
  busy.join();
}

TEST_F(HttpApiTest, LogprobsAndStopStrings) {
  TestServer server(1, 4);
  auto client = server.client();
  json body = chat_body("Tell me about the kernel.", 6);
  body["logprobs"] = true;
  body["top_logprobs"] = 2;
  auto r = client.Post("/v1/chat/completions", body.dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json content = parse(r->body)["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 6u);
  for (const json& entry : content) {
    EXPECT_EQ(entry["top_logprobs"].size(), 2u);
    EXPECT_EQ(entry["token"], entry["top_logprobs"][0]["token"]);
    EXPECT_LE(entry["logprob"].get<double>(), 0.0);
  }
  auto full = client.Post("/v1/completions", completion_body("The Linux kernel", 30).dump(), "application/json");
  ASSERT_TRUE(full);
  const std::string text = parse(full->body)["choices"][0]["text"];
  ASSERT_GT(text.size(), 10u);
  const std::string stop = text.substr(text.size() / 2, 3);
  json stopped_body = completion_body("The Linux kernel", 30);
  stopped_body["stop"] = json::array({"\x01never", stop});
  auto stopped = client.Post("/v1/completions", stopped_body.dump(), "application/json");
  ASSERT_TRUE(stopped);
  const json choice = parse(stopped->body)["choices"][0];
  EXPECT_EQ(choice["finish_reason"], "stop");
  EXPECT_EQ(choice["text"], text.substr(0, text.find(stop)));
}

TEST_F(HttpApiTest, APreambleSharedAcrossSlotsAndRestartsIsReportedAsCachedTokens) {
  // Two conversations with one long system prompt: the second gets the first's full pages from its slot; a
  // restarted server with the same --cache-dir gets them from disk; every answer is the cold run's.
  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    ("kvtier_http_prefix_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::string system = "You are a careful assistant.";
  for (int i = 0; i < 16; ++i) system += " Rule " + std::to_string(i) + ": answer briefly and exactly.";
  auto chat = [&](const std::string& question) {
    return json{{"messages", json::array({{{"role", "system"}, {"content", system}},
                                          {{"role", "user"}, {"content", question}}})},
                {"max_tokens", 8},
                {"temperature", 0}};
  };
  auto answer = [](TestServer& server, const json& body, int* cached) {
    auto r = server.client().Post("/v1/chat/completions", body.dump(), "application/json");
    EXPECT_TRUE(r);
    if (!r) return std::string();
    EXPECT_EQ(r->status, 200) << r->body;
    const json j = parse(r->body);
    *cached = j["usage"]["prompt_tokens_details"]["cached_tokens"];
    return j["choices"][0]["message"]["content"].get<std::string>();
  };
  std::string cold;
  int cached = -1;
  {
    TestServer server(1, 4, {}, 512, [](SchedulerOptions& o) { o.prefix_cache = false; });
    cold = answer(server, chat("Why is the sky blue?"), &cached);
    EXPECT_EQ(cached, 0);
  }
  const auto with_cache_dir = [&](SchedulerOptions& o) { o.cache_dir = dir.string(); };
  {
    TestServer server(2, 4, {}, 512, with_cache_dir);
    std::string question = "What is a page?";
    for (int i = 0; i < 12; ++i) question += " Think of case " + std::to_string(i) + ".";
    answer(server, chat(question), &cached);
    EXPECT_EQ(cached, 0);
    EXPECT_EQ(answer(server, chat("Why is the sky blue?"), &cached), cold);
    EXPECT_GE(cached, 128);
    auto metrics = server.client().Get("/metrics");
    ASSERT_TRUE(metrics);
    for (const std::string& line : std::vector<std::string>{"kvtier_prefix_cache_hits_total{source=\"slot\"} 1",
                                   "kvtier_prefix_cache_hits_total{source=\"disk\"} 0",
                                   "kvtier_prefix_cache_tokens_total{source=\"slot\"} " + std::to_string(cached),
                                   "kvtier_prefix_cache_disk_entries", "kvtier_prefix_cache_failures_total 0"}) {
      EXPECT_NE(metrics->body.find(line), std::string::npos) << line << "\n" << metrics->body;
    }
  }
  {
    TestServer server(1, 4, {}, 512, with_cache_dir);
    EXPECT_EQ(answer(server, chat("Why is the sky blue?"), &cached), cold);
    EXPECT_GE(cached, 128);
    auto metrics = server.client().Get("/metrics");
    ASSERT_TRUE(metrics);
    EXPECT_NE(metrics->body.find("kvtier_prefix_cache_hits_total{source=\"disk\"} 1"), std::string::npos)
        << metrics->body;
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kvtier::app
