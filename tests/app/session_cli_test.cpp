// kvtier run --session end to end: prompt reuse gives the clean run's output, an invalid file is refused
// and left alone, Ctrl-C saves and exits 130, kill -9 at random moments of a save never leaves a file
// that loads wrong, and a full disk is a clear error that keeps the old file.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/shared_data.h"
#include "common/test_util.h"
#include "kvtier/kv_options.h"
#include "kvtier/model.h"
#include "kvtier/session_file.h"

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

const std::string kBinary = std::string(KVTIER_BINARY_DIR) + "/kvtier";
std::string demo_model() { return std::string(KVTIER_SOURCE_DIR) + "/models/tiny-llama-6m.Q4_0.gguf"; }

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A fresh directory per test, removed after it.
fs::path test_dir() { return kvtier::testing::fresh_test_dir("kvtier_session_cli_"); }

// A prompt of a few hundred tokens (a larger session file, so that a save takes a while).
std::string long_prompt_text() {
  std::string text;
  for (int i = 0; i < 30; ++i) text += "The kernel schedules tasks on every CPU, and the page cache keeps file data. ";
  return text;
}

// build/kvtier as a child: stdout to a file, stderr to a pipe the test reads.
struct Child {
  pid_t pid = -1;
  int err_fd = -1;
  std::string err;  // read so far

  // Reads stderr until `marker` appears (true) or the child closes it (false).
  bool read_until(const std::string& marker) {
    char buf[4096];
    while (err.find(marker) == std::string::npos) {
      const ssize_t n = ::read(err_fd, buf, sizeof buf);
      if (n <= 0) return false;
      err.append(buf, static_cast<size_t>(n));
    }
    return true;
  }
  // Reads the rest of stderr, reaps the child; returns the exit code, or 1000 + the signal that ended it.
  int finish() {
    read_until(std::string(1, '\0'));
    ::close(err_fd);
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1000 + WTERMSIG(status);
  }
};

Child spawn(const std::vector<std::string>& args, const fs::path& out) {
  int fds[2];
  EXPECT_EQ(::pipe(fds), 0);
  Child c;
  c.pid = ::fork();
  if (c.pid == 0) {
    ::dup2(fds[1], STDERR_FILENO);
    FILE* f = std::fopen(out.c_str(), "wb");
    if (f == nullptr) _exit(127);
    ::dup2(fileno(f), STDOUT_FILENO);
    ::close(fds[0]);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(kBinary.c_str()));
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(kBinary.c_str(), argv.data());
    _exit(127);
  }
  ::close(fds[1]);
  c.err_fd = fds[0];
  return c;
}

struct Outcome {
  int code = -1;
  std::string out, err;
};

Outcome run(const std::vector<std::string>& args, const fs::path& dir) {
  const fs::path out = dir / "stdout.txt";
  Child c = spawn(args, out);
  Outcome o;
  o.code = c.finish();
  o.err = c.err;
  o.out = slurp(out);
  return o;
}

std::vector<std::string> run_args(const std::string& model, const std::string& prompt, int n,
                                  const std::vector<std::string>& extra) {
  std::vector<std::string> a = {"run", "-m", model, "-p", prompt, "-n", std::to_string(n), "--temp", "0", "-t", "1"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

std::vector<std::string> temp_files(const fs::path& dir) {
  std::vector<std::string> found;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().filename().string().find(".tmp.") != std::string::npos) found.push_back(e.path().filename());
  }
  return found;
}

// Loads a session file with the library; the tokens, or an error.
struct Loader {
  std::unique_ptr<kvtier::Model> model;
  explicit Loader(const std::string& path) {
    auto m = kvtier::Model::load(path);
    EXPECT_TRUE(m.ok()) << m.error();
    if (m.ok()) model = std::move(*m);
  }
  kvtier::Result<std::vector<int32_t>> tokens(const fs::path& file, const std::string& ladder = "f16",
                                               int n_ctx = 1024) {
    kvtier::KvCacheOptions o;
    o.ladder = ladder;
    auto cache = kvtier::make_kv_cache(model->config(), n_ctx, o);
    if (!cache.ok()) return cache.status();
    auto header = kvtier::read_session_file(file.string(), *model, **cache);
    if (!header.ok()) return header.status();
    return header->tokens;
  }
};

