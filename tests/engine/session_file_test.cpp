// Session files: save -> restore reproduces an uninterrupted run exactly (paged f16, a quantized ladder,
// the contiguous cache); every kind of bad file is refused with a message naming the reason; the cache
// is recomputed when a cold page turns out damaged.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "common/loaded_model.h"
#include "common/shared_data.h"
#include "common/test_util.h"
#include "engine/session_file.h"
#include "kvtier/kv_options.h"
#include "kvtier/sampling.h"
#include "kvtier/session.h"
#include "kvtier/session_file.h"

namespace kvtier {
namespace {

namespace fs = std::filesystem;
using Loaded = kvtier::testing::LoadedModel;

std::vector<uint8_t> read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}
void write_bytes(const fs::path& p, const std::vector<uint8_t>& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// A fresh directory per test, removed after it.
fs::path test_dir() {
  const std::string suite = ::testing::UnitTest::GetInstance()->current_test_info()->test_suite_name();
  return kvtier::testing::fresh_test_dir("kvtier_session_" + suite + "_");
}

// The first `n` tokens of the evaluation text (with BOS), or a repeated sentence when it is absent.
std::vector<int32_t> long_prompt(const Tokenizer& tok, size_t n) {
  std::string text;
  if (fs::exists(kvtier::testing::shared_path("eval/eval.txt"))) {
    std::ifstream in(kvtier::testing::shared_path("eval/eval.txt"));
    text.resize(16000);
    in.read(text.data(), static_cast<std::streamsize>(text.size()));
    text.resize(static_cast<size_t>(in.gcount()));
  }
  while (text.size() < 16000) text += "The kernel schedules tasks on every CPU and the page cache holds file data. ";
  std::vector<int32_t> ids = tok.encode(text, true, false);
  if (ids.size() > n) ids.resize(n);
  return ids;
}

std::unique_ptr<KvCache> cache_for(const Model& m, const std::string& ladder, int n_ctx) {
  KvCacheOptions o;
  o.ladder = ladder;
  auto c = make_kv_cache(m.config(), n_ctx, o);
  EXPECT_TRUE(c.ok()) << c.error();
  return c.ok() ? std::move(*c) : nullptr;
}

// Greedy continuation of n tokens; returns them, leaves the session after the last one.
std::vector<int32_t> greedy(Session& s, int n) {
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(argmax(s.last_logits().data(), static_cast<int>(s.last_logits().size())));
    EXPECT_TRUE(s.append({out.back()}).ok());
  }
  return out;
}

class SessionRoundTrip : public ::testing::TestWithParam<const char*> {};

TEST_P(SessionRoundTrip, RestoredSessionContinuesExactlyLikeAnUninterruptedOne) {
  KVTIER_REQUIRE_SHARED("models/tiny-llama-31m.Q4_K_M.gguf");
  Loaded l = kvtier::testing::load_shared_model("tiny-llama-31m.Q4_K_M.gguf");
  ASSERT_TRUE(l.model && l.tokenizer);
  const Model& m = *l.model;
  ThreadPool pool(2);
  const int n_ctx = 1024;
  // 600 tokens: sinks, several pages, every rung of the ladder below.
  const std::vector<int32_t> prompt = long_prompt(*l.tokenizer, 600);
  const fs::path file = test_dir() / "s.kvs";

  Session original(*l.model, cache_for(m, GetParam(), n_ctx), pool);
  ASSERT_TRUE(original.append(prompt).ok());
  const std::vector<float> prompt_logits = original.last_logits();
  SessionIoStats saved;
  ASSERT_TRUE(original.save(file.string(), &saved).ok());
  EXPECT_EQ(saved.bytes, fs::file_size(file));

  // Restore, then feed the same next token to both: bit-identical logits and continuations.
  Session restored(*l.model, cache_for(m, GetParam(), n_ctx), pool);
  SessionIoStats loaded;
  Status r = restored.restore(file.string(), &loaded);
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_EQ(loaded.bytes, saved.bytes);
  EXPECT_EQ(restored.tokens(), prompt);
  EXPECT_EQ(restored.n_past(), static_cast<int>(prompt.size()));
  EXPECT_TRUE(restored.last_logits().empty());
  const int32_t next = argmax(prompt_logits.data(), static_cast<int>(prompt_logits.size()));
  ASSERT_TRUE(original.append({next}).ok());
  ASSERT_TRUE(restored.append({next}).ok());
  EXPECT_EQ(restored.last_logits(), original.last_logits());
  EXPECT_EQ(greedy(restored, 24), greedy(original, 24));
  EXPECT_EQ(restored.last_logits(), original.last_logits());

  // The prompt again (llama.cpp --prompt-cache): only the last token is evaluated, for its logits.
  Session again(*l.model, cache_for(m, GetParam(), n_ctx), pool);
  ASSERT_TRUE(again.restore(file.string()).ok());
  const std::vector<int32_t> rest = again.reuse_prefix(prompt);
  ASSERT_EQ(rest, std::vector<int32_t>{prompt.back()});
  ASSERT_TRUE(again.append(rest).ok());
  // The same as evaluating the prompt's last token on its own (a prefill batch rounds differently).
  Session stepwise(*l.model, cache_for(m, GetParam(), n_ctx), pool);
  ASSERT_TRUE(stepwise.append(std::vector<int32_t>(prompt.begin(), prompt.end() - 1)).ok());
  ASSERT_TRUE(stepwise.append(rest).ok());
  EXPECT_EQ(again.last_logits(), stepwise.last_logits());

  // A longer prompt that starts with the saved one: only the new tokens are evaluated.
  std::vector<int32_t> longer = prompt;
  const std::vector<int32_t> extra = l.tokenizer->encode(" and then the scheduler", false, false);
  longer.insert(longer.end(), extra.begin(), extra.end());
  Session extended(*l.model, cache_for(m, GetParam(), n_ctx), pool);
  ASSERT_TRUE(extended.restore(file.string()).ok());
  EXPECT_EQ(extended.reuse_prefix(longer), extra);
  ASSERT_TRUE(extended.append(extra).ok());
  Session reference(*l.model, cache_for(m, GetParam(), n_ctx), pool);
  ASSERT_TRUE(reference.append(prompt).ok());
  ASSERT_TRUE(reference.append(extra).ok());
  EXPECT_EQ(extended.last_logits(), reference.last_logits());
  EXPECT_EQ(extended.tokens(), longer);

  // A prompt that diverges after 100 tokens keeps those 100.
  std::vector<int32_t> other(prompt.begin(), prompt.begin() + 100);
  other.insert(other.end(), extra.begin(), extra.end());
  Session diverged(*l.model, cache_for(m, GetParam(), n_ctx), pool);
  ASSERT_TRUE(diverged.restore(file.string()).ok());
  EXPECT_EQ(diverged.reuse_prefix(other), extra);
  EXPECT_EQ(diverged.n_past(), 100);
}

INSTANTIATE_TEST_SUITE_P(Caches, SessionRoundTrip, ::testing::Values("f16", "f16:128,q8:256,q4", "contiguous"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n) {
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return n;
                         });

// Refusals, on a small session of the 6M model.
class SessionRefusals : public ::testing::Test {
 protected:
  void SetUp() override {
    KVTIER_REQUIRE_SHARED("models/tiny-llama-6m.Q4_0.gguf");
    l_ = kvtier::testing::load_shared_model("tiny-llama-6m.Q4_0.gguf");
    ASSERT_TRUE(l_.model && l_.tokenizer);
    dir_ = test_dir();
    file_ = dir_ / "s.kvs";
    Session s(*l_.model, cache_for(*l_.model, "f16", 128), pool_);
    ASSERT_TRUE(s.append(long_prompt(*l_.tokenizer, 40)).ok());
    ASSERT_TRUE(s.save(file_.string()).ok());
    good_ = read_bytes(file_);
    ASSERT_GT(good_.size(), 1000u);
  }

