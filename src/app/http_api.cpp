#include "app/http_api.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <limits>
#include <optional>
#include <random>
#include <thread>

#include <httplib.h>

namespace kvtier::app {

namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

// An OpenAI-style error: {"error": {"message", "type", "param", "code"}} with its HTTP status.
struct ApiError {
  ApiError(int status, std::string message, std::string type = "invalid_request_error", std::string param = "",
           std::string code = "")
      : status(status), message(std::move(message)), type(std::move(type)), param(std::move(param)),
        code(std::move(code)) {}
  int status;
  std::string message;
  std::string type;
  std::string param;
  std::string code;
};

[[noreturn]] void bad_request(const std::string& param, const std::string& message, const std::string& code = "") {
  throw ApiError{400, message, "invalid_request_error", param, code};
}

// Model text can hold bytes that are not UTF-8 (a token that is half a character): replaced, never thrown on.
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void send_json(httplib::Response& res, const json& body, int status = 200) {
  res.status = status;
  res.set_content(dump(body), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) {
  json error = {{"message", e.message},
                {"type", e.type},
                {"param", e.param.empty() ? json(nullptr) : json(e.param)},
                {"code", e.code.empty() ? json(nullptr) : json(e.code)}};
  send_json(res, {{"error", error}}, e.status);
}

// Compares in time that depends only on the lengths, not on where the texts first differ.
bool constant_time_equal(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

// --- The client's connection -------------------------------------------------------------------------------
// cpp-httplib 0.11 (Debian 12) tells a handler nothing about its connection, so a client that goes away is only
// noticed when a write fails. To cancel within one step, even before anything was written (non-streaming
// requests), the handler finds its socket among the process's descriptors by the connection's two ends, and
// polls it for a hang-up.
int port_of(const sockaddr_storage& a) {
  if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(a).sin_port);
  if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(a).sin6_port);
  return -1;
}

std::string host_of(const sockaddr_storage& a, socklen_t length) {
  char host[NI_MAXHOST];
  const auto* address = reinterpret_cast<const sockaddr*>(&a);
  if (::getnameinfo(address, length, host, sizeof host, nullptr, 0, NI_NUMERICHOST) != 0) {
    return "";
  }
  return host;
}

int connection_socket(const httplib::Request& req) {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int found = -1;
  while (const dirent* entry = ::readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0') continue;
    sockaddr_storage local{}, peer{};
    socklen_t local_length = sizeof local, peer_length = sizeof peer;
    if (::getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&local), &local_length) != 0) continue;
    if (::getpeername(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&peer), &peer_length) != 0) continue;
    if (port_of(local) != req.local_port || port_of(peer) != req.remote_port) continue;
    if (host_of(peer, peer_length) != req.remote_addr) continue;
    found = static_cast<int>(fd);
    break;
  }
  ::closedir(dir);
  return found;
}

// cpp-httplib 0.11 listens with a backlog of 5, compiled into Debian's library: when more clients connect at once
// than the accept loop takes in, the kernel drops their handshakes (ListenOverflows), and their requests come
// seconds late, past the server's read timeout, or never (a load of 64 clients lost some this way). listen()
// again on a listening socket sets its backlog: done here on the sockets listening on `port`.
void raise_listen_backlog(int port, int backlog) {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return;
  while (const dirent* entry = ::readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0') continue;
    int accepting = 0;
    socklen_t size = sizeof accepting;
    if (::getsockopt(static_cast<int>(fd), SOL_SOCKET, SO_ACCEPTCONN, &accepting, &size) != 0 || !accepting) continue;
    sockaddr_storage local{};
    socklen_t local_length = sizeof local;
    if (::getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&local), &local_length) != 0) continue;
    if (port_of(local) == port) ::listen(static_cast<int>(fd), backlog);
  }
  ::closedir(dir);
}