TEST(SessionCli, ReusedPromptGivesTheCleanRunsOutput) {
  const fs::path dir = test_dir();
  const std::string session = (dir / "s.kvs").string();
  const std::string prompt = long_prompt_text();
  for (const char* kv : {"f16", "contiguous"}) {
    fs::remove(session);
    const Outcome clean = run(run_args(demo_model(), prompt, 24, {"--kv", kv}), dir);
    ASSERT_EQ(clean.code, 0) << clean.err;
    const Outcome first = run(run_args(demo_model(), prompt, 24, {"--kv", kv, "--session", session}), dir);
    ASSERT_EQ(first.code, 0) << first.err;
    EXPECT_EQ(first.out, clean.out) << kv;
    EXPECT_EQ(first.err.find("reused"), std::string::npos) << "nothing to reuse the first time";
    const Outcome second = run(run_args(demo_model(), prompt, 24, {"--kv", kv, "--session", session, "-v"}), dir);
    ASSERT_EQ(second.code, 0) << second.err;
    EXPECT_EQ(second.out, clean.out) << kv;
    EXPECT_NE(second.err.find("session: reused "), std::string::npos) << second.err;
    EXPECT_EQ(second.err.find("reused 0 "), std::string::npos) << second.err;
    EXPECT_NE(second.err.find("session: restored "), std::string::npos) << "-v: time and bytes";
    EXPECT_NE(second.err.find("MiB in "), std::string::npos) << second.err;
    EXPECT_TRUE(temp_files(dir).empty());
    // A longer prompt reuses the saved one and matches its own clean run.
    const Outcome longer_clean = run(run_args(demo_model(), prompt + "Then", 16, {"--kv", kv}), dir);
    const Outcome longer = run(run_args(demo_model(), prompt + "Then", 16, {"--kv", kv, "--session", session}), dir);
    ASSERT_EQ(longer.code, 0) << longer.err;
    EXPECT_EQ(longer.out, longer_clean.out);
  }
}

TEST(SessionCli, AnInvalidFileIsRefusedAndLeftUntouched) {
  const fs::path dir = test_dir();
  const fs::path session = dir / "s.kvs";
  std::ofstream(session) << "not a session file";
  const std::string before = slurp(session);
  Outcome o = run(run_args(demo_model(), "Hello", 4, {"--session", session.string()}), dir);
  EXPECT_EQ(o.code, 1);
  EXPECT_EQ(std::count(o.err.begin(), o.err.end(), '\n'), 1) << o.err;
  EXPECT_NE(o.err.find("bad magic"), std::string::npos) << o.err;
  EXPECT_TRUE(o.out.empty());
  EXPECT_EQ(slurp(session), before);

  // A session of another cache policy: refused too, unless --session-overwrite.
  ASSERT_EQ(run(run_args(demo_model(), "Hello", 4, {"--kv", "q8", "--session", (dir / "q8.kvs").string()}), dir).code, 0);
  const std::string q8 = slurp(dir / "q8.kvs");
  o = run(run_args(demo_model(), "Hello", 4, {"--session", (dir / "q8.kvs").string()}), dir);
  EXPECT_EQ(o.code, 1);
  EXPECT_NE(o.err.find("policy"), std::string::npos) << o.err;
  EXPECT_EQ(slurp(dir / "q8.kvs"), q8);

  o = run(run_args(demo_model(), "Hello", 4, {"--session", session.string(), "--session-overwrite"}), dir);
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_NE(o.err.find("will be replaced"), std::string::npos) << o.err;
  o = run(run_args(demo_model(), "Hello", 4, {"--session", session.string()}), dir);
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_NE(o.err.find("reused"), std::string::npos) << o.err;

  // Paths that lead elsewhere are refused before anything is loaded.
  fs::create_symlink(session, dir / "link.kvs");
  o = run(run_args(demo_model(), "Hello", 4, {"--session", (dir / "link.kvs").string()}), dir);
  EXPECT_EQ(o.code, 1);
  EXPECT_NE(o.err.find("symlink"), std::string::npos) << o.err;
  o = run(run_args(demo_model(), "Hello", 4, {"--session", (dir / ".." / "x.kvs").string()}), dir);
  EXPECT_EQ(o.code, 1);
  EXPECT_NE(o.err.find("'..'"), std::string::npos) << o.err;
}

