// The prefix cache's parts (kvtier/prefix_cache.h): the chain hashes of full pages and the index over them, a
// prefix copied between sessions (Session::copy_prefix), and the --cache-dir store of session files (round
// trip, damaged and mismatched entries dropped, the size bound, bad directories). On the repository's demo model.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "kv/page_format.h"
#include "kvtier/kv_options.h"
#include "kvtier/model.h"
#include "kvtier/prefix_cache.h"
#include "kvtier/session.h"

namespace kvtier {
namespace {

namespace fs = std::filesystem;

const std::string kModel = std::string(KVTIER_SOURCE_DIR) + "/models/tiny-llama-6m.Q4_0.gguf";
constexpr int kPage = kv::kTokensPerPage;
constexpr int kContext = 1024;  // of every cache here

std::vector<int32_t> sequence(int n, uint32_t seed, int n_vocab = 32000) {
  std::vector<int32_t> tokens(static_cast<size_t>(n));  // in-vocabulary ids past the special ones
  uint32_t x = seed;
  for (int32_t& t : tokens) {
    x = x * 1664525u + 1013904223u;
    t = static_cast<int32_t>((x >> 8) % static_cast<uint32_t>(n_vocab - 3)) + 3;
  }
  return tokens;
}

std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(PrefixIndex, APageHashStandsForTheWholePrefixUpToItsEnd) {
  PrefixIndex index(42, kPage);
  const std::vector<int32_t> a = sequence(3 * kPage + 10, 1);
  std::vector<int32_t> b = a;
  b[5] += 1;  // page 0 differs: every later page's hash differs too
  std::vector<int32_t> c = a;
  c[2 * kPage + 1] += 1;  // page 2 differs: pages 0 and 1 still match
  const auto ha = index.page_hashes(a), hb = index.page_hashes(b), hc = index.page_hashes(c);
  ASSERT_EQ(ha.size(), 3u);  // full pages only
  for (size_t i = 0; i < 3; ++i) EXPECT_NE(ha[i], hb[i]) << i;
  EXPECT_EQ(ha[0], hc[0]);
  EXPECT_EQ(ha[1], hc[1]);
  EXPECT_NE(ha[2], hc[2]);
  EXPECT_NE(PrefixIndex(43, kPage).page_hashes(a)[0], ha[0]) << "another seed (model, policy) never matches";
  EXPECT_NE(prefix_cache_seed(1, "paged f16", kPage), prefix_cache_seed(2, "paged f16", kPage));
  EXPECT_NE(prefix_cache_seed(1, "paged f16", kPage), prefix_cache_seed(1, "paged q4", kPage));
}

TEST(PrefixIndex, LongestFindsTheLongestRunOfFullPagesWithinTheLimit) {
  PrefixIndex index(7, kPage);
  const std::vector<int32_t> preamble = sequence(2 * kPage, 3);
  const std::vector<int32_t> conversation = concat(preamble, sequence(2 * kPage + 5, 4));  // 4 full pages
  index.assign(0, conversation);
  index.assign(1, concat(preamble, sequence(kPage, 5)));
  EXPECT_EQ(index.owner_pages(0), 4);
  EXPECT_EQ(index.owner_pages(1), 3);

  const std::vector<int32_t> prompt = concat(preamble, sequence(100, 6));  // shares two pages with both
  PrefixIndex::Match m = index.longest(prompt, static_cast<int>(prompt.size()) - 1);
  EXPECT_EQ(m.tokens, 2 * kPage);
  EXPECT_EQ(m.owner, 0u) << "among equal runs, the owner assigned first";
  m = index.longest(prompt, static_cast<int>(prompt.size()), [](uint64_t o) { return o != 0; });
  EXPECT_EQ(m.owner, 1u);
  EXPECT_EQ(m.tokens, 2 * kPage);

  // The whole conversation again, one more turn: 4 pages, but the limit (prompt - 1) may cut a page.
  const std::vector<int32_t> next_turn(conversation.begin(), conversation.begin() + 4 * kPage);
  EXPECT_EQ(index.longest(next_turn, 4 * kPage).tokens, 4 * kPage);
  EXPECT_EQ(index.longest(next_turn, 4 * kPage - 1).tokens, 3 * kPage);
  EXPECT_EQ(index.longest(sequence(300, 9), 300).tokens, 0) << "nothing shared";
  EXPECT_EQ(index.longest(std::vector<int32_t>(preamble.begin(), preamble.begin() + kPage - 1), 999).tokens, 0)
      << "a partial page is never matched";

  index.erase(0);
  EXPECT_EQ(index.owner_pages(0), 0);
  m = index.longest(prompt, 999);
  EXPECT_EQ(m.owner, 1u);
  index.assign(1, {});
  EXPECT_EQ(index.longest(prompt, 999).tokens, 0);
  EXPECT_EQ(index.n_owners(), 0u);
}

class PrefixCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kModel)) GTEST_SKIP() << "needs the demo model " << kModel;
    static std::unique_ptr<Model> loaded = [] {
      auto m = Model::load(kModel);
      EXPECT_TRUE(m.ok()) << m.error();
      return m.ok() ? std::move(*m) : nullptr;
    }();
    ASSERT_NE(loaded, nullptr);
    model_ = loaded.get();
    dir_ = fs::temp_directory_path() / ("kvtier_prefix_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<Session> session(const KvCacheOptions& kv = {}) {
    auto cache = make_kv_cache(model_->config(), kContext, kv, &pool_);
    EXPECT_TRUE(cache.ok()) << cache.error();
    return std::make_unique<Session>(*model_, std::move(*cache), pool_);
  }
  // The last logits after evaluating `tokens` in one append from an empty cache.  [n_vocab]
  std::vector<float> cold_logits(const std::vector<int32_t>& tokens, const KvCacheOptions& kv = {}) {
    auto s = session(kv);
    EXPECT_TRUE(s->append(tokens).ok());
    return s->last_logits();
  }
  std::vector<int32_t> tokens(int n, uint32_t seed) { return sequence(n, seed, model_->config().n_vocab); }
  std::unique_ptr<PrefixDiskCache> open(uint64_t max_bytes, std::vector<std::string>* warnings,
                                        const std::string& policy = "", int max_tokens = kContext) {
    auto probe = session();
    auto disk = PrefixDiskCache::open(dir_.string(), max_bytes, *model_,
                                      policy.empty() ? probe->cache().policy() : policy, max_tokens,
                                      [warnings](const std::string& w) { warnings->push_back(w); });
    EXPECT_TRUE(disk.ok()) << disk.error();
    return disk.ok() ? std::move(*disk) : nullptr;
  }

  Model* model_ = nullptr;
  ThreadPool pool_{2};
  fs::path dir_;
};