bool peer_closed(int fd) {
  if (fd < 0) return false;
  pollfd p{fd, POLLRDHUP, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

// Request bodies nest at most this deep: parsing is iterative, but dumping, rendering and destroying a value
// recurse, and a body of a million '[' would overflow the stack of an HTTP thread.
constexpr int kMaxJsonDepth = 64;

bool nesting_depth_exceeds(const std::string& text, int limit) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

// --- Request fields ------------------------------------------------------------------------------------------
const json* field(const json& body, const char* name) {
  auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

std::optional<double> number_field(const json& body, const char* name) {
  const json* v = field(body, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number()) bad_request(name, std::string("'") + name + "' must be a number");
  return v->get<double>();
}

std::optional<int64_t> integer_field(const json& body, const char* name) {
  const json* v = field(body, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number_integer() ||
      (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))) {
    bad_request(name, std::string("'") + name + "' must be an integer");
  }
  return v->get<int64_t>();
}

std::optional<bool> bool_field(const json& body, const char* name) {
  const json* v = field(body, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean()) bad_request(name, std::string("'") + name + "' must be true or false");
  return v->get<bool>();
}

float checked_float(double v, const char* name) {
  if (!std::isfinite(v) || std::fabs(v) > 1e30) bad_request(name, std::string("'") + name + "' is out of range");
  return static_cast<float>(v);
}

struct ParsedRequest {
  GenerationRequest generation;
  bool stream = false;
  bool include_usage = false;
  bool logprobs = false;  // the chosen tokens' log-probabilities are reported
};

ParsedRequest parse_generation_fields(const json& body, bool chat, int n_ctx) {
  ParsedRequest p;
  GenerationRequest& g = p.generation;
  if (auto v = bool_field(body, "stream")) p.stream = *v;
  if (const json* options = field(body, "stream_options")) {
    if (!options->is_object()) bad_request("stream_options", "'stream_options' must be an object");
    if (auto v = bool_field(*options, "include_usage")) p.include_usage = *v;
  }
  if (auto n = integer_field(body, "n"); n && *n != 1) bad_request("n", "only n = 1 is supported");
  if (auto v = bool_field(body, "ignore_eos")) g.ignore_eos = *v;  // llama-server's extension (benchmarks)
  std::optional<int64_t> max_tokens = integer_field(body, "max_completion_tokens");
  if (!max_tokens) max_tokens = integer_field(body, "max_tokens");
  if (max_tokens) {
    if (*max_tokens < 1 || *max_tokens > n_ctx) {
      bad_request(field(body, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens",
                  "max_tokens must be in [1, " + std::to_string(n_ctx) + "] (the context size per slot)");
    }
    g.max_tokens = static_cast<int>(*max_tokens);
  } else {
    g.max_tokens = n_ctx;  // until an end of generation, a stop string, or the slot's context is full
  }
  SamplingParams& s = g.sampling;
  if (auto v = number_field(body, "temperature")) s.temperature = checked_float(*v, "temperature");
  if (auto v = number_field(body, "top_p")) s.top_p = checked_float(*v, "top_p");
  if (auto v = number_field(body, "min_p")) s.min_p = checked_float(*v, "min_p");
  if (auto v = number_field(body, "repeat_penalty")) s.repeat_penalty = checked_float(*v, "repeat_penalty");
  if (auto v = integer_field(body, "top_k")) {
    if (*v < 0 || *v > std::numeric_limits<int>::max()) bad_request("top_k", "'top_k' must be >= 0");
    s.top_k = static_cast<int>(*v);
  }
  if (Status st = validate_sampling_params(s); !st.ok()) bad_request("", st.message());
  if (const json* seed = field(body, "seed")) {
    auto parsed = seed->is_number_integer() ? parse_seed(seed->dump()) : Result<uint64_t>(Status::error(""));
    if (!parsed.ok()) bad_request("seed", "'seed' must be a whole number in [0, 2^64)");
    s.seed = *parsed;
  } else {
    s.seed = std::random_device{}();  // a sampled answer differs between requests unless a seed is given
  }
  if (const json* stop = field(body, "stop")) {
    if (stop->is_string()) {
      g.stop_strings.push_back(stop->get<std::string>());
    } else if (stop->is_array() && stop->size() <= 16) {
      for (const json& s_item : *stop) {
        if (!s_item.is_string()) bad_request("stop", "'stop' must be a string or an array of strings");
        g.stop_strings.push_back(s_item.get<std::string>());
      }
    } else {
      bad_request("stop", "'stop' must be a string or an array of at most 16 strings");
    }
  }
  if (chat) {
    if (auto v = bool_field(body, "logprobs")) p.logprobs = *v;
    if (auto v = integer_field(body, "top_logprobs")) {
      if (*v < 0 || *v > 20) bad_request("top_logprobs", "'top_logprobs' must be in [0, 20]");
      if (!p.logprobs) bad_request("top_logprobs", "'top_logprobs' needs 'logprobs': true");
      g.top_logprobs = static_cast<int>(*v);
    } else if (p.logprobs) {
      g.top_logprobs = 0;
    }
  } else if (auto v = integer_field(body, "logprobs")) {  // the legacy API: an integer, the alternatives wanted
    if (*v < 0 || *v > 20) bad_request("logprobs", "'logprobs' must be in [0, 20]");
    p.logprobs = true;
    g.top_logprobs = static_cast<int>(*v);
  }
  return p;
}

std::vector<int> byte_values(const std::string& text) {
  std::vector<int> bytes;
  for (unsigned char c : text) bytes.push_back(c);
  return bytes;
}

std::string random_id(const char* prefix) {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t start = std::random_device{}();
  char buf[40];
  std::snprintf(buf, sizeof buf, "%s%016llx", prefix, static_cast<unsigned long long>(start + counter++));
  return buf;
}

// What a finished request answers with, shared by the plain and the streamed form.
struct ResponseContext {
  bool chat = false;
  bool logprobs = false;
  std::string id, model;
  int64_t created = 0;
};

json usage_json(const GenerationSummary& s) {
  return {{"prompt_tokens", s.prompt_tokens},
          {"completion_tokens", s.completion_tokens},
          {"total_tokens", s.prompt_tokens + s.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", s.cached_tokens}}}};
}

json finish_json(const GenerationSummary& s) {
  return s.finish == FinishReason::kStop || s.finish == FinishReason::kLength ? json(finish_reason_name(s.finish))
                                                                             : json(nullptr);
}

class LogprobWriter {
 public:
  LogprobWriter(const Tokenizer& tokenizer, bool chat) : tokenizer_(tokenizer), chat_(chat) {}
  // The chat API's {"content": [entry …]} or the legacy API's parallel arrays.
  json format(const std::vector<GeneratedToken>& tokens, size_t text_offset) const {
    if (chat_) {
      json content = json::array();
      for (const GeneratedToken& t : tokens) {
        const std::string piece = tokenizer_.token_to_piece(t.token);
        json top = json::array();
        for (const TokenLogprob& alt : t.top) {
          const std::string alt_piece = tokenizer_.token_to_piece(alt.token);
          top.push_back({{"token", alt_piece}, {"logprob", alt.logprob}, {"bytes", byte_values(alt_piece)}});
        }
        content.push_back(
            {{"token", piece}, {"logprob", t.chosen.logprob}, {"bytes", byte_values(piece)}, {"top_logprobs", top}});
      }
      return {{"content", content}};
    }
    json pieces = json::array(), logprobs = json::array(), tops = json::array(), offsets = json::array();
    for (const GeneratedToken& t : tokens) {
      pieces.push_back(tokenizer_.token_to_piece(t.token));
      logprobs.push_back(t.chosen.logprob);
      json top = json::object();
      for (const TokenLogprob& alt : t.top) top[tokenizer_.token_to_piece(alt.token)] = alt.logprob;
      tops.push_back(top);
      offsets.push_back(text_offset);
      text_offset += t.text.size();
    }
    return {{"tokens", pieces}, {"token_logprobs", logprobs}, {"top_logprobs", tops}, {"text_offset", offsets}};
  }

 private:
  const Tokenizer& tokenizer_;
  bool chat_;
};

json choice_json(const ResponseContext& c, const std::string& text, const json& logprobs, const json& finish,
                 bool delta, bool first_delta) {
  json choice = {{"index", 0}};
  if (c.chat) {
    json message = {{"content", text}};
    if (!delta || first_delta) message["role"] = "assistant";
    choice[delta ? "delta" : "message"] = message;
  } else {
    choice["text"] = text;
  }
  choice["logprobs"] = logprobs;
  choice["finish_reason"] = finish;
  return choice;
}

json envelope(const ResponseContext& c, json choices, bool chunk) {
  return {{"id", c.id},
          {"object", c.chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion"},
          {"created", c.created},
          {"model", c.model},
          {"choices", std::move(choices)}};
}

ApiError summary_error(const GenerationSummary& s) {
  if (s.finish == FinishReason::kCancelled) return {503, "the server is shutting down", "server_error"};
  return {500, "generation failed: " + s.error, "server_error"};
}

}  // namespace

ApiServer::ApiServer(Scheduler& scheduler, const Tokenizer& tokenizer, const ChatFormatter& formatter,
                     int n_ctx_train, ApiSettings settings)
    : scheduler_(scheduler),
      tokenizer_(tokenizer),
      formatter_(formatter),
      n_ctx_train_(n_ctx_train),
      settings_(std::move(settings)),
      http_(std::make_unique<httplib::Server>()) {
  register_routes();
}

ApiServer::~ApiServer() = default;

Result<int> ApiServer::bind(const std::string& host, int port) {
  const int bound = port == 0 ? http_->bind_to_any_port(host) : (http_->bind_to_port(host, port) ? port : -1);
  if (bound < 0) return Status::error("cannot listen on " + host + ":" + std::to_string(port));
  raise_listen_backlog(bound, SOMAXCONN);  // the kernel caps it at net.core.somaxconn
  return bound;
}

bool ApiServer::listen() {
  {
    std::lock_guard lock(state_mutex_);
    if (stop_requested_) return true;
    listen_called_ = true;
  }
  const bool ok = http_->listen_after_bind();
  listen_returned_ = true;
  return ok;
}

void ApiServer::stop() {
  {
    std::lock_guard lock(state_mutex_);
    stop_requested_ = true;
    if (!listen_called_) return;  // listen() will return at once
  }
  // httplib's stop() does nothing until its listen loop runs: wait for it to start (or to have failed).
  while (!http_->is_running() && !listen_returned_) std::this_thread::sleep_for(1ms);
  http_->stop();
}

Result<std::vector<int32_t>> ApiServer::tokenize_prompt(const json& body, bool chat,
                                                       std::vector<std::string>& extra_stops) {
  std::lock_guard lock(text_mutex_);
  if (chat) {
    const json* messages = field(body, "messages");
    if (messages == nullptr || !messages->is_array() || messages->empty()) {
      bad_request("messages", "'messages' must be a non-empty array");
    }
    for (const json& m : *messages) {
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
        bad_request("messages", "each message must be an object with a string 'role'");
      }
      const json* content = field(m, "content");
      if (content != nullptr && !content->is_string() && !content->is_array()) {
        bad_request("messages", "a message's 'content' must be a string or an array of parts");
      }
    }
    const json* tools = field(body, "tools");
    auto text = formatter_.render(nlohmann::ordered_json::parse(messages->dump()), true,
                                  tools ? nlohmann::ordered_json::parse(tools->dump()) : nlohmann::ordered_json());
    if (!text.ok()) bad_request("messages", "the chat template failed: " + text.error());
    for (const std::string& s : formatter_.turn_end_strings()) extra_stops.push_back(s);
    return formatter_.tokenize(*text);
  }
  const json* prompt = field(body, "prompt");
  if (prompt != nullptr && prompt->is_array() && prompt->size() == 1 && (*prompt)[0].is_string()) {
    prompt = &(*prompt)[0];
  }
  if (prompt != nullptr && prompt->is_string()) {
    return tokenizer_.encode(prompt->get<std::string>(), tokenizer_.add_bos_default(), true);
  }
  if (prompt != nullptr && prompt->is_array() && !prompt->empty()) {
    std::vector<int32_t> tokens;
    for (const json& t : *prompt) {
      if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= tokenizer_.n_vocab()) {
        bad_request("prompt", "'prompt' must be a string, or an array of token ids in [0, n_vocab)");
      }
      tokens.push_back(static_cast<int32_t>(t.get<int64_t>()));
    }
    return tokens;
  }
  bad_request("prompt", "'prompt' must be a string (one prompt per request), or an array of token ids");
}

void ApiServer::register_routes() {
  httplib::Server& http = *http_;
  http.set_payload_max_length(settings_.max_body_bytes);
  http.set_keep_alive_timeout(2);  // an idle keep-alive connection holds an HTTP thread (and shutdown) this long
  const int threads = settings_.http_threads > 0
                          ? settings_.http_threads
                          : std::min(256, scheduler_.options().n_slots + scheduler_.options().max_queued + 8);
  http.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };

  // Handlers throw ApiError for what the client got wrong; anything else thrown becomes a 500, never a crash.
  auto guarded = [](auto handler) {
    return [handler](const httplib::Request& req, httplib::Response& res) {
      try {
        handler(req, res);
      } catch (const ApiError& e) {
        send_error(res, e);
      } catch (const std::exception& e) {
        send_error(res, {500, std::string("internal error: ") + e.what(), "server_error"});
      }
    };
  };
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
    send_error(res, {500, "internal error", "server_error"});
  });
  http.set_error_handler(httplib::Server::HandlerWithResponse(
      [](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;  // an error of our own
        if (res.status == 404) {
          send_error(res, {404, "no route " + req.method + " " + req.path, "not_found_error"});
        } else if (res.status == 413) {
          send_error(res, {413, "the request body is too large", "invalid_request_error"});
        } else {
          send_error(res, {res.status, "request failed (HTTP " + std::to_string(res.status) + ")",
                           res.status >= 500 ? "server_error" : "invalid_request_error"});
        }
        return httplib::Server::HandlerResponse::Handled;
      }));
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (settings_.api_key.empty() || req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
    if (constant_time_equal(req.get_header_value("Authorization"), "Bearer " + settings_.api_key)) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    send_error(res, {401, "invalid API key", "authentication_error", "", "invalid_api_key"});
    return httplib::Server::HandlerResponse::Handled;
  });

  auto parse_body = [](const httplib::Request& req) {
    if (nesting_depth_exceeds(req.body, kMaxJsonDepth)) {
      bad_request("", "the request body nests arrays/objects deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    }
    json body = json::parse(req.body, nullptr, false);
    if (body.is_discarded()) bad_request("", "the request body is not valid JSON");
    if (!body.is_object()) bad_request("", "the request body must be a JSON object");
    return body;
  };

  auto completion = [this, parse_body](bool chat) {
    return [this, parse_body, chat](const httplib::Request& req, httplib::Response& res) {
      const json body = parse_body(req);
      if (const json* model = field(body, "model")) {
        if (!model->is_string()) bad_request("model", "'model' must be a string");
        const std::string name = model->get<std::string>();
        if (std::find(settings_.model_names.begin(), settings_.model_names.end(), name) ==
            settings_.model_names.end()) {
          throw ApiError{404,
                         "the model '" + name + "' does not exist; this server serves '" + settings_.model_id + "'",
                         "invalid_request_error", "model", "model_not_found"};
        }
      }
      const int n_ctx = scheduler_.options().n_ctx;
      ParsedRequest parsed = parse_generation_fields(body, chat, n_ctx);
      auto prompt = tokenize_prompt(body, chat, parsed.generation.stop_strings);
      if (!prompt.ok()) bad_request("prompt", prompt.error());
      if (static_cast<int>(prompt->size()) >= n_ctx) {
        bad_request(chat ? "messages" : "prompt",
                    "the prompt has " + std::to_string(prompt->size()) + " tokens; the context size per slot is " +
                        std::to_string(n_ctx) + " (-c), which must also hold the answer",
                    "context_length_exceeded");
      }
      parsed.generation.prompt = std::move(*prompt);
      auto submitted = scheduler_.submit(std::move(parsed.generation));
      if (!submitted.ok()) {
        if (Scheduler::queue_full(submitted.status())) throw ApiError{503, submitted.error(), "server_error"};
        bad_request("", submitted.error());
      }
      std::shared_ptr<RequestStream> stream = *submitted;
      const int socket = connection_socket(req);
      ResponseContext context{chat, parsed.logprobs, random_id(chat ? "chatcmpl-" : "cmpl-"), settings_.model_id,
                              static_cast<int64_t>(std::time(nullptr))};
      LogprobWriter logprob_writer(tokenizer_, chat);

      if (!parsed.stream) {
        std::vector<GeneratedToken> tokens;
        while (!stream->wait(tokens, 50ms)) {
          if (peer_closed(socket)) {
            stream->cancel();  // the scheduler frees the slot at its next step; nobody reads the answer
            return;
          }
        }
        const GenerationSummary& summary = stream->summary();
        if (summary.finish == FinishReason::kCancelled || summary.finish == FinishReason::kError) {
          throw summary_error(summary);
        }
        std::string text;
        for (const GeneratedToken& t : tokens) text += t.text;
        text += summary.tail_text;
        const json logprobs = parsed.logprobs ? logprob_writer.format(tokens, 0) : json(nullptr);
        json response = envelope(context, json::array({choice_json(context, text, logprobs, finish_json(summary),
                                                                   false, false)}),
                                 false);
        response["usage"] = usage_json(summary);
        send_json(res, response);
        return;
      }

      // Server-sent events: a chunk per piece of text, the finish reason, the usage if asked, then [DONE].
      struct StreamState {
        bool sent_first = false;
        size_t text_offset = 0;
      };
      auto state = std::make_shared<StreamState>();
      const bool include_usage = parsed.include_usage;
      res.set_header("Cache-Control", "no-cache");
      res.set_chunked_content_provider(
          "text/event-stream",
          [stream, state, context, logprob_writer, include_usage, socket](size_t, httplib::DataSink& sink) {
            auto send = [&](const json& event) {
              const std::string line = "data: " + dump(event) + "\n\n";
              return sink.write(line.data(), line.size());
            };
            auto chunk = [&](const std::string& text, const json& logprobs, const json& finish) {
              json choice = choice_json(context, text, logprobs, finish, true, !state->sent_first);
              state->sent_first = true;
              return send(envelope(context, json::array({choice}), true));
            };
            if (!state->sent_first && context.chat && !chunk("", nullptr, nullptr)) return false;
            std::vector<GeneratedToken> tokens;
            const bool done = stream->wait(tokens, 50ms);
            for (const GeneratedToken& t : tokens) {
              if (t.text.empty() && !context.logprobs) continue;
              const json logprobs = context.logprobs ? logprob_writer.format({t}, state->text_offset) : json(nullptr);
              state->text_offset += t.text.size();
              if (!chunk(t.text, logprobs, nullptr)) return false;  // the client went away: the releaser cancels
            }
            if (!done) return !(tokens.empty() && peer_closed(socket));
            const GenerationSummary& summary = stream->summary();
            if (summary.finish == FinishReason::kCancelled || summary.finish == FinishReason::kError) {
              const ApiError e = summary_error(summary);
              send({{"error", {{"message", e.message}, {"type", e.type}, {"code", e.status}}}});
            } else {
              if (!summary.tail_text.empty() && !chunk(summary.tail_text, nullptr, nullptr)) return false;
              if (!chunk("", nullptr, finish_json(summary))) return false;
              if (include_usage) {
                json usage_chunk = envelope(context, json::array(), true);
                usage_chunk["usage"] = usage_json(summary);
                if (!send(usage_chunk)) return false;
              }
            }
            const std::string end = "data: [DONE]\n\n";
            if (!sink.write(end.data(), end.size())) return false;
            sink.done();
            return true;
          },
          [stream](bool success) {
            if (!success) stream->cancel();
          });
    };
  };
  http.Post("/v1/chat/completions", guarded(completion(true)));
  http.Post("/chat/completions", guarded(completion(true)));
  http.Post("/v1/completions", guarded(completion(false)));
  http.Post("/completions", guarded(completion(false)));

  auto models = [this](const httplib::Request&, httplib::Response& res) {
    json model = {{"id", settings_.model_id},
                  {"object", "model"},
                  {"created", static_cast<int64_t>(std::time(nullptr))},
                  {"owned_by", "kvtier"},
                  {"meta", {{"n_ctx_train", n_ctx_train_}, {"n_ctx_slot", scheduler_.options().n_ctx},
                            {"n_vocab", tokenizer_.n_vocab()}}}};
    send_json(res, {{"object", "list"}, {"data", json::array({model})}});
  };
  http.Get("/v1/models", guarded(models));
  http.Get("/models", guarded(models));
  http.Get("/health", guarded([](const httplib::Request&, httplib::Response& res) {
             send_json(res, {{"status", "ok"}});
           }));

  http.Get("/metrics", guarded([this](const httplib::Request&, httplib::Response& res) {
             const SchedulerMetrics m = scheduler_.metrics();
             std::string out;
             using Samples = std::vector<std::pair<std::string, double>>;  // {label set, value}
             // One family: its HELP and TYPE lines, then a line per sample (counts and bytes exactly, rates to 6
             // digits).
             auto family = [&out](const char* name, const char* type, const char* help, const Samples& samples) {
               out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
               for (const auto& [labels, value] : samples) {
                 char line[64];
                 const bool whole = value == std::floor(value) && std::fabs(value) < 9.0e15;
                 std::snprintf(line, sizeof line, whole ? "%.0f" : "%.6g", value);
                 out += std::string(name) + labels + " " + line + "\n";
               }
             };
             auto metric = [&family](const char* name, const char* type, const char* help, double value) {
               family(name, type, help, {{"", value}});
             };
             auto count = [](uint64_t n) { return static_cast<double>(n); };
             family("kvtier_requests_total", "counter", "Requests answered, by outcome.",
                    {{"{outcome=\"finished\"}", count(m.requests_finished)},
                     {"{outcome=\"cancelled\"}", count(m.requests_cancelled)},
                     {"{outcome=\"failed\"}", count(m.requests_failed)},
                     {"{outcome=\"refused\"}", count(m.requests_refused)}});
             metric("kvtier_prompt_tokens_total", "counter", "Prompt tokens of admitted requests.",
                    static_cast<double>(m.prompt_tokens));
             metric("kvtier_prompt_tokens_evaluated_total", "counter", "Prompt tokens evaluated (not cached).",
                    static_cast<double>(m.prompt_tokens_evaluated));
             metric("kvtier_cached_tokens_total", "counter", "Prompt tokens not evaluated: held by the slot or copied by the prefix cache.",
                    static_cast<double>(m.cached_tokens));
             metric("kvtier_generated_tokens_total", "counter", "Tokens generated.",
                    static_cast<double>(m.generated_tokens));
             metric("kvtier_prompt_tokens_per_second", "gauge", "Prompt tokens evaluated per second of prefill work.",
                    m.prompt_seconds > 0 ? m.prompt_tokens_evaluated / m.prompt_seconds : 0.0);
             metric("kvtier_decode_tokens_per_second", "gauge", "Tokens generated per second of decode work.",
                    m.decode_seconds > 0 ? m.generated_tokens / m.decode_seconds : 0.0);
             family("kvtier_kv_bytes", "gauge",
                    "Bytes the slots' KV caches hold, by tier (RAM: free page-pool slots included; cold: the page "
                    "files).",
                    {{"{tier=\"ram\"}", count(m.kv_resident_bytes)}, {"{tier=\"cold\"}", count(m.kv_cold_bytes)}});
             Samples pages;
             for (const KvUsage::Pages& p : m.kv_ram_pages) {
               pages.emplace_back(std::string("{tier=\"ram\",precision=\"") + p.precision + "\"}", count(p.pages));
             }
             pages.emplace_back("{tier=\"cold\"}", count(m.kv_cold_pages));
             family("kvtier_kv_pages", "gauge",
                    "Pages of the slots' KV caches: in RAM by precision (the hot rings aside), and on disk.", pages);
             metric("kvtier_kv_budget_bytes", "gauge", "The --kv-budget shared by all slots (0: none).",
                    static_cast<double>(m.kv_budget_bytes));
             metric("kvtier_kv_budgeted_bytes", "gauge",
                    "Bytes counted against the budget (live pages, hot rings, sinks, cold-tier index and buffers).",
                    static_cast<double>(m.kv_budgeted_bytes));
             metric("kvtier_kv_budgeted_peak_bytes", "gauge", "The most bytes counted against the budget after any turn.",
                    static_cast<double>(m.kv_budgeted_peak_bytes));
             metric("kvtier_kv_spilled_pages_total", "counter", "Pages written to the cold tier.",
                    static_cast<double>(m.kv_spilled_pages));
             metric("kvtier_kv_dropped_conversations_total", "counter",
                    "Idle conversations emptied to make room in the budget.",
                    static_cast<double>(m.kv_dropped_conversations));
             metric("kvtier_kv_budget_waits_total", "counter", "Times a request waited a turn for room in the budget.",
                    static_cast<double>(m.kv_budget_waits));
             family("kvtier_prefix_cache_hits_total", "counter",
                    "Requests whose prompt's full prefix pages were copied from another slot or loaded from "
                    "--cache-dir.",
                    {{"{source=\"slot\"}", count(m.prefix_hits_slot)}, {"{source=\"disk\"}", count(m.prefix_hits_disk)}});
             family("kvtier_prefix_cache_tokens_total", "counter", "Prompt tokens those hits reused (not evaluated).",
                    {{"{source=\"slot\"}", count(m.prefix_tokens_slot)},
                     {"{source=\"disk\"}", count(m.prefix_tokens_disk)}});
             metric("kvtier_prefix_cache_failures_total", "counter",
                    "Prefix copies or loads that failed (the prompt was evaluated instead).",
                    static_cast<double>(m.prefix_failures));
             if (m.prefix_disk) {
               metric("kvtier_prefix_cache_disk_entries", "gauge", "Entries in --cache-dir (this model and policy).",
                      static_cast<double>(m.prefix_disk_entries));
               metric("kvtier_prefix_cache_disk_bytes", "gauge", "Bytes of those entries.",
                      static_cast<double>(m.prefix_disk_bytes));
               metric("kvtier_prefix_cache_disk_stored_total", "counter", "Entries written to --cache-dir.",
                      static_cast<double>(m.prefix_disk_stored));
               metric("kvtier_prefix_cache_disk_evicted_total", "counter",
                      "Entries removed to stay within --cache-size, least recently used first.",
                      static_cast<double>(m.prefix_disk_evicted));
               metric("kvtier_prefix_cache_disk_dropped_total", "counter",
                      "Entries removed as damaged or mismatched (never used).",
                      static_cast<double>(m.prefix_disk_dropped));
             }
             metric("kvtier_queue_depth", "gauge", "Requests waiting for a slot.", m.queue_depth);
             metric("kvtier_slots_busy", "gauge", "Slots serving a request.", m.active_slots);
             metric("kvtier_slots", "gauge", "Slots (-np).", m.n_slots);
             res.set_content(out, "text/plain; version=0.0.4");
           }));

  http.Post("/tokenize", guarded([this, parse_body](const httplib::Request& req, httplib::Response& res) {
              const json body = parse_body(req);
              const json* content = field(body, "content");
              if (content == nullptr || !content->is_string()) bad_request("content", "'content' must be a string");
              const bool add_special = bool_field(body, "add_special").value_or(false);
              const bool with_pieces = bool_field(body, "with_pieces").value_or(false);
              std::vector<int32_t> tokens;
              {
                std::lock_guard lock(text_mutex_);
                const bool bos = add_special && tokenizer_.add_bos_default();
                tokens = tokenizer_.encode(content->get<std::string>(), bos, true);
              }
              json out = json::array();
              for (int32_t t : tokens) {
                if (with_pieces) {
                  out.push_back({{"id", t}, {"piece", tokenizer_.token_to_piece(t)}});
                } else {
                  out.push_back(t);
                }
              }
              send_json(res, {{"tokens", out}});
            }));
  http.Post("/detokenize", guarded([this, parse_body](const httplib::Request& req, httplib::Response& res) {
              const json body = parse_body(req);
              const json* tokens = field(body, "tokens");
              if (tokens == nullptr || !tokens->is_array()) bad_request("tokens", "'tokens' must be an array");
              std::vector<int32_t> ids;
              for (const json& t : *tokens) {
                if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= tokenizer_.n_vocab()) {
                  bad_request("tokens", "'tokens' must hold token ids in [0, n_vocab)");
                }
                ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
              }
              send_json(res, {{"content", tokenizer_.decode(ids)}});
            }));
}

}  // namespace kvtier::app