TEST(SessionCli, CtrlCStopsGenerationSavesAndExits130) {
  KVTIER_REQUIRE_SHARED("models/tiny-llama-31m.f16.gguf");
  const std::string model = kvtier::testing::shared_path("models/tiny-llama-31m.f16.gguf").string();
  const fs::path dir = test_dir();
  const fs::path session = dir / "s.kvs";
  Loader loader(model);
  ASSERT_TRUE(loader.model);
  for (int presses : {1, 2}) {
    const std::string before = fs::exists(session) ? slurp(session) : "";
    const fs::path out = dir / ("out" + std::to_string(presses) + ".txt");  // new: empty until generation
    Child c = spawn(run_args(model, "The Linux kernel", 2000, {"-c", "2048", "--ignore-eos", "--session",
                                                               session.string()}),
                    out);
    // Wait for the first generated text, then press Ctrl-C.
    for (int i = 0; i < 2000 && (!fs::exists(out) || fs::file_size(out) == 0); ++i) std::this_thread::sleep_for(5ms);
    for (int p = 0; p < presses; ++p) ::kill(c.pid, SIGINT);
    const int code = c.finish();
    EXPECT_EQ(code, 130) << "exit code 130, not killed by the signal: " << c.err;
    EXPECT_FALSE(slurp(out).empty());
    auto tokens = loader.tokens(session, "f16", 2048);
    if (presses == 1) {
      ASSERT_TRUE(tokens.ok()) << tokens.error();
      EXPECT_GT(tokens->size(), 4u);
      EXPECT_LT(tokens->size(), 1500u) << "generation stopped early";
      EXPECT_NE(c.err.find("saved"), std::string::npos) << c.err;
    } else {  // the second press may come before or during the save: the old file or the new one
      EXPECT_TRUE(tokens.ok() || slurp(session) == before) << tokens.error();
    }
  }
}

// kill -9 at random moments of `kvtier run --session`'s save (the child says when it starts saving), 30
// times: the file is always the complete previous session or the complete new one, and a rerun gives the
// clean run's output.
TEST(SessionCli, KillDuringSaveNeverLeavesABadFile) {
  const fs::path dir = test_dir();
  const fs::path session = dir / "s.kvs";
  const std::string prompt = long_prompt_text();
  Loader loader(demo_model());
  ASSERT_TRUE(loader.model);
  const std::vector<int> lengths = {8, 12, 16, 20, 24};
  auto args = [&](int n, const fs::path& file) {
    return run_args(demo_model(), prompt, n, {"-c", "1024", "--ignore-eos", "-v", "--session", file.string()});
  };
  // Clean runs (each into its own file): the output, the tokens a complete save holds, the save time.
  std::map<int, std::string> clean_out;
  std::map<int, std::vector<int32_t>> clean_tokens;
  double save_seconds = 0;
  for (int n : lengths) {
    const fs::path file = dir / ("clean" + std::to_string(n) + ".kvs");
    Outcome o = run(args(n, file), dir);
    ASSERT_EQ(o.code, 0) << o.err;
    clean_out[n] = o.out;
    auto tokens = loader.tokens(file);
    ASSERT_TRUE(tokens.ok()) << tokens.error();
    clean_tokens[n] = *tokens;
    const size_t at = o.err.find("MiB in ");
    ASSERT_NE(at, std::string::npos) << o.err;
    save_seconds = std::max(save_seconds, std::stod(o.err.substr(at + 7)));
  }
  std::mt19937 rng(20240601);
  int previous = -1;  // the length of the complete session on disk; -1: none yet
  std::map<std::string, int> outcomes;
  for (int iter = 0; iter < 30; ++iter) {
    const int n = lengths[iter % lengths.size()];
    Child c = spawn(args(n, session), dir / "killed.txt");
    const bool saving = c.read_until("session: saving");
    std::uniform_real_distribution<double> delay(0.0, 1.5 * save_seconds);
    if (saving) std::this_thread::sleep_for(std::chrono::duration<double>(delay(rng)));
    ::kill(c.pid, SIGKILL);
    const int code = c.finish();
    EXPECT_TRUE(code == 1000 + SIGKILL || code == 0) << "iteration " << iter << ": " << code << "\n" << c.err;

    if (!fs::exists(session)) {
      EXPECT_EQ(previous, -1) << "iteration " << iter << ": the previous session disappeared";
      ++outcomes["absent"];
    } else {
      auto tokens = loader.tokens(session);
      ASSERT_TRUE(tokens.ok()) << "iteration " << iter << ": " << tokens.error();
      const bool is_new = *tokens == clean_tokens[n];
      const bool is_old = previous >= 0 && *tokens == clean_tokens[previous];
      EXPECT_TRUE(is_new || is_old) << "iteration " << iter << ": " << tokens->size() << " tokens";
      ++outcomes[is_new ? "new" : "old"];  // consecutive iterations differ in n, so never both
    }
    // The rerun: the clean output, a complete file, no temp file left behind.
    Outcome again = run(args(n, session), dir);
    ASSERT_EQ(again.code, 0) << "iteration " << iter << ": " << again.err;
    EXPECT_EQ(again.out, clean_out[n]) << "iteration " << iter;
    auto tokens = loader.tokens(session);
    ASSERT_TRUE(tokens.ok()) << tokens.error();
    EXPECT_EQ(*tokens, clean_tokens[n]);
    EXPECT_TRUE(temp_files(dir).empty()) << "iteration " << iter << ": " << temp_files(dir).front();
    previous = n;
  }
  std::string summary;
  for (const auto& [what, count] : outcomes) summary += what + "=" + std::to_string(count) + " ";
  RecordProperty("outcomes", summary);
  std::printf("kill -9 during save: %s(save takes %.4f s)\n", summary.c_str(), save_seconds);
}