  // Restores `path` into a fresh f16 session of n_ctx positions; returns the error ("" when it loaded).
  std::string restore_error(const fs::path& path, const std::string& ladder = "f16", int n_ctx = 128,
                            const Model* model = nullptr) {
    const Model& m = model ? *model : *l_.model;
    Session s(const_cast<Model&>(m), cache_for(m, ladder, n_ctx), pool_);
    Status st = s.restore(path.string());
    if (st.ok()) return "";
    EXPECT_EQ(s.n_past(), 0) << "a refused file leaves the session empty";
    EXPECT_TRUE(s.tokens().empty());
    EXPECT_EQ(st.message().find('\n'), std::string::npos) << "one line: " << st.message();
    EXPECT_NE(st.message().find(path.string()), std::string::npos) << "names the file: " << st.message();
    return st.message();
  }

  // Rewrites the checksum so that only the field under test is wrong.
  static void reseal(std::vector<uint8_t>& bytes) {
    const uint64_t sum = XXH3_64bits(bytes.data(), bytes.size() - 16);
    std::memcpy(bytes.data() + bytes.size() - 16, &sum, sizeof sum);
  }

  Loaded l_;
  ThreadPool pool_{2};
  fs::path dir_, file_;
  std::vector<uint8_t> good_;
};

TEST_F(SessionRefusals, TheSavedFileLoads) { EXPECT_EQ(restore_error(file_), ""); }

TEST_F(SessionRefusals, AnyFlippedByteIsRefused) {
  const fs::path bad = dir_ / "flipped.kvs";
  const size_t n = good_.size();
  std::vector<size_t> offsets;
  for (size_t i = 0; i < 48; ++i) offsets.push_back(i);                        // magic, version, flags, fingerprint...
  for (size_t i = 48; i < n; i += n / 97 + 1) offsets.push_back(i);            // tokens, cache stream
  for (size_t i = n - session_format::kTrailerBytes; i < n; ++i) offsets.push_back(i);  // trailer
  for (size_t off : offsets) {
    std::vector<uint8_t> bytes = good_;
    bytes[off] ^= 0x20;
    write_bytes(bad, bytes);
    const std::string err = restore_error(bad);
    ASSERT_NE(err, "") << "a flipped byte at offset " << off << " of " << n << " was accepted";
    if (off >= 16 && off < n - session_format::kTrailerBytes) {
      EXPECT_NE(err.find("checksum"), std::string::npos) << off << ": " << err;
    }
  }
}

TEST_F(SessionRefusals, EveryTruncationIsRefusedAsTruncated) {
  const fs::path bad = dir_ / "truncated.kvs";
  const size_t n = good_.size();
  std::vector<size_t> cuts = {0, 1, 4, 7, 8, 12, 16, 24, 30, 60, n - 24, n - 17, n - 16, n - 9, n - 8, n - 1};
  for (size_t c = 100; c < n; c += n / 61 + 1) cuts.push_back(c);
  for (size_t cut : cuts) {
    write_bytes(bad, std::vector<uint8_t>(good_.begin(), good_.begin() + static_cast<std::ptrdiff_t>(cut)));
    const std::string err = restore_error(bad);
    EXPECT_NE(err.find("truncated"), std::string::npos) << "cut at " << cut << " of " << n << ": " << err;
  }
  // Bytes appended after a complete file are refused too.
  std::vector<uint8_t> longer = good_;
  longer.insert(longer.end(), 100, 0);
  write_bytes(bad, longer);
  EXPECT_NE(restore_error(bad), "");
}

TEST_F(SessionRefusals, BadMagicAndOtherVersion) {
  std::vector<uint8_t> bytes = good_;
  bytes[0] = 'G';
  write_bytes(dir_ / "magic.kvs", bytes);
  EXPECT_NE(restore_error(dir_ / "magic.kvs").find("bad magic"), std::string::npos);
  write_bytes(dir_ / "text.kvs", std::vector<uint8_t>{'h', 'e', 'l', 'l', 'o', '\n'});
  EXPECT_NE(restore_error(dir_ / "text.kvs").find("bad magic"), std::string::npos);

  bytes = good_;
  const uint32_t version = kSessionFormatVersion + 1;
  std::memcpy(bytes.data() + session_format::kVersionOffset, &version, sizeof version);
  reseal(bytes);
  write_bytes(dir_ / "version.kvs", bytes);
  const std::string err = restore_error(dir_ / "version.kvs");
  EXPECT_NE(err.find("version " + std::to_string(version)), std::string::npos) << err;
}

TEST_F(SessionRefusals, AnotherModelAnotherPolicyATooSmallContext) {
  // The f16 file of the same model has the same geometry and tokenizer, but other weights.
  KVTIER_REQUIRE_SHARED("models/tiny-llama-6m.f16.gguf");
  Loaded other = kvtier::testing::load_shared_model("tiny-llama-6m.f16.gguf");
  ASSERT_TRUE(other.model);
  std::string err = restore_error(file_, "f16", 128, other.model.get());
  EXPECT_NE(err.find("another model"), std::string::npos) << err;

  for (const char* ladder : {"q4", "f16:64,q8", "contiguous"}) {
    err = restore_error(file_, ladder);
    EXPECT_NE(err.find("policy"), std::string::npos) << ladder << ": " << err;
  }
  // A damaged fingerprint with a valid checksum is still another model.
  std::vector<uint8_t> bytes = good_;
  bytes[session_format::kFingerprintOffset] ^= 1;
  reseal(bytes);
  write_bytes(dir_ / "fingerprint.kvs", bytes);
  EXPECT_NE(restore_error(dir_ / "fingerprint.kvs").find("another model"), std::string::npos);

  err = restore_error(file_, "f16", 32);
  EXPECT_NE(err.find("context size 32"), std::string::npos) << err;
  EXPECT_EQ(restore_error(file_, "f16", 40), "") << "exactly enough context";
}

TEST_F(SessionRefusals, SymlinksAndDotDotPathsAreRefused) {
  const fs::path outside = dir_.parent_path() / ("outside_" + std::to_string(::getpid()) + ".kvs");
  fs::copy_file(file_, outside, fs::copy_options::overwrite_existing);
  fs::create_symlink(outside, dir_ / "out.kvs");
  fs::create_symlink("s.kvs", dir_ / "in.kvs");
  for (const char* link : {"out.kvs", "in.kvs"}) {
    const std::string err = restore_error(dir_ / link);
    EXPECT_NE(err.find("symlink"), std::string::npos) << err;
    // Saving through a symlink is refused as well, and the target stays as it was.
    Session s(*l_.model, cache_for(*l_.model, "f16", 128), pool_);
    ASSERT_TRUE(s.append({1, 2, 3}).ok());
    Status st = s.save((dir_ / link).string());
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.message().find("symlink"), std::string::npos) << st.message();
  }
  EXPECT_EQ(read_bytes(outside), good_);
  EXPECT_EQ(read_bytes(file_), good_);
  fs::remove(outside);

