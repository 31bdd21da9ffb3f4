// Hostile but fair input to every command (issue 19): sizes checked against the machine before anything is
// allocated, files whose type is checked before they are opened or read, numeric options out of range, model
// metadata that cannot be right, and plain error lines for each. Every command runs under `timeout`, so a
// regression shows as a failure (exit 124), never as a hung suite.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <fstream>
#include <string>

#include "common/gguf_copy.h"
#include "common/shared_data.h"
#include "common/test_util.h"

namespace {

namespace fs = std::filesystem;

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAddressSanitizer = true;  // ASan reserves terabytes of address space: `ulimit -v` kills it
#else
constexpr bool kAddressSanitizer = false;
#endif

struct Outcome {
  int code = -1;              // exit code, or 1000 + the signal that ended it
  std::string out, err;
  long max_rss_kib = 0;       // the child's peak resident set
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Runs `sh -c "<shell_prefix> timeout 60 build/kvtier <args>"`; stdout and stderr to files in `dir`.
Outcome kvtier(const std::string& args, const fs::path& dir, const std::string& shell_prefix = "") {
  const fs::path out = dir / "stdout.txt", err = dir / "stderr.txt";
  const std::string cmd = shell_prefix + " exec timeout 60 " + std::string(KVTIER_BINARY_DIR) + "/kvtier " + args +
                          " >" + out.string() + " 2>" + err.string() + " </dev/null";
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  struct rusage usage {};
  ::wait4(pid, &status, 0, &usage);
  Outcome o;
  o.code = WIFEXITED(status) ? WEXITSTATUS(status) : 1000 + WTERMSIG(status);
  o.out = slurp(out);
  o.err = slurp(err);
  o.max_rss_kib = usage.ru_maxrss;
  return o;
}

std::string demo_model() { return std::string(KVTIER_SOURCE_DIR) + "/models/tiny-llama-6m.Q4_0.gguf"; }

int count_lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

// One error line on stderr naming `needle`, and the given exit code.
void expect_one_error_line(const Outcome& o, int code, const std::string& needle) {
  EXPECT_EQ(o.code, code) << o.err;
  EXPECT_EQ(o.err.rfind("kvtier: error: ", 0), 0u) << o.err;
  EXPECT_EQ(count_lines(o.err), 1) << o.err;
  EXPECT_NE(o.err.find(needle), std::string::npos) << "expected '" << needle << "' in: " << o.err;
  EXPECT_TRUE(o.out.empty()) << o.out;
}

class Hardening : public ::testing::Test {
 protected:
  kvtier::testing::TempDir dir_{"kvtier-hardening"};
  fs::path dir() const { return dir_.path(); }
};

// Issue 19, case 1: the contiguous cache is checked before it is allocated and zero-filled.
TEST_F(Hardening, ContextTooLargeForMemoryIsOneClearError) {
  if (kAddressSanitizer) GTEST_SKIP() << "ulimit -v cannot apply under AddressSanitizer";
  Outcome o = kvtier("run -m " + demo_model() + " -p Hello -n 4 -c 1000000 --kv contiguous", dir(), "ulimit -v 2000000;");
  expect_one_error_line(o, 1, "of memory (KV cache at -c 1000000 3.81 GiB");
  EXPECT_NE(o.err.find("available (ulimit -v)"), std::string::npos) << o.err;
  // The paged cache is planned at its full context too (no budget: every token stays in RAM).
  o = kvtier("run -m " + demo_model() + " -p Hello -n 4 -c 10000000", dir(), "ulimit -v 2000000;");
  expect_one_error_line(o, 1, "KV cache at -c 10000000");
  // With a budget the plan is the budget, and the run goes ahead.
  o = kvtier("run -m " + demo_model() + " -p Hello -n 4 -c 10000000 --temp 0 --kv-budget 64M --kv-spill " +
                 dir().string(),
             dir(), "ulimit -v 2000000;");
  EXPECT_EQ(o.code, 0) << o.err;
}

// Case 2: perplexity's logits (half a chunk of n_vocab rows) are planned too.
TEST_F(Hardening, PerplexityLogitsAreCheckedBeforeAllocation) {
  if (kAddressSanitizer) GTEST_SKIP() << "ulimit -v cannot apply under AddressSanitizer";
  KVTIER_REQUIRE_SHARED("eval/eval.txt");
  const std::string text = kvtier::testing::shared_path("eval/eval.txt").string();
  Outcome o = kvtier("perplexity -m " + demo_model() + " -f " + text + " -c 200000 --chunks 1", dir(),
                     "ulimit -v 2000000;");
  expect_one_error_line(o, 1, "logits (100000 x 8192 f32) 3.05 GiB");
}

// Case 2 and 3: text and model paths that are devices or FIFOs are refused before they are read or opened
// for blocking.
TEST_F(Hardening, DevicesAndFifosAreRefusedWithoutReadingOrHanging) {
  Outcome o = kvtier("perplexity -m " + demo_model() + " -f /dev/zero -c 64 --chunks 1", dir());
  expect_one_error_line(o, 1, "'/dev/zero': is a character device, not a regular file");
  o = kvtier("recall -m " + demo_model() + " -f /dev/zero -c 512 --span 64", dir());
  expect_one_error_line(o, 1, "'/dev/zero': is a character device");
  const fs::path fifo = dir() / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  o = kvtier("info -m " + fifo.string(), dir());
  expect_one_error_line(o, 1, "is a FIFO, not a regular file");
  o = kvtier("run -m " + fifo.string() + " -p Hello", dir());
  expect_one_error_line(o, 1, "is a FIFO, not a regular file");
  o = kvtier("run -m " + demo_model() + " -f " + fifo.string(), dir());
  expect_one_error_line(o, 1, "prompt file '" + fifo.string() + "': is a FIFO");
  o = kvtier("run -m " + dir().string() + " -p Hello", dir());
  EXPECT_EQ(o.code, 2) << o.err;  // CLI11's own check: a directory is not an existing file
}

// Case 4: bytes after the last tensor are never read: 1 GiB appended to the demo model costs no memory.
TEST_F(Hardening, BytesNoTensorUsesAreNotRead) {
  const fs::path model = dir() / "padded.gguf";
  fs::copy_file(demo_model(), model);
  const auto size = fs::file_size(model);
  fs::resize_file(model, size + (1ull << 30));  // a hole: reading it would still fault in 1 GiB of pages
  Outcome o = kvtier("run -m " + model.string() + " -p Hello -n 4 --temp 0 -t 1", dir());
  ASSERT_EQ(o.code, 0) << o.err;
  Outcome plain = kvtier("run -m " + demo_model() + " -p Hello -n 4 --temp 0 -t 1", dir());
  EXPECT_EQ(o.out, plain.out);
  EXPECT_LT(o.max_rss_kib, plain.max_rss_kib + 64 * 1024) << "the appended GiB was read";
}

// Case 5: the vocabulary and token_embd's rows must agree (llama.cpp requires it too), named in the error.
TEST_F(Hardening, VocabularyAndEmbeddingRowsMustAgree) {
  const fs::path small_vocab = dir() / "small_vocab.gguf";
  kvtier::testing::GgufEdit shrink_vocab;
  shrink_vocab.metadata = [](kvtier::gguf::GgufWriter& w) {
    std::vector<std::string> tokens;
    for (int i = 0; i < 300; ++i) tokens.push_back(i < 256 ? std::string(1, static_cast<char>('A' + i % 26)) + std::to_string(i) : "t" + std::to_string(i));
    w.set_array_str("tokenizer.ggml.tokens", tokens);
    w.remove("tokenizer.ggml.token_type");
    w.set_array_str("tokenizer.ggml.merges", {});
  };
  ASSERT_TRUE(kvtier::testing::copy_gguf(demo_model(), small_vocab.string(), shrink_vocab).ok());
  Outcome o = kvtier("run -m " + small_vocab.string() + " -p Hello -n 4", dir());
  EXPECT_EQ(o.code, 1) << o.err;
  EXPECT_NE(o.err.find(small_vocab.string() + ": the tokenizer has 300 tokens (tokenizer.ggml.tokens) but "
                       "token_embd.weight has 8192 rows"),
            std::string::npos)
      << o.err;

  const fs::path short_embd = dir() / "short_embd.gguf";
  kvtier::testing::GgufEdit cut_rows;
  cut_rows.tensor = [](const kvtier::gguf::TensorInfo& t, std::vector<int64_t>& dims, uint64_t& n_bytes) {
    if (t.name != "token_embd.weight") return;
    n_bytes = n_bytes / dims[1] * 300;
    dims[1] = 300;
  };
  ASSERT_TRUE(kvtier::testing::copy_gguf(demo_model(), short_embd.string(), cut_rows).ok());
  o = kvtier("run -m " + short_embd.string() + " -p Hello -n 4", dir());
  expect_one_error_line(o, 1, "the tokenizer has 8192 tokens (tokenizer.ggml.tokens) but token_embd.weight has 300 rows");
}

// Case 7: metadata that cannot be right.
TEST_F(Hardening, ImpossibleMetadataIsRefusedOrWarnedAbout) {
  const fs::path inf_base = dir() / "inf_base.gguf";
  kvtier::testing::GgufEdit edit;
  edit.metadata = [](kvtier::gguf::GgufWriter& w) {
    w.set_f32("llama.rope.freq_base", std::numeric_limits<float>::infinity());
  };
  ASSERT_TRUE(kvtier::testing::copy_gguf(demo_model(), inf_base.string(), edit).ok());
  Outcome o = kvtier("run -m " + inf_base.string() + " -p Hello -n 4", dir());
  expect_one_error_line(o, 1, "llama.rope.freq_base must be finite and > 1");

  const fs::path far_bos = dir() / "far_bos.gguf";
  edit.metadata = [](kvtier::gguf::GgufWriter& w) { w.set_u32("tokenizer.ggml.bos_token_id", 4000000000u); };
  ASSERT_TRUE(kvtier::testing::copy_gguf(demo_model(), far_bos.string(), edit).ok());
  o = kvtier("run -m " + far_bos.string() + " -p Hello -n 4 --temp 0", dir());
  EXPECT_EQ(o.code, 0) << o.err;
  EXPECT_NE(o.err.find("warning: " + far_bos.string() +
                       ": tokenizer.ggml.bos_token_id = 4000000000 is outside the vocabulary of 8192 tokens"),
            std::string::npos)
      << o.err;
}

// Case 6: a session that could not be saved is found before any work.
TEST_F(Hardening, SessionInAMissingDirectoryFailsAtStart) {
  Outcome o = kvtier("run -m " + demo_model() + " -p Hello -n 4 --session " + (dir() / "no/such/dir/s.kvs").string(),
                     dir());
  expect_one_error_line(o, 1, "its directory " + (dir() / "no/such/dir").string() + " does not exist");
  EXPECT_EQ(o.err.find("prompt:"), std::string::npos) << "nothing was evaluated";
}

// Case 7: numeric options: finite, in range, sensible for the machine.
TEST_F(Hardening, NumericOptionsOutOfRangeAreRefused) {
  const std::string run = "run -m " + demo_model() + " -p Hello -n 2 ";
  const std::pair<std::string, std::string> cases[] = {
      {"--temp nan", "--temp: nan: must be a finite number >= 0"},
      {"--temp -1", "--temp: -1: must be a finite number >= 0"},
      {"--temp inf", "--temp: inf: must be a finite number >= 0"},
      {"--top-p nan", "--top-p: nan: must be in (0, 1]"},
      {"--top-p 0", "--top-p: 0: must be in (0, 1]"},
      {"--top-p -1", "--top-p: -1: must be in (0, 1]"},
      {"--min-p nan", "--min-p: nan: must be in [0, 1]"},
      {"--min-p -1", "--min-p: -1: must be in [0, 1]"},
      {"--repeat-penalty nan", "--repeat-penalty: nan: must be a finite number > 0"},
      {"--repeat-penalty 0", "--repeat-penalty: 0: must be a finite number > 0"},
      {"--repeat-penalty -1", "--repeat-penalty: -1: must be a finite number > 0"},
      {"--seed -5", "--seed: -5: must be a whole number in [0, 2^64)"},
      {"--seed 1e23", "--seed: 1e23: must be a whole number in [0, 2^64)"},
      {"--seed 18446744073709551616", "--seed: 18446744073709551616: must be a whole number"},
      {"-t 4096", "logical CPUs; at most"},
      {"-t -3", "must be >= 0"},
  };
  for (const auto& [flags, message] : cases) {
    SCOPED_TRACE(flags);
    Outcome o = kvtier(run + flags, dir());
    EXPECT_EQ(o.code, 2) << o.err;
    EXPECT_NE(o.err.find(message), std::string::npos) << o.err;
    EXPECT_EQ(count_lines(o.err), 1) << o.err;
  }
  // The largest seed and a thread count above the cores (with a warning) are fine.
  Outcome o = kvtier(run + "--seed 18446744073709551615", dir());
  EXPECT_EQ(o.code, 0) << o.err;
  const long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  o = kvtier(run + "-t " + std::to_string(cpus + 1), dir());
  EXPECT_EQ(o.code, 0) << o.err;
  EXPECT_NE(o.err.find("more threads than the"), std::string::npos) << o.err;
}

// Case 8: messages that name what the user did.
TEST_F(Hardening, MessagesNameWhatTheUserDid) {
  Outcome o = kvtier("frobnicate -m x", dir());
  expect_one_error_line(o, 2, "unknown command 'frobnicate' (commands: run, chat, template, perplexity");
  KVTIER_REQUIRE_SHARED("eval/eval.txt");
  const std::string text = kvtier::testing::shared_path("eval/eval.txt").string();
  o = kvtier("recall -m " + demo_model() + " -f " + text + " -c 64", dir());
  expect_one_error_line(o, 1, "-c 64 is too small for --span 128: the two copies and BOS need 257 positions");
  EXPECT_EQ(o.err.find("--filler"), std::string::npos) << "no --filler was passed: " << o.err;
  o = kvtier("run -m " + demo_model() + " -p Hello -n 2 --kv-budget 1M --kv-spill /proc", dir());
  expect_one_error_line(o, 1, "--kv-spill /proc: cannot create a file in this directory");
}

// Case 11: plan says plainly whether -c fits the budget, and what budget would.
TEST_F(Hardening, PlanSaysWhetherTheContextFits) {
  const std::string plan = "plan -m " + demo_model() + " --kv-ladder f16:32,q4:256,q2 -c 8192 --kv-budget ";
  Outcome small = kvtier(plan + "300K", dir());
  ASSERT_EQ(small.code, 0) << small.err;
  EXPECT_NE(small.out.find("at 8192 tokens: does NOT fit the budget"), std::string::npos) << small.out;
  const size_t at = small.out.find("tokens need --kv-budget ");
  ASSERT_NE(at, std::string::npos) << small.out;
  // The budget it names is enough.
  const std::string suggested = small.out.substr(at + 24, small.out.find(" or more", at) - at - 24);
  double value = std::stod(suggested);
  const std::string unit = suggested.substr(suggested.find(' ') + 1, 1);  // "MiB" / "KiB" -> M / K
  Outcome enough = kvtier(plan + std::to_string(static_cast<long>(value + 1)) + unit, dir());
  ASSERT_EQ(enough.code, 0) << enough.err;
  EXPECT_NE(enough.out.find("at 8192 tokens: fits"), std::string::npos) << enough.out;
}

}  // namespace