// ENOSPC: the save runs into a 256 KiB tmpfs (a private mount namespace; needs root and unshare).
TEST(SessionCli, AFullDiskIsAClearErrorAndKeepsTheOldFile) {
  if (::geteuid() != 0 || std::system("unshare -m true >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "needs root and unshare -m to mount a small tmpfs";
  }
  const fs::path dir = test_dir();
  const fs::path mnt = dir / "mnt";
  fs::create_directories(mnt);
  // The old session: a few tokens of the contiguous cache (4 KiB each), which fits.
  ASSERT_EQ(run(run_args(demo_model(), "Hi", 2, {"--kv", "contiguous", "--session", (dir / "old.kvs").string()}), dir)
                .code,
            0);
  ASSERT_LT(fs::file_size(dir / "old.kvs"), 64u << 10);
  // The new one: hundreds of tokens, which do not.
  std::string cmd = "unshare -m sh -c 'mount -t tmpfs -o size=256k tmpfs " + mnt.string() + " && cp " +
                    (dir / "old.kvs").string() + " " + mnt.string() + "/s.kvs && " + kBinary + " run -m " +
                    demo_model() + " -p \"" + long_prompt_text() + "\" -n 8 --temp 0 -t 1 --kv contiguous --session " +
                    mnt.string() + "/s.kvs >" + (dir / "out").string() + " 2>" + (dir / "err").string() +
                    "; echo $? >" + (dir / "rc").string() + "; cmp -s " + (dir / "old.kvs").string() + " " +
                    mnt.string() + "/s.kvs; echo $? >" + (dir / "cmp").string() + "; ls -A " + mnt.string() + " >" +
                    (dir / "ls").string() + "'";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const std::string err = slurp(dir / "err");
  EXPECT_EQ(slurp(dir / "rc"), "1\n") << err;
  EXPECT_NE(err.find("No space left on device"), std::string::npos) << err;
  EXPECT_NE(err.find("s.kvs"), std::string::npos) << err;
  EXPECT_EQ(slurp(dir / "cmp"), "0\n") << "the old session file changed";
  EXPECT_EQ(slurp(dir / "ls"), "s.kvs\n") << "a temp file was left behind";
  EXPECT_FALSE(slurp(dir / "out").empty()) << "the generated text is still printed";
}

}  // namespace

// SIGTERM and SIGHUP (a `kill`, a closed terminal) save the session as Ctrl-C does.
TEST(SessionCli, TermAndHangUpSaveTheSession) {
  KVTIER_REQUIRE_SHARED("models/tiny-llama-31m.f16.gguf");
  const std::string model = kvtier::testing::shared_path("models/tiny-llama-31m.f16.gguf").string();
  const fs::path dir = test_dir();
  Loader loader(model);
  ASSERT_TRUE(loader.model);
  for (int signal : {SIGTERM, SIGHUP}) {
    SCOPED_TRACE(signal);
    const fs::path session = dir / ("s" + std::to_string(signal) + ".kvs");
    const fs::path out = dir / ("out" + std::to_string(signal) + ".txt");
    Child c = spawn(run_args(model, "The Linux kernel", 2000, {"-c", "2048", "--ignore-eos", "--session",
                                                               session.string()}),
                    out);
    for (int i = 0; i < 2000 && (!fs::exists(out) || fs::file_size(out) == 0); ++i) std::this_thread::sleep_for(5ms);
    ::kill(c.pid, signal);
    EXPECT_EQ(c.finish(), 130) << c.err;
    auto tokens = loader.tokens(session, "f16", 2048);
    ASSERT_TRUE(tokens.ok()) << tokens.error();
    EXPECT_GT(tokens->size(), 4u);
    EXPECT_LT(tokens->size(), 1500u) << "generation stopped early";
  }
}

