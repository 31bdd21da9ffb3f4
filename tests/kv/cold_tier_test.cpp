// The cold tier: the page file (io_uring reads and writes, checksums), spilling past the budget, reading
// cold pages back byte-exact, truncation into cold pages, save/load with cold pages, damage detection,
// bad spill directories, ENOSPC, and `kvtier plan`'s arithmetic against a real store.
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "kv/capacity_plan.h"
#include "kv/codec.h"
#include "kv/page_file.h"
#include "kv/tiered_store.h"
#include "common/test_util.h"
#include "common/tiered_store_util.h"

namespace kvtier::kv {
namespace {

using ::kvtier::testing::random_rows;
using ::kvtier::testing::MemoryStream;

// Temporary directories of these tests.
struct TempDir : ::kvtier::testing::TempDir {
  TempDir() : ::kvtier::testing::TempDir("kvtier-cold") {}
};

const KvGeometry kGeometry = ::kvtier::testing::kStoreGeometry;

std::unique_ptr<TieredKvStore> make_store(const char* ladder, size_t budget, const std::string& dir,
                                          ColdReadMode mode = ColdReadMode::Exact) {
  return ::kvtier::testing::make_test_store(ladder, budget, dir, {.mode = mode});
}

// A store whose budget is its fixed part (rings, sinks, cold-tier buffers) plus `extra` bytes for pages.
std::unique_ptr<TieredKvStore> make_budgeted(const char* ladder, size_t extra, const std::string& dir) {
  auto probe = make_store(ladder, size_t{1} << 40, dir);
  return make_store(ladder, probe->fixed_bytes() + extra, dir);
}

void fill(TieredKvStore& store, int first, int n, uint32_t seed) { ::kvtier::testing::fill_test_store(store, first, n, seed); }
std::vector<uint8_t> page_bytes(TieredKvStore& store, int layer, int64_t i) {
  return ::kvtier::testing::store_page_bytes(store, layer, i);
}

TEST(PageFile, WritesAndReadsSlotsAsynchronously) {
  TempDir dir;
  auto file = PageFile::create(dir.path());
  ASSERT_TRUE(file.ok()) << file.error();
  PageFile& f = **file;
  const size_t slot = PageFile::slot_bytes(5000);
  EXPECT_EQ(slot, 8192u);
  std::vector<uint64_t> offsets;
  auto* buffer = static_cast<uint8_t*>(std::aligned_alloc(kFileBlock, 4 * slot));
  std::vector<PageFile::Write> writes;
  for (int i = 0; i < 4; ++i) {
    offsets.push_back(*f.allocate_slot(slot));
    std::memset(buffer + i * slot, 'a' + i, slot);
    writes.push_back({offsets.back(), buffer + i * slot, slot});
  }
  ASSERT_TRUE(f.write_batch(writes).ok());
  EXPECT_EQ(f.stats().file_bytes % kFileExtentAlign, 0u);
  auto* in = static_cast<uint8_t*>(std::aligned_alloc(kFileBlock, 4 * slot));
  for (int i = 3; i >= 0; --i) ASSERT_TRUE(f.submit_read(7, offsets[i], slot, in + (3 - i) * slot).ok());
  ASSERT_TRUE(f.wait(7).ok());
  for (int i = 0; i < 4; ++i) EXPECT_EQ(in[i * slot + 100], 'a' + 3 - i);
  // Truncated under us: a short read is an error that says so.
  ASSERT_EQ(::ftruncate(f.fd_for_testing(), 4096), 0);
  ASSERT_TRUE(f.submit_read(8, offsets[3], slot, in).ok());
  Status s = f.wait(8);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("short read"), std::string::npos) << s.message();
  std::free(buffer);
  std::free(in);
  // Nothing is left in the directory: the file has no name.
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

TEST(PageFile, RefusesBadDirectories) {
  TempDir dir;
  EXPECT_NE(PageFile::create(dir.path() + "/missing").status().message().find("No such file"), std::string::npos);
  const std::string file = dir.path() + "/plain";
  std::fclose(std::fopen(file.c_str(), "w"));
  EXPECT_NE(PageFile::create(file).status().message().find("not a directory"), std::string::npos);
  EXPECT_FALSE(PageFile::create("").ok());
}

TEST(ColdTier, SpillsPastTheBudgetAndReadsPagesBackExactly) {
  TempDir dir;
  for (const char* ladder : {"f16", "f16:64,q4:128,q2"}) {
    auto reference = make_store(ladder, 0, "");
    auto store = make_budgeted(ladder, 100 << 10, dir.path());
    ASSERT_TRUE(reference && store);
    for (int step = 0; step < 30; ++step) {  // 30 x 70 = 2100 tokens
      fill(*reference, step * 70, 70, step);
      fill(*store, step * 70, 70, step);
      EXPECT_LE(store->budget_resident_bytes(), store->fixed_bytes() + (100 << 10)) << ladder << " step " << step;
    }
    ASSERT_GT(store->n_cold(0), 10) << ladder;
    EXPECT_EQ(store->budget_warning(), "");
    for (int layer = 0; layer < kGeometry.n_layers; ++layer) {
      // Cold prefixes stay even across layers (oldest first from the layer with the most spillable pages).
      EXPECT_LE(std::abs(store->n_cold(layer) - store->n_cold(0)), 8);
      std::vector<PageRef> a, b;
      reference->gather_pages(layer, a);
      store->gather_pages(layer, b);
      ASSERT_EQ(a.size(), b.size());
      for (int64_t i = 0; i + store->lead_entries(layer) < static_cast<int64_t>(b.size()) - 3; ++i) {
        EXPECT_EQ(page_bytes(*reference, layer, i), page_bytes(*store, layer, i)) << ladder << " layer " << layer << " page " << i;
      }
    }
    const KvMemoryReport m = store->memory();
    EXPECT_GT(m.cold_pages, 0u);
    EXPECT_EQ(m.cold_disk_bytes, m.cold_pages * PageFile::slot_bytes(store->format(ladder[3] == ':' ? Precision::Q2 : Precision::F16).page_bytes));
  }
}

TEST(ColdTier, TruncateIntoColdPagesRestoresTheKeptRows) {
  TempDir dir;
  auto reference = make_store("f16:64,q4:128,q2", 0, "");
  auto store = make_budgeted("f16:64,q4:128,q2", 60 << 10, dir.path());
  for (int step = 0; step < 20; ++step) {
    fill(*reference, step * 100, 100, step);
    fill(*store, step * 100, 100, step);
  }
  const int cut = 4 + 64 * 3 + 17;  // inside logical page 3, which is cold
  ASSERT_GT(store->n_cold(1), 4);
  reference->truncate(cut);
  store->truncate(cut);
  EXPECT_EQ(store->n_cold(1), 3);
  fill(*reference, cut, 300, 99);
  fill(*store, cut, 300, 99);
  for (int layer = 0; layer < kGeometry.n_layers; ++layer) {
    std::vector<PageRef> a;
    reference->gather_pages(layer, a);
    for (int64_t i = 0; i + reference->lead_entries(layer) < static_cast<int64_t>(a.size()) - 3; ++i) {
      EXPECT_EQ(page_bytes(*reference, layer, i), page_bytes(*store, layer, i)) << "layer " << layer << " page " << i;
    }
  }
}

TEST(ColdTier, DamagedPageIsDetectedNeverUsed) {
  TempDir dir;
  auto store = make_budgeted("f16:64,q2", 30 << 10, dir.path());
  for (int step = 0; step < 20; ++step) fill(*store, step * 100, 100, step);
  ASSERT_GT(store->n_cold(0), 2);
  ColdTier& cold = *store->cold();
  // Flip one bit of cold page 1 of layer 0 in the file itself.
  const ColdPage victim = cold.page(0, 1);
  uint8_t byte = 0;
  const int fd = cold.file().fd_for_testing();
  const int buffered = ::open(("/proc/self/fd/" + std::to_string(fd)).c_str(), O_RDWR);  // without O_DIRECT
  ASSERT_GE(buffered, 0);
  ASSERT_EQ(::pread(buffered, &byte, 1, static_cast<off_t>(victim.offset + 77)), 1);
  byte ^= 0x10;
  ASSERT_EQ(::pwrite(buffered, &byte, 1, static_cast<off_t>(victim.offset + 77)), 1);
  ::fsync(buffered);
  ::close(buffered);
  std::vector<uint8_t> out(victim.format->page_bytes);
  EXPECT_TRUE(cold.read_page(0, 0, out.data()).ok());
  Status s = cold.read_page(0, 1, out.data());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("checksum"), std::string::npos) << s.message();
  EXPECT_EQ(cold.first_bad_position(), victim.first_pos);
  // Cutting the cache before the damage forgets it.
  store->truncate(victim.first_pos);
  EXPECT_EQ(cold.first_bad_position(), -1);
  EXPECT_EQ(store->n_cold(0), 0);  // the cut falls at the end of page 0, whose rows came back into the ring
  EXPECT_EQ(store->n_tokens(0), victim.first_pos);
}

TEST(ColdTier, SaveLoadCarriesColdPages) {
  TempDir dir;
  auto store = make_budgeted("f16:64,q4:128,q2", 60 << 10, dir.path());
  for (int step = 0; step < 15; ++step) fill(*store, step * 100, 100, step);
  ASSERT_GT(store->n_cold(0), 3);
  MemoryStream buffer;
  ASSERT_TRUE(store->save(buffer).ok());
  // Into an unbudgeted store, and into another budgeted one (which spills again as it loads).
  for (size_t budget : {size_t{0}, store->fixed_bytes() + (60 << 10)}) {
    auto copy = make_store("f16:64,q4:128,q2", budget, budget ? dir.path() : "");
    buffer.read_at = 0;
    Status s = copy->load(buffer);
    ASSERT_TRUE(s.ok()) << s.message();
    EXPECT_EQ(copy->n_tokens(2), 1500);
    for (int layer = 0; layer < kGeometry.n_layers; ++layer) {
      std::vector<PageRef> a;
      store->gather_pages(layer, a);
      for (int64_t i = 0; i + store->lead_entries(layer) < static_cast<int64_t>(a.size()) - 3; ++i) {
        EXPECT_EQ(page_bytes(*store, layer, i), page_bytes(*copy, layer, i));
      }
    }
  }
  // A stream cut anywhere is refused and leaves the store empty.
  for (size_t cut : {size_t{3}, size_t{40}, buffer.bytes.size() / 2, buffer.bytes.size() - 1}) {
    MemoryStream cut_buffer;
    cut_buffer.bytes.assign(buffer.bytes.begin(), buffer.bytes.begin() + static_cast<std::ptrdiff_t>(cut));
    auto copy = make_store("f16:64,q4:128,q2", 0, "");
    EXPECT_FALSE(copy->load(cut_buffer).ok());
    EXPECT_EQ(copy->n_tokens(0), 0);
  }
  // Another ladder's store refuses it (another page format or rung count).
  auto other = make_store("q8", 0, "");
  buffer.read_at = 0;
  EXPECT_FALSE(other->load(buffer).ok());
}

TEST(ColdTier, BudgetBelowTheFixedPartIsRefused) {
  TempDir dir;
  TieredKvOptions options;
  options.ladder = *parse_ladder("f16:512,q4", 4);
  options.budget_bytes = 64 << 10;
  options.cold.spill_dir = dir.path();
  Result<std::unique_ptr<TieredKvStore>> s = TieredKvStore::create(kGeometry, options);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().find("below the fixed part"), std::string::npos) << s.error();
}

