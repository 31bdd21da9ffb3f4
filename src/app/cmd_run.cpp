// kvtier run: stream a continuation of a prompt to stdout (logs go to stderr).
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "app/commands.h"
#include "app/loading.h"
#include "app/options.h"
#include "app/progress.h"
#include "kvtier/file_io.h"
#include "kvtier/sampling.h"
#include "kvtier/session_file.h"
#include "kvtier/stop_strings.h"
#include "kvtier/session.h"

namespace kvtier::app {

namespace {
struct RunOptions {
  std::string model_path;
  ModelLoadOptions load;  // --mlock, --no-mmap
  std::string prompt;
  std::string prompt_file;  // -f: the prompt from a file, or "-" for standard input
  int n_predict = 128;
  int n_ctx = 0;
  int threads = 0;
  bool ignore_eos = false;
  bool context_shift = false;  // at -c: drop the oldest half (after --keep) and go on
  int keep = 0;                // prompt tokens (after BOS) a context shift keeps
  std::vector<std::string> stop_strings;
  bool verbose = false;
  std::string session_path;  // --session: restore at start, save at exit and on Ctrl-C
  bool session_overwrite = false;
  SamplingParams sampling;
  KvCacheOptions kv;
  DeviceOptions device;  // --device
};

// The L2 cache size the OS reports (the hot ring should fit in it), or 0.
long l2_cache_bytes() {
  const long bytes = sysconf(_SC_LEVEL2_CACHE_SIZE);
  return bytes > 0 ? bytes : 0;
}

// Ctrl-C (and SIGTERM, SIGHUP) with --session: the first stops generation at the next token (the session is
// saved, exit 130); a second exits at once, leaving the session file as it was (a half-written temp file is
// removed by the next save). Without --session they keep their default action.
volatile sig_atomic_t g_interrupted = 0;
constexpr int kInterruptedExitCode = 130;
constexpr int kStdoutClosedExitCode = 141;  // 128 + SIGPIPE, what a shell reports for a killed writer

extern "C" void on_stop_signal(int) {
  if (g_interrupted) _exit(kInterruptedExitCode);
  g_interrupted = 1;
}

void install_stop_handlers() {
  struct sigaction sa = {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int signal : {SIGINT, SIGTERM, SIGHUP}) sigaction(signal, &sa, nullptr);
}

// Writes generated text; false once stdout is gone (a closed pipe: SIGPIPE is ignored, so the write fails
// with EPIPE and the run stops, saving its session, instead of dying mid-save).
bool write_stdout(const std::string& text) {
  if (text.empty()) return true;
  if (std::fwrite(text.data(), 1, text.size(), stdout) != text.size()) return false;
  return std::fflush(stdout) == 0;
}

bool path_exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

int run(const RunOptions& o) {
  if (Status s = validate_sampling_params(o.sampling); !s.ok()) return fail(s.message());
  const bool use_session = !o.session_path.empty();
  // A session that cannot be saved is found now, not after the whole prompt and generation ran.
  if (use_session) {
    if (Status s = check_session_path(o.session_path); !s.ok()) return fail(s.message());
  }
  std::string prompt_text = o.prompt;
  if (!o.prompt_file.empty()) {
    auto text = read_bounded_file(o.prompt_file, kMaxTextFileBytes, "prompt file");
    if (!text.ok()) return fail(text.error());
    prompt_text = std::move(*text);
  }
  if (use_session && o.device.kind != DeviceKind::kCpu) {
    return fail("--session does not work with --device " + device_name(o.device) + " yet");
  }
  ::signal(SIGPIPE, SIG_IGN);
  auto loaded = load_model_and_tokenizer(o.model_path, o.load);
  if (!loaded.ok()) return fail(loaded.error());
  Model& model = *loaded->model;
  const Tokenizer& tokenizer = *loaded->tokenizer;
  const ModelConfig& c = model.config();

  std::vector<int32_t> prompt = tokenizer.encode(prompt_text, tokenizer.add_bos_default(), true);
  if (prompt.empty()) return fail("the prompt is empty (and the model adds no BOS token)");
  const int n_ctx = o.n_ctx > 0 ? o.n_ctx : std::min(c.n_ctx_train, 4096);
  if (o.context_shift && static_cast<int>(prompt.size()) >= n_ctx) {
    return fail("prompt (" + std::to_string(prompt.size()) + " tokens) does not fit the context size " +
                std::to_string(n_ctx) + " (raise -c)");
  }
  if (!o.context_shift && static_cast<int>(prompt.size()) + o.n_predict > n_ctx) {
    return fail("prompt (" + std::to_string(prompt.size()) + " tokens) + -n " + std::to_string(o.n_predict) +
                " exceeds the context size " + std::to_string(n_ctx) + " (raise -c, or --context-shift)");
  }
  if (Status s = check_run_memory(c, o.kv, RunMemoryRequest{.n_ctx = n_ctx}); !s.ok()) return fail(s.message());
  if (use_session) install_stop_handlers();
  ThreadPool pool(o.threads);
  auto device_model = open_device(model, o.device, o.kv);  // null on the CPU; outlives the session's cache
  if (!device_model.ok()) return fail(device_model.error());
  auto cache = make_run_cache(device_model->get(), c, n_ctx, o.kv, &pool);
  if (!cache.ok()) return fail(cache.error());
  Session session(model, std::move(*cache), pool);
  session.set_warning_handler([](const std::string& w) { std::fprintf(stderr, "warning: %s\n", w.c_str()); });
  if (o.verbose) {
    std::fprintf(stderr, "model: %s, %s, %d layers, %d/%d heads, weights %.1f MiB; %d threads\n",
                 c.name.c_str(), c.architecture.c_str(), c.n_layers, c.n_heads, c.n_kv_heads,
                 model.weight_bytes() / 1048576.0, pool.size());
    std::fprintf(stderr, "%s\nL2 cache (per core, from the OS): %ld KiB\n", session.cache().describe().c_str(),
                 l2_cache_bytes() / 1024);
  }

  std::vector<int32_t> to_evaluate = prompt;  // the prompt tokens a restored session does not hold
  if (use_session && path_exists(o.session_path)) {
    SessionIoStats io;
    if (Status s = session.restore(o.session_path, &io); !s.ok()) {
      if (!o.session_overwrite) return fail(s.message() + " (left untouched; --session-overwrite replaces it)");
      std::fprintf(stderr, "warning: %s; it will be replaced\n", s.message().c_str());
    } else {
      const int saved = session.n_past();
      to_evaluate = session.reuse_prefix(prompt);
      std::fprintf(stderr, "session: reused %zu of %zu prompt tokens from %s\n", prompt.size() - to_evaluate.size(),
                   prompt.size(), o.session_path.c_str());
      if (o.verbose) {
        std::fprintf(stderr, "session: restored %d tokens, %.2f MiB in %.3f s\n", saved, io.bytes / 1048576.0,
                     io.seconds);
      }
    }
  }

  Sampler sampler(o.sampling);
  for (int32_t t : prompt) sampler.accept(t);
  const auto prefill_start = std::chrono::steady_clock::now();
  const int n_past_before_prompt = session.n_past();
  {
    ProgressBar bar("prompt");
    auto progress = [&](uint64_t done, uint64_t total) { bar.update(done, total); };
    if (use_session) session.set_stop_check([] { return g_interrupted != 0; });
    if (Status s = session.append(to_evaluate, to_evaluate.size() > 256 ? ProgressFn(progress) : ProgressFn());
        !s.ok()) {
      return fail(s.message());
    }
  }
  std::string warned;  // the cache's warning, printed once when it appears or changes
  auto report_cache_warning = [&] {
    const std::string w = session.cache().warning();
    if (!w.empty() && w != warned) std::fprintf(stderr, "\nwarning: %s\n", w.c_str());
    warned = w;
  };
  report_cache_warning();
  if (session.stopped()) {
    std::fprintf(stderr, "interrupted during the prompt after %d tokens\n", session.n_past());
  }
  const double prefill_seconds = seconds_since(prefill_start);
  const int prompt_evaluated = session.n_past() - n_past_before_prompt;  // fewer than asked when interrupted

  StreamingDetokenizer detok(tokenizer);
  StopStringFilter stops(o.stop_strings);
  // --context-shift keeps BOS and the first --keep tokens of the prompt, and drops half of the rest.
  const int n_keep = std::min<int>(static_cast<int>(prompt.size()), o.keep + (tokenizer.add_bos_default() ? 1 : 0));
  const auto decode_start = std::chrono::steady_clock::now();
  int generated = 0, shifts = 0;
  double shift_seconds = 0;
  bool stdout_closed = false;
  for (; generated < o.n_predict && !g_interrupted && !session.stopped() && !stops.stopped(); ++generated) {
    const int32_t next = sampler.sample(session.last_logits().data(), c.n_vocab);
    if (!o.ignore_eos && tokenizer.is_end_of_generation(next)) break;
    if (!write_stdout(stops.push(detok.push(next)))) {
      stdout_closed = true;
      break;
    }
    if (generated + 1 == o.n_predict || stops.stopped()) {
      ++generated;
      break;  // the last token needs no forward pass
    }
    if (session.n_past() >= n_ctx) {
      const auto shift_start = std::chrono::steady_clock::now();
      const int discard = (session.n_past() - n_keep) / 2;
      auto redone = session.shift_context(n_keep, discard);
      if (!redone.ok()) return fail(redone.error());
      shift_seconds += seconds_since(shift_start);
      ++shifts;
      if (o.verbose) {
        std::fprintf(stderr, "\ncontext shift: dropped %d tokens, evaluated %d again\n", discard, *redone);
      }
    }
    if (Status s = session.append({next}); !s.ok()) return fail(s.message());
    report_cache_warning();
  }
  if (!stdout_closed) stdout_closed = !write_stdout(stops.push(detok.flush()) + stops.flush() + "\n");
  const double decode_seconds = seconds_since(decode_start);
  if (stdout_closed) std::fprintf(stderr, "stdout was closed: generation stopped\n");
  std::fprintf(stderr, "prompt: %d tokens in %.3f s (%.1f tok/s); generated: %d tokens in %.3f s (%.1f tok/s)\n",
               prompt_evaluated, prefill_seconds, prompt_evaluated / prefill_seconds, generated, decode_seconds,
               generated > 0 ? generated / decode_seconds : 0.0);
  if (shifts > 0) std::fprintf(stderr, "context shifts: %d in %.3f s\n", shifts, shift_seconds);
  if (o.verbose) std::fprintf(stderr, "%s\n", session.cache().describe().c_str());
  if (use_session) {
    if (o.verbose) std::fprintf(stderr, "session: saving %d tokens to %s\n", session.n_past(), o.session_path.c_str());
    SessionIoStats io;
    if (Status s = session.save(o.session_path, &io); !s.ok()) return fail(s.message());
    if (o.verbose) {
      std::fprintf(stderr, "session: saved %d tokens, %.2f MiB in %.3f s\n", session.n_past(), io.bytes / 1048576.0,
                   io.seconds);
    } else {
      std::fprintf(stderr, "session: %d tokens saved to %s\n", session.n_past(), o.session_path.c_str());
    }
  }
  if (g_interrupted) return kInterruptedExitCode;
  return stdout_closed ? kStdoutClosedExitCode : 0;
}
}  // namespace

Command add_run_command(CLI::App& app) {
  auto o = std::make_shared<RunOptions>();
  app.add_option("-m,--model", o->model_path, "GGUF model file")->required()->check(CLI::ExistingFile);
  auto* prompt = app.add_option("-p,--prompt", o->prompt, "prompt text");
  auto* prompt_file = app.add_option("-f,--file", o->prompt_file, "read the prompt from a file ('-': standard input)");
  prompt->excludes(prompt_file);
  app.callback([prompt, prompt_file] {
    if (prompt->count() == 0 && prompt_file->count() == 0) throw CLI::RequiredError("-p or -f");
  });
  app.add_option("-n,--n-predict", o->n_predict, "tokens to generate (default 128)")->check(CLI::Range(1, 1 << 24));
  app.add_option("-c,--ctx-size", o->n_ctx, "context size in tokens (default: min(trained, 4096))")
      ->check(CLI::Range(0, 1 << 24));
  add_threads_option(app, o->threads);
  add_weight_options(app, o->load);
  add_kv_options(app, o->kv);
  add_device_option(app, o->device);
  add_sampling_options(app, o->sampling);
  app.add_flag("--ignore-eos", o->ignore_eos, "keep generating after an end-of-generation token");
  app.add_option("--stop", o->stop_strings, "stop when the output would contain STR (repeatable; never printed)")
      ->allow_extra_args(false);
  app.add_flag("--context-shift", o->context_shift,
               "when the context is full, drop the oldest half (after BOS and --keep) and go on");
  app.add_option("--keep", o->keep, "with --context-shift: prompt tokens after BOS that are never dropped (default 0)")
      ->check(CLI::Range(0, 1 << 24));
  app.add_option("--session", o->session_path,
                 "session file: reuse its cached prompt prefix at start, save the sequence at exit and on Ctrl-C");
  app.add_flag("--session-overwrite", o->session_overwrite,
               "replace a --session file that cannot be restored (another model or cache policy, damaged)");
  app.add_flag("-v,--verbose", o->verbose, "print model and cache details to stderr");
  return [o] { return run(*o); };
}

}  // namespace kvtier::app