  for (const std::string& path : {(dir_ / ".." / dir_.filename() / "s.kvs").string(), std::string("../x"),
                                  std::string("a/../../x.kvs"), std::string("..")}) {
    const std::string err = restore_error(path);
    EXPECT_NE(err.find("'..'"), std::string::npos) << path << ": " << err;
  }
  EXPECT_NE(restore_error(dir_).find("not a regular file"), std::string::npos);
}

TEST_F(SessionRefusals, SavingReplacesAtomicallyAndCleansUpStaleTempFiles) {
  // A temp file of a process that is gone (a child that exited) and one of a live process (our parent).
  const pid_t child = fork();
  if (child == 0) _exit(0);
  ASSERT_GT(child, 0);
  waitpid(child, nullptr, 0);
  const fs::path stale = dir_ / (".s.kvs.tmp." + std::to_string(child));
  const fs::path live = dir_ / (".s.kvs.tmp." + std::to_string(getppid()));
  write_bytes(stale, {1, 2, 3});
  write_bytes(live, {1, 2, 3});

  Session s(*l_.model, cache_for(*l_.model, "f16", 128), pool_);
  ASSERT_TRUE(s.restore(file_.string()).ok());
  const std::vector<int32_t> before = s.tokens();
  ASSERT_TRUE(s.append({42, 43}).ok());
  ASSERT_TRUE(s.save(file_.string()).ok());
  EXPECT_FALSE(fs::exists(stale)) << "the killed process's temp file is removed";
  EXPECT_TRUE(fs::exists(live)) << "a live process's temp file is not touched";
  EXPECT_FALSE(fs::exists(dir_ / (".s.kvs.tmp." + std::to_string(getpid()))));
  EXPECT_EQ(fs::status(file_).permissions() & fs::perms::others_read, fs::perms::none) << "sessions hold prompts";

  Session t(*l_.model, cache_for(*l_.model, "f16", 128), pool_);
  ASSERT_TRUE(t.restore(file_.string()).ok());
  std::vector<int32_t> want = before;
  want.insert(want.end(), {42, 43});
  EXPECT_EQ(t.tokens(), want);

  // A save that cannot happen (no such directory) is an error, not a crash.
  Status st = s.save((dir_ / "missing" / "s.kvs").string());
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("missing"), std::string::npos) << st.message();
}