TEST(ColdTier, WarmRungsOverTheBudgetGiveAWarningNotAFailure) {
  TempDir dir;
  auto store = make_budgeted("f16:64,q8:1024,q2", 20 << 10, dir.path());
  ASSERT_TRUE(store);
  for (int step = 0; step < 12; ++step) fill(*store, step * 100, 100, step);
  EXPECT_NE(store->budget_warning().find("warm rungs"), std::string::npos) << store->budget_warning();
}

// ENOSPC: the spill directory is a 256 KiB tmpfs (needs root and mount namespaces; run in a child).
TEST(ColdTier, DiskFullKeepsRunningInRamWithAWarning) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a small tmpfs";
  TempDir dir;
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::mount("tmpfs", dir.path().c_str(), "tmpfs", 0, "size=64k") != 0) {
      ::_exit(77);  // no mount namespaces here
    }
    auto store = make_budgeted("f16:64,q2", 30 << 10, dir.path());
    for (int step = 0; step < 40; ++step) fill(*store, step * 100, 100, step);
    const bool warned = store->budget_warning().find("spilling to disk stopped") != std::string::npos &&
                        store->budget_warning().find("No space left") != std::string::npos;
    // Everything already cold is still readable; the newest tokens stayed in RAM.
    const bool readable = page_bytes(*store, 0, 0).size() > 0 && store->n_tokens(2) == 4000;
    store.reset();
    const bool empty = std::filesystem::is_empty(dir.path());  // no partial file left behind
    ::_exit(warned && readable && empty ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  if (WEXITSTATUS(status) == 77) GTEST_SKIP() << "mount namespaces unavailable";
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// EIO: the spill directory is an ext4 filesystem on a loop device whose backing file is then cut short,
// so the kernel fails reads and writes of the page file with EIO (needs root, losetup and mkfs.ext4).
TEST(ColdTier, IoErrorsAreReportedAndNeverUsed) {
  if (::geteuid() != 0 || std::system("command -v losetup >/dev/null && command -v mkfs.ext4 >/dev/null") != 0) {
    GTEST_SKIP() << "needs root, losetup and mkfs.ext4";
  }
  TempDir dir;
  const std::string image = dir.path() + "/disk.img", mount_point = dir.path() + "/mnt";
  std::filesystem::create_directory(mount_point);
  ASSERT_EQ(std::system(("truncate -s 32M " + image + " && mkfs.ext4 -q -F " + image + " >/dev/null 2>&1").c_str()), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) ::_exit(77);
    FILE* p = ::popen(("losetup -f --show " + image + " 2>/dev/null").c_str(), "r");
    char device[64] = {0};
    if (p == nullptr || std::fgets(device, sizeof device, p) == nullptr) ::_exit(77);
    ::pclose(p);
    device[std::strcspn(device, "\n")] = 0;
    const auto detach = [&] { (void)std::system(("losetup -d " + std::string(device)).c_str()); };
    if (::mount(device, mount_point.c_str(), "ext4", 0, nullptr) != 0) {
      detach();
      ::_exit(77);
    }
    int code = 0;
    {
      auto store = make_budgeted("f16:64,q2", 30 << 10, mount_point);
      for (int step = 0; step < 20; ++step) fill(*store, step * 100, 100, step);
      if (store->n_cold(0) < 4) code |= 1;
      // The disk fails under the running cache.
      if (::truncate(image.c_str(), 1 << 20) != 0) code |= 2;
      ColdTier& cold = *store->cold();
      std::vector<uint8_t> page(store->format(Precision::Q2).page_bytes);
      int failures = 0;
      for (int64_t i = 0; i < store->n_cold(0); ++i) {
        Status s = cold.read_page(0, i, page.data());
        if (!s.ok()) {
          ++failures;
          if (s.message().find("Input/output error") == std::string::npos) code |= 4;
        }
      }
      if (failures == 0 || cold.first_bad_position() < 0) code |= 8;
      // The store keeps working (writes past the cut extend the loop's backing file, so they succeed here;
      // failing writes are the ENOSPC test's case).
      for (int step = 20; step < 30; ++step) fill(*store, step * 100, 100, step);
      if (store->n_tokens(2) != 3000) code |= 32;
    }
    ::umount2(mount_point.c_str(), MNT_DETACH);
    detach();
    ::_exit(code);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  if (WEXITSTATUS(status) == 77) GTEST_SKIP() << "loop devices or mount namespaces unavailable";
  EXPECT_EQ(WEXITSTATUS(status), 0) << "failed checks (bits): 1 no cold pages, 2 truncate, 4 message, 8 no read "
                                       "failure, 32 lost tokens";
}

TEST(CapacityPlan, MatchesWhatTheStoreHolds) {
  TempDir dir;
  for (const char* ladder : {"f16", "f16:128,q4:256,q2"}) {
    auto store = make_budgeted(ladder, 150 << 10, dir.path());
    const size_t budget = store->fixed_bytes() + (150 << 10);
    TieredKvOptions options;
    options.ladder = *parse_ladder(ladder, 4);
    options.budget_bytes = budget;
    options.cold.mode = ColdReadMode::Exact;
    Result<CapacityPlan> plan = plan_capacity(kGeometry, options, 4000);
    ASSERT_TRUE(plan.ok()) << plan.error();
    EXPECT_EQ(plan->ring_bytes + plan->sink_bytes + plan->cold_fixed_bytes, store->fixed_bytes()) << ladder;
    // Fill 16 tokens at a time until the first page goes cold: the plan's RAM capacity, within two pages.
    int tokens = 0;
    while (store->n_cold(0) + store->n_cold(1) + store->n_cold(2) == 0 && tokens < 4000) {
      fill(*store, tokens, 16, tokens);
      tokens += 16;
    }
    EXPECT_NEAR(tokens, plan->tokens_in_ram, 2 * kTokensPerPage) << ladder;
    // At 4000 tokens, the cold count the plan predicts, within two pages per layer.
    fill(*store, tokens, 4000 - tokens, 7);
    const double cold_tokens_per_layer = static_cast<double>(store->memory().cold_pages) * kTokensPerPage / kGeometry.n_layers;
    EXPECT_NEAR(cold_tokens_per_layer, static_cast<double>(plan->cold_tokens), 2.0 * kTokensPerPage) << ladder;
  }
}

}  // namespace
}  // namespace kvtier::kv