// A reader that goes away (`| head -c1`): SIGPIPE is ignored, the write fails, generation stops and the
// session is saved before the exit (status 141, as a shell reports a writer killed by SIGPIPE).
TEST(SessionCli, ClosedStdoutStopsAndSavesTheSession) {
  const fs::path dir = test_dir();
  const fs::path session = dir / "piped.kvs";
  std::string cmd = kBinary;
  for (const std::string& a : run_args(demo_model(), "The Linux kernel", 900, {"-c", "1024", "--ignore-eos",
                                                                               "--session", session.string()})) {
    cmd += " '" + a + "'";
  }
  std::ofstream(dir / "pipe.sh") << "{ " << cmd << " 2>" << (dir / "err").string() << "; echo $? >"
                                 << (dir / "code").string() << "; } | head -c1 >/dev/null\n";
  ASSERT_EQ(std::system(("bash " + (dir / "pipe.sh").string()).c_str()), 0);
  EXPECT_EQ(slurp(dir / "code"), "141\n") << slurp(dir / "err");
  EXPECT_NE(slurp(dir / "err").find("stdout was closed"), std::string::npos) << slurp(dir / "err");
  Loader loader(demo_model());
  ASSERT_TRUE(loader.model);
  auto tokens = loader.tokens(session, "f16", 1024);
  ASSERT_TRUE(tokens.ok()) << tokens.error();
  EXPECT_GT(tokens->size(), 3u);
}

// Ctrl-C during a long prompt: evaluation stops at a micro-batch boundary, the tokens read so far are saved,
// and the next run reuses them and continues exactly as a run that was never interrupted.
TEST(SessionCli, CtrlCDuringThePromptSavesWhatWasRead) {
  KVTIER_REQUIRE_SHARED("models/tiny-llama-31m.Q4_K_M.gguf");
  KVTIER_REQUIRE_SHARED("eval/eval.txt");
  const std::string model = kvtier::testing::shared_path("models/tiny-llama-31m.Q4_K_M.gguf").string();
  const std::string prompt = slurp(kvtier::testing::shared_path("eval/eval.txt")).substr(0, 7000);  // ~1,700 tokens: 3+ micro-batches
  const fs::path dir = test_dir();
  const fs::path session = dir / "doc.kvs";
  const std::vector<std::string> extra = {"-c", "4096", "--session", session.string()};
  // Press Ctrl-C part way through the prompt. When it lands too early (before the handler is installed: death
  // by SIGINT) the next try waits longer; too late (the prompt was done) it waits less: machines differ.
  std::chrono::milliseconds delay = 400ms;
  std::string err;
  bool stopped_in_prompt = false;
  for (int attempt = 0; attempt < 8 && !stopped_in_prompt; ++attempt) {
    fs::remove(session);
    Child c = spawn(run_args(model, prompt, 16, extra), dir / "interrupted.txt");
    std::this_thread::sleep_for(delay);
    ::kill(c.pid, SIGINT);
    const int code = c.finish();
    err = c.err;
    stopped_in_prompt = code == 130 && err.find("interrupted during the prompt after ") != std::string::npos;
    if (code == 1000 + SIGINT) delay *= 2;
    if (!stopped_in_prompt && code != 1000 + SIGINT) delay /= 3;
  }
  ASSERT_TRUE(stopped_in_prompt) << err;
  const size_t at = err.find("interrupted during the prompt after ");
  const long read = std::atol(err.c_str() + at + 36);
  EXPECT_GT(read, 0);
  EXPECT_NE(err.find("prompt: " + std::to_string(read) + " tokens in"), std::string::npos)
      << "the statistics count the tokens evaluated, not the whole prompt: " << err;
  EXPECT_EQ(read % kvtier::kMaxBatch, 0) << "stops at a micro-batch boundary";
  Loader loader(model);
  auto saved = loader.tokens(session, "f16", 4096);
  ASSERT_TRUE(saved.ok()) << saved.error();
  EXPECT_EQ(static_cast<long>(saved->size()), read);
  // Resume: only the rest of the prompt is evaluated, and the text is the uninterrupted run's.
  Outcome resumed = run(run_args(model, prompt, 16, extra), dir);
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_NE(resumed.err.find("session: reused " + std::to_string(read) + " of"), std::string::npos) << resumed.err;
  Outcome clean = run(run_args(model, prompt, 16, {"-c", "4096"}), dir);
  ASSERT_EQ(clean.code, 0) << clean.err;
  EXPECT_EQ(resumed.out, clean.out);
}