TEST_F(PrefixCacheTest, ACopiedF16PrefixContinuesBitForBitAsAColdRun) {
  const std::vector<int32_t> preamble = tokens(3 * kPage + 17, 11);
  const std::vector<int32_t> first = concat(preamble, tokens(90, 12));
  const std::vector<int32_t> second = concat(preamble, tokens(40, 13));
  auto source = session();
  ASSERT_TRUE(source->append(first).ok());
  const size_t source_bytes = source->cache().resident_bytes();

  auto copy = session();
  const size_t empty_bytes = copy->cache().usage().budgeted_bytes;
  ASSERT_TRUE(copy->copy_prefix(*source, 3 * kPage).ok());
  EXPECT_EQ(copy->n_past(), 3 * kPage);
  EXPECT_EQ(copy->tokens(), std::vector<int32_t>(second.begin(), second.begin() + 3 * kPage));
  EXPECT_EQ(source->tokens(), first) << "the source is never changed";
  EXPECT_EQ(source->cache().resident_bytes(), source_bytes);
  ASSERT_TRUE(copy->append(std::vector<int32_t>(second.begin() + 3 * kPage, second.end())).ok());
  const std::vector<float> cold = cold_logits(second);
  ASSERT_EQ(copy->last_logits().size(), cold.size());
  EXPECT_EQ(std::memcmp(copy->last_logits().data(), cold.data(), cold.size() * sizeof(float)), 0)
      << "f16: a copied prefix continues exactly as a cold run";
  copy->clear();
  EXPECT_EQ(copy->cache().usage().budgeted_bytes, empty_bytes) << "pages back to the empty cache's";

  EXPECT_FALSE(copy->copy_prefix(*source, static_cast<int>(first.size()) + 1).ok());
  EXPECT_EQ(copy->n_past(), 0);
  auto ladder = session(KvCacheOptions{.ladder = "f16:64,q8"});
  EXPECT_FALSE(ladder->copy_prefix(*source, kPage).ok()) << "another policy";
}