namespace kvtier::kv {
namespace {

// Background re-encoding ends in exactly the pages synchronous re-encoding makes (and with a budget, the
// same spills): the same sequence of prefill batches and decode steps, then both stores saved byte for byte.
TEST(BackgroundReencode, SettlesToTheSynchronousPages) {
  TempDir dir;
  for (size_t extra : {size_t{0}, size_t{40} << 10}) {
    // 0: synchronous, 1: a thread of the store's own, 2: tasks posted to a pool that fills the cores.
    std::vector<MemoryStream> saved(3);
    ThreadPool pool(0);
    for (int background = 0; background < 3; ++background) {
      TieredKvOptions options;
      options.ladder = *parse_ladder("f16:64,q4:128,q2", 4);
      options.background_reencode = background > 0;
      options.background_pool = background == 2 ? &pool : nullptr;
      options.cold.spill_dir = dir.path();
      if (extra > 0) {
        options.budget_bytes = size_t{1} << 40;
        options.budget_bytes = TieredKvStore::create(kGeometry, options).value()->fixed_bytes() + extra;
      }
      auto store = TieredKvStore::create(kGeometry, options).value();
      EXPECT_EQ(store->background_reencode(), background > 0);
      fill(*store, 0, 700, 1);  // prefill batches
      for (int t = 700; t < 1300; ++t) fill(*store, t, 1, t);  // decode steps
      if (extra > 0) EXPECT_GT(store->n_cold(0), 0);
      EXPECT_GT(store->reencoded_pages(), 20);
      ASSERT_TRUE(store->save(saved[background]).ok());
    }
    EXPECT_EQ(saved[0].bytes, saved[1].bytes) << "budget extra " << extra;
    EXPECT_EQ(saved[0].bytes, saved[2].bytes) << "budget extra " << extra;
  }
}

}  // namespace
}  // namespace kvtier::kv
