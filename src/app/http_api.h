// The HTTP face of `kvtier serve` (docs/server.md): OpenAI-style routes over cpp-httplib, turning JSON requests
// into scheduler requests (kvtier/server_scheduler.h) and its tokens back into JSON or server-sent events. Thin on
// purpose: what generates, and in which order, is the scheduler's business.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>

#include "kvtier/chat.h"
#include "kvtier/server_scheduler.h"
#include "kvtier/tokenizer.h"

namespace httplib {
class Server;
}

namespace kvtier::app {

struct ApiSettings {
  std::string model_id;                  // what /v1/models lists and responses name (--alias, else the file name)
  std::vector<std::string> model_names;  // names a request's "model" may use (model_id, the file name …)
  std::string api_key;                   // empty: no authentication
  size_t max_body_bytes = 8u << 20;      // larger request bodies get 413
  int http_threads = 0;                  // 0: enough for every slot and queued request, plus a few
};

class ApiServer {
 public:
  ApiServer(Scheduler& scheduler, const Tokenizer& tokenizer, const ChatFormatter& formatter, int n_ctx_train,
            ApiSettings settings);
  ~ApiServer();
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  // Binds host:port (port 0: any free port); returns the port.
  Result<int> bind(const std::string& host, int port);
  // Serves until stop() (from any thread, before or during listen()); false when listening failed.
  bool listen();
  void stop();

 private:
  struct Route;
  void register_routes();
  Result<std::vector<int32_t>> tokenize_prompt(const nlohmann::json& body, bool chat,
                                              std::vector<std::string>& extra_stops);

  Scheduler& scheduler_;
  const Tokenizer& tokenizer_;
  const ChatFormatter& formatter_;
  int n_ctx_train_;
  ApiSettings settings_;
  std::mutex state_mutex_;  // the three flags below
  bool stop_requested_ = false, listen_called_ = false;
  std::atomic<bool> listen_returned_{false};
  std::mutex text_mutex_;  // tokenizer and template calls from the HTTP threads, one at a time
  std::unique_ptr<httplib::Server> http_;
};

}  // namespace kvtier::app