TEST_F(PrefixCacheTest, WithALadderACopyContinuesAsTheSourceWouldAfterTheSameCut) {
  // A ladder's pages sit at the rungs the source's history put them on, so a copy is exact relative to the
  // source cut at the same place (what a slot's own prefix reuse gives), not to a cold run.
  const KvCacheOptions kv{.ladder = "f16:64,q8:128,q4"};
  const std::vector<int32_t> preamble = tokens(4 * kPage, 21);
  const std::vector<int32_t> first = concat(preamble, tokens(150, 22));
  const std::vector<int32_t> rest = tokens(30, 23);
  auto source = session(kv);
  ASSERT_TRUE(source->append(first).ok());
  auto copy = session(kv);
  ASSERT_TRUE(copy->copy_prefix(*source, 4 * kPage).ok());
  ASSERT_TRUE(copy->append(rest).ok());
  source->truncate(4 * kPage);
  ASSERT_TRUE(source->append(rest).ok());
  ASSERT_EQ(copy->last_logits().size(), source->last_logits().size());
  EXPECT_EQ(std::memcmp(copy->last_logits().data(), source->last_logits().data(),
                        source->last_logits().size() * sizeof(float)),
            0);
}

TEST_F(PrefixCacheTest, TheDiskCacheKeepsFullPagesAcrossOpensAndDropsDamagedEntries) {
  const std::vector<int32_t> conversation = concat(tokens(2 * kPage, 31), tokens(50, 32));  // 2 full pages + 50
  const std::vector<int32_t> two_pages(conversation.begin(), conversation.begin() + 2 * kPage);
  const std::vector<int32_t> prompt = concat(two_pages, tokens(20, 33));
  std::vector<std::string> warnings;
  {
    auto disk = open(1ull << 30, &warnings);
    ASSERT_NE(disk, nullptr);
    EXPECT_EQ(disk->lookup(prompt, 999).tokens, 0);
    auto s = session();
    ASSERT_TRUE(s->append(conversation).ok());
    ASSERT_TRUE(disk->store(*s).ok());
    ASSERT_TRUE(disk->store(*s).ok());  // nothing new: not written again
    EXPECT_EQ(disk->stats().entries, 1u);
    EXPECT_EQ(disk->stats().stored, 1u);
  }
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir_)) files.push_back(e.path());
  ASSERT_EQ(files.size(), 1u);
  EXPECT_EQ(files[0].extension(), ".kvpc");
  {  // a new process: the entry is found by its pages' hashes and continues exactly as a cold run
    auto disk = open(1ull << 30, &warnings);
    ASSERT_NE(disk, nullptr);
    EXPECT_EQ(disk->stats().entries, 1u);
    const PrefixDiskCache::Hit hit = disk->lookup(prompt, static_cast<int>(prompt.size()) - 1);
    ASSERT_EQ(hit.tokens, 2 * kPage);
    auto s = session();
    ASSERT_TRUE(disk->load(hit, prompt, *s).ok());
    EXPECT_EQ(s->n_past(), 2 * kPage);
    ASSERT_TRUE(s->append(std::vector<int32_t>(prompt.begin() + 2 * kPage, prompt.end())).ok());
    const std::vector<float> cold = cold_logits(prompt);
    EXPECT_EQ(std::memcmp(s->last_logits().data(), cold.data(), cold.size() * sizeof(float)), 0);
  }
  EXPECT_TRUE(warnings.empty());
  {  // another policy: another seed; the entry is not its to use or remove
    auto disk = open(1ull << 30, &warnings, "paged f16:64,q4 keys=channel group=64 page=64");
    ASSERT_NE(disk, nullptr);
    EXPECT_EQ(disk->stats().entries, 0u);
    EXPECT_TRUE(fs::exists(files[0]));
  }
  {  // a server with a shorter context: the entry is kept (and counted) but not used
    auto disk = open(1ull << 30, &warnings, "", kPage);
    ASSERT_NE(disk, nullptr);
    EXPECT_EQ(disk->stats().entries, 1u);
    EXPECT_EQ(disk->lookup(prompt, 999).tokens, 0);
    EXPECT_TRUE(fs::exists(files[0]));
  }
  {  // a flipped byte in the cache stream: found by name, refused by the checksum at load, removed
    std::fstream f(files[0], std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(fs::file_size(files[0]) / 2));
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x10);
    f.seekp(static_cast<std::streamoff>(fs::file_size(files[0]) / 2));
    f.write(&c, 1);
  }
  {
    auto disk = open(1ull << 30, &warnings);
    ASSERT_NE(disk, nullptr);
    const PrefixDiskCache::Hit hit = disk->lookup(prompt, 999);
    ASSERT_EQ(hit.tokens, 2 * kPage) << "the header is intact; the damage is found when it is read";
    auto s = session();
    const Status loaded = disk->load(hit, prompt, *s);
    EXPECT_FALSE(loaded.ok());
    EXPECT_NE(loaded.message().find("checksum"), std::string::npos) << loaded.message();
    EXPECT_EQ(s->n_past(), 0);
    EXPECT_EQ(disk->stats().entries, 0u);
    EXPECT_EQ(disk->stats().dropped, 1u);
    EXPECT_EQ(disk->lookup(prompt, 999).tokens, 0);
    EXPECT_FALSE(fs::exists(files[0]));
  }
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("dropped"), std::string::npos) << warnings[0];
  {  // a truncated entry is dropped when the directory is opened
    std::ofstream(dir_ / files[0].filename(), std::ios::binary) << "KVTSESS\n";
    std::ofstream(dir_ / "notes.txt") << "not an entry";
    // A write killed half way (its process, pid 999999999, is gone) leaves a temporary file: removed.
    const fs::path temp = dir_ / ("." + files[0].filename().string() + ".tmp.999999999");
    std::ofstream(temp) << "half";
    auto disk = open(1ull << 30, &warnings);
    ASSERT_NE(disk, nullptr);
    EXPECT_EQ(disk->stats().entries, 0u);
    EXPECT_EQ(disk->stats().dropped, 1u);
    EXPECT_FALSE(fs::exists(files[0]));
    EXPECT_TRUE(fs::exists(dir_ / "notes.txt")) << "files that are no entries are never touched";
    EXPECT_FALSE(fs::exists(temp));
  }
}