// Recompute on damage: the cold tier's page file is overwritten behind the cache's back; the next step
// finds a page that fails its checksum, and the session cuts the cache there and evaluates again.
TEST(SessionDamage, ADamagedColdPageIsRecomputed) {
  const char* kLadder = "f16:64,q8";
  KVTIER_REQUIRE_SHARED("models/tiny-llama-6m.Q4_0.gguf");
  Loaded l = kvtier::testing::load_shared_model("tiny-llama-6m.Q4_0.gguf");
  ASSERT_TRUE(l.model && l.tokenizer);
  ThreadPool pool(2);
  const fs::path spill = test_dir();
  KvCacheOptions cold;
  cold.ladder = kLadder;
  cold.budget_bytes = 2 << 20;  // the fixed part (rings, cold buffers) is 1.7 MiB
  cold.spill_dir = spill.string();
  cold.cold_mode = "exact";
  auto cache = make_kv_cache(l.model->config(), 1024, cold);
  ASSERT_TRUE(cache.ok()) << cache.error();
  Session damaged(*l.model, std::move(*cache), pool);
  std::vector<std::string> warnings;
  damaged.set_warning_handler([&](const std::string& w) { warnings.push_back(w); });
  const std::vector<int32_t> prompt = long_prompt(*l.tokenizer, 900);
  ASSERT_TRUE(damaged.append(prompt).ok());

  // The page file is an unnamed file in the spill directory, open in this process.
  int overwritten = 0;
  for (const auto& entry : fs::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    const fs::path target = fs::read_symlink(entry.path(), ec);
    if (ec || target.string().rfind(spill.string(), 0) != 0) continue;
    const int fd = ::open(entry.path().c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    struct stat st;
    ASSERT_EQ(fstat(fd, &st), 0);
    std::vector<uint8_t> junk(static_cast<size_t>(st.st_size), 0x5a);
    ASSERT_EQ(pwrite(fd, junk.data(), junk.size(), 0), static_cast<ssize_t>(junk.size()));
    fsync(fd);
    ::close(fd);
    ++overwritten;
  }
  if (overwritten == 0) GTEST_SKIP() << "no page file found under " << spill << " (nothing spilled?)";

  const int32_t next = argmax(damaged.last_logits().data(), static_cast<int>(damaged.last_logits().size()));
  Status st = damaged.append({next});
  ASSERT_TRUE(st.ok()) << st.message();
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("damaged"), std::string::npos) << warnings[0];
  EXPECT_EQ(damaged.cache().first_bad_position(), -1);
  EXPECT_EQ(damaged.n_past(), static_cast<int>(prompt.size()) + 1);

  // The same evaluations without a cold tier: the first 4 positions (the sinks, never cold), then the
  // rest and the new token in one batch, as the recompute did. The recomputed cache continues the same way.
  const int bad = std::stoi(warnings[0].substr(warnings[0].find("position ") + 9));
  ASSERT_GE(bad, 0);
  ASSERT_LT(bad, static_cast<int>(prompt.size()));
  Session clean(*l.model, cache_for(*l.model, kLadder, 1024), pool);
  ASSERT_TRUE(clean.append(std::vector<int32_t>(prompt.begin(), prompt.begin() + bad)).ok());
  std::vector<int32_t> redo(prompt.begin() + bad, prompt.end());
  redo.push_back(next);
  ASSERT_TRUE(clean.append(redo).ok());
  EXPECT_EQ(damaged.tokens(), clean.tokens());
  EXPECT_EQ(greedy(damaged, 16), greedy(clean, 16));
}

}  // namespace
}  // namespace kvtier
