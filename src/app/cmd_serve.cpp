// kvtier serve: an OpenAI-compatible HTTP server (docs/server.md). Flags follow llama-server where they mean the
// same; the KV options are `kvtier run`'s.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <thread>

#include "app/commands.h"
#include "app/http_api.h"
#include "app/loading.h"
#include "app/options.h"
#include "kvtier/server_scheduler.h"

namespace kvtier::app {

namespace {

struct ServeOptions {
  std::string model_path;
  ModelLoadOptions load;  // --mlock, --no-mmap
  std::string host = "127.0.0.1";
  int port = 8080;
  int n_ctx = 0;        // per slot
  int n_slots = 1;
  int threads = 0;
  int max_queue = 16;
  size_t max_body = 8u << 20;
  std::string api_key;
  std::string chat_template;
  std::string alias;
  KvCacheOptions kv;
  std::string cache_dir;
  uint64_t cache_size = 4ull << 30;
};

int run(const ServeOptions& o) {
  // SIGINT/SIGTERM are taken by one thread with sigwait (blocked everywhere else, the worker and HTTP threads
  // included, which inherit the mask), so shutting down is ordinary code, not a signal handler.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  auto loaded = load_model_and_tokenizer(o.model_path, o.load);
  if (!loaded.ok()) return fail(loaded.error());
  Model& model = *loaded->model;
  const ModelConfig& c = model.config();
  auto formatter = load_chat_formatter(&model.file(), loaded->tokenizer.get(), o.chat_template);
  if (!formatter.ok()) return fail(formatter.error());

  SchedulerOptions so;
  so.n_slots = o.n_slots;
  so.n_ctx = o.n_ctx > 0 ? o.n_ctx : std::min(c.n_ctx_train, 4096);
  so.threads = o.threads;
  so.max_queued = o.max_queue;
  so.kv = o.kv;
  so.cache_dir = o.cache_dir;
  so.cache_dir_max_bytes = o.cache_size;
  so.warn = [](const std::string& message) {
    std::fprintf(stderr, "kvtier serve: warning: %s\n", message.c_str());
    std::fflush(stderr);
  };
  // The slots' caches together, as one cache of n_slots * n_ctx positions would need.
  if (Status s = check_run_memory(c, o.kv, RunMemoryRequest{.n_ctx = so.n_ctx * o.n_slots}); !s.ok()) {
    return fail(s.message() + " (-c is per slot: -np " + std::to_string(o.n_slots) + " slots of " +
                std::to_string(so.n_ctx) + " positions)");
  }
  auto scheduler = Scheduler::create(model, *loaded->tokenizer, so);
  if (!scheduler.ok()) return fail(scheduler.error());

  ApiSettings settings;
  const std::string file_name = std::filesystem::path(o.model_path).filename().string();
  settings.model_id = o.alias.empty() ? file_name : o.alias;
  settings.model_names = {settings.model_id, file_name, std::filesystem::path(o.model_path).stem().string()};
  settings.api_key = o.api_key;
  settings.max_body_bytes = o.max_body;
  ApiServer server(**scheduler, *loaded->tokenizer, *formatter, c.n_ctx_train, settings);
  auto port = server.bind(o.host, o.port);
  if (!port.ok()) return fail(port.error());
  std::fprintf(stderr,
               "kvtier serve: %s on http://%s:%d (%d slots of %d positions, template %s); Ctrl-C stops\n",
               settings.model_id.c_str(), o.host.c_str(), *port, so.n_slots, so.n_ctx,
               formatter->origin().c_str());
  std::fflush(stderr);

  Scheduler& scheduler_ref = **scheduler;
  std::thread signal_waiter([&server, &scheduler_ref, stop_signals] {
    int signal = 0;
    sigwait(&stop_signals, &signal);
    scheduler_ref.shutdown();  // running requests end now (streams get an error event), so their threads finish
    server.stop();
  });
  const bool listened = server.listen();
  // listen() returned: by a signal (the waiter is done), or by a failure (wake the waiter with a signal of our own).
  ::kill(::getpid(), SIGTERM);
  signal_waiter.join();
  if (!listened) return fail("the HTTP server stopped with an error");
  std::fprintf(stderr, "kvtier serve: stopped\n");
  return 0;
}

}  // namespace

Command add_serve_command(CLI::App& app) {
  auto o = std::make_shared<ServeOptions>();
  app.add_option("-m,--model", o->model_path, "GGUF model file")->required()->check(CLI::ExistingFile);
  app.add_option("--host", o->host, "address to listen on (default 127.0.0.1)");
  app.add_option("--port", o->port, "port to listen on (default 8080; 0 = any free port, printed at start)")
      ->check(CLI::Range(0, 65535));
  app.add_option("-c,--ctx-size", o->n_ctx, "context size of each slot in tokens (default: min(trained, 4096))")
      ->check(CLI::Range(0, 1 << 24));
  app.add_option("--parallel", o->n_slots,
                 "(also -np) slots: requests served at once, each with its own KV cache (default 1)")
      ->check(CLI::Range(1, 256));
  app.add_option("--max-queue", o->max_queue, "requests waiting for a slot before 503 (default 16)")
      ->check(CLI::Range(0, 4096));
  add_byte_size_option(app, "--max-body", o->max_body, "largest request body (default 8M); larger ones get 413");
  app.add_option("--cache-dir", o->cache_dir,
                 "keep prompts' full KV prefix pages in DIR across restarts (created if missing)")
      ->type_name("DIR");
  add_byte_size_option(app, "--cache-size", o->cache_size,
                       "most that --cache-dir's entries of this model and --kv* may take (default 4G; least recently used go first)");
  app.add_option("--api-key", o->api_key, "require 'Authorization: Bearer KEY' (all routes but /health)");
  app.add_option("--chat-template", o->chat_template,
                 "template: a built-in name (chatml, llama3, llama2, gemma, phi3) or a Jinja file "
                 "(default: the model's tokenizer.chat_template, else chatml)");
  app.add_option("-a,--alias", o->alias, "model name reported by /v1/models and in responses (default: the file name)");
  add_threads_option(app, o->threads);
  add_weight_options(app, o->load);
  // Exact cold reads by default: a conversation whose pages the shared budget spilled answers exactly as it
  // would have in RAM (docs/server.md).
  o->kv.cold_mode = "exact";
  add_kv_options(app, o->kv);
  app.get_option("--kv-cold")
      ->description("cold pages: exact (serve's default; all, every step: output as if in RAM) or sparse (the "
                    "best pages within --kv-cold-read per step)");
  app.get_option("--kv-budget")
      ->description("RAM for the KV caches of all slots together (e.g. 512M, 2G); idle conversations' pages spill "
                    "to --kv-spill, least recently used first");
  return [o] { return run(*o); };
}

}  // namespace kvtier::app