TEST_F(PrefixCacheTest, TheDiskCacheStaysWithinItsSizeLeastRecentlyUsedFirst) {
  std::vector<std::string> warnings;
  std::vector<std::vector<int32_t>> conversations;  // [3] one full page and a few tokens each
  for (uint32_t i = 0; i < 3; ++i) conversations.push_back(tokens(kPage + 3, 40 + i));
  uint64_t entry_bytes = 0;
  {
    auto disk = open(1ull << 30, &warnings);
    auto s = session();
    ASSERT_TRUE(s->append(conversations[0]).ok());
    ASSERT_TRUE(disk->store(*s).ok());
    entry_bytes = disk->stats().bytes;
  }
  // Room for two entries: storing the third evicts the least recently used (the second: the first was read).
  auto disk = open(2 * entry_bytes + entry_bytes / 2, &warnings);
  for (int i = 1; i < 3; ++i) {
    if (i == 2) {
      auto reader = session();
      const auto hit = disk->lookup(conversations[0], kPage);
      ASSERT_EQ(hit.tokens, kPage);
      ASSERT_TRUE(disk->load(hit, conversations[0], *reader).ok());
    }
    auto s = session();
    ASSERT_TRUE(s->append(conversations[static_cast<size_t>(i)]).ok());
    ASSERT_TRUE(disk->store(*s).ok());
  }
  EXPECT_EQ(disk->stats().entries, 2u);
  EXPECT_EQ(disk->stats().evicted, 1u);
  EXPECT_LE(disk->stats().bytes, 2 * entry_bytes + entry_bytes / 2);
  EXPECT_EQ(disk->lookup(conversations[0], kPage).tokens, kPage);
  EXPECT_EQ(disk->lookup(conversations[1], kPage).tokens, 0);
  EXPECT_EQ(disk->lookup(conversations[2], kPage).tokens, kPage);
  uint64_t on_disk = 0;
  for (const auto& e : fs::directory_iterator(dir_)) on_disk += fs::file_size(e.path());
  EXPECT_EQ(on_disk, disk->stats().bytes);
  EXPECT_TRUE(warnings.empty());
}

// An entry being read off the owner's thread (pin() .. unpin()) is neither superseded by a longer entry nor
// evicted by the size bound meanwhile; unpin() then applies both.
TEST_F(PrefixCacheTest, APinnedEntryStaysUntilItsReadIsDone) {
  std::vector<std::string> warnings;
  const std::vector<int32_t> turn = tokens(kPage + 3, 60);
  const std::vector<int32_t> next_turn = concat(turn, tokens(kPage, 61));  // holds all of the first one's pages
  uint64_t first_bytes = 0, next_bytes = 0;  // each turn's entry
  for (const std::vector<int32_t>* t : {&next_turn, &turn}) {
    for (const auto& e : fs::directory_iterator(dir_)) fs::remove(e.path());
    auto disk = open(1ull << 30, &warnings);
    auto s = session();
    ASSERT_TRUE(s->append(*t).ok());
    ASSERT_TRUE(disk->store(*s).ok());
    (t == &turn ? first_bytes : next_bytes) = disk->stats().bytes;
  }
  const uint64_t bound = next_bytes + first_bytes / 2;  // the next turn's entry fits, not both
  auto disk = open(bound, &warnings);
  const auto hit = disk->lookup(turn, kPage);
  ASSERT_EQ(hit.tokens, kPage);
  auto file = disk->pin(hit);
  ASSERT_TRUE(file.ok()) << file.error();
  auto s = session();
  ASSERT_TRUE(s->append(next_turn).ok());
  ASSERT_TRUE(disk->store(*s).ok());  // would supersede the first entry, and is over the bound beside it
  EXPECT_TRUE(fs::exists(*file)) << "a pinned entry was removed";
  auto reader = session();
  const Status read = PrefixDiskCache::read(*file, turn, hit.tokens, *reader);
  ASSERT_TRUE(read.ok()) << read.message();
  EXPECT_EQ(reader->tokens(), std::vector<int32_t>(turn.begin(), turn.begin() + kPage));
  EXPECT_TRUE(disk->unpin(hit, read).ok());
  EXPECT_LE(disk->stats().bytes, bound) << "the bound holds again once unpinned";
  EXPECT_EQ(disk->stats().entries, 1u);
  EXPECT_EQ(disk->lookup(next_turn, 2 * kPage).tokens, 2 * kPage) << "the newest entry is kept";
  EXPECT_TRUE(warnings.empty());
}

TEST_F(PrefixCacheTest, ABadCacheDirectoryIsOneClearError) {
  auto probe = session();
  const std::string policy = probe->cache().policy();
  const fs::path file = dir_ / "a_file";
  std::ofstream(file) << "x";
  auto as_file = PrefixDiskCache::open(file.string(), 1 << 20, *model_, policy, kContext, {});
  ASSERT_FALSE(as_file.ok());
  EXPECT_NE(as_file.error().find("not a directory"), std::string::npos) << as_file.error();
  auto no_parent = PrefixDiskCache::open((dir_ / "missing" / "cache").string(), 1 << 20, *model_, policy, kContext, {});
  ASSERT_FALSE(no_parent.ok());
  EXPECT_NE(no_parent.error().find("cannot create"), std::string::npos) << no_parent.error();
  auto created = PrefixDiskCache::open((dir_ / "new").string(), 1 << 20, *model_, policy, kContext, {});
  ASSERT_TRUE(created.ok()) << created.error();
  EXPECT_TRUE(fs::is_directory(dir_ / "new"));
  if (::geteuid() != 0) {  // root writes anywhere
    const fs::path locked = dir_ / "locked";
    fs::create_directories(locked);
    ::chmod(locked.c_str(), 0500);
    auto unwritable = PrefixDiskCache::open(locked.string(), 1 << 20, *model_, policy, kContext, {});
    ::chmod(locked.c_str(), 0700);
    ASSERT_FALSE(unwritable.ok());
    EXPECT_NE(unwritable.error().find("not writable"), std::string::npos) << unwritable.error();
  }
}

}  // namespace
}  // namespace kvtier
