// disk_bandwidth: the read bandwidth of the spill directory's disk, measured with the cold tier's own page
// file (O_DIRECT where the filesystem allows it, io_uring), so that `kvtier bench --kv-cold exact` can be
// compared with what the disk delivers on the same machine (docs/benchmarks.md, bench/cold_tier_bench.sh).
//
//   build/tools/disk_bandwidth --dir /work/spill --mib 1024
//
// Writes a file of --mib MiB in 64 KiB extents, then reads all of it back three ways: 1 MiB requests with 16
// in flight (what the disk can do), and page-slot-sized requests (default 32 KiB, the f16 page of the test
// models; 8 KiB for their q2 pages) with 64 and with 16 in flight (the cold tier's pattern), and re-reads a
// working set (default 64 MiB) four times, as exact cold reads do every step. Reads bypass
// the page cache when the file is O_DIRECT (reported); otherwise the numbers include the cache.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "kv/page_file.h"

namespace {
double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}
}  // namespace

int main(int argc, char** argv) {
  using namespace kvtier;
  std::string dir = ".";
  size_t mib = 512;
  size_t slot_kib = 32;
  size_t working_mib = 64;
  CLI::App app{"Read bandwidth of a directory's disk through kvtier's page file (O_DIRECT, io_uring)"};
  app.add_option("--dir", dir, "directory to measure (the --kv-spill directory)");
  app.add_option("--mib", mib, "file size in MiB (default 512; larger than RAM caches if not O_DIRECT)");
  app.add_option("--slot-kib", slot_kib, "page-slot read size in KiB (default 32)");
  app.add_option("--working-mib", working_mib, "working set re-read 4 times (default 64: the exact tier's pattern)");
  CLI11_PARSE(app, argc, argv);

  auto file = kv::PageFile::create(dir);
  if (!file.ok()) {
    std::fprintf(stderr, "disk_bandwidth: %s\n", file.error().c_str());
    return 1;
  }
  kv::PageFile& f = **file;
  const size_t chunk = 1 << 20;
  size_t total = mib * chunk;
  auto* buffer = static_cast<uint8_t*>(std::aligned_alloc(kv::kFileBlock, 16 * chunk));  // [16 MiB] in-flight reads
  std::memset(buffer, 0x5A, 16 * chunk);
  // Write: 1 MiB slots, 16 per batch.
  std::vector<uint64_t> offsets;
  const auto write_start = std::chrono::steady_clock::now();
  for (size_t done = 0; done < total; done += 16 * chunk) {
    std::vector<kv::PageFile::Write> writes;
    for (size_t i = 0; i < 16 && done + i * chunk < total; ++i) {
      auto offset = f.allocate_slot(chunk);
      if (!offset.ok()) {
        std::fprintf(stderr, "disk_bandwidth: %s\n", offset.error().c_str());
        return 1;
      }
      offsets.push_back(*offset);
      writes.push_back({*offset, buffer + i * chunk, chunk});
    }
    if (Status s = f.write_batch(writes); !s.ok()) {
      std::fprintf(stderr, "disk_bandwidth: %s\n", s.message().c_str());
      return 1;
    }
  }
  const double write_s = seconds_since(write_start);
  std::printf("page file in %s: %s, %s; %zu MiB\n", dir.c_str(), f.direct() ? "O_DIRECT" : "buffered (page cache!)",
              f.uring() ? "io_uring" : "pread/pwrite", mib);
  std::printf("write 1 MiB x16 in flight: %.2f GB/s\n", total / write_s / 1e9);
  // Reads of `request` bytes covering the whole file, `depth` in flight (one ticket per request group).
  auto read_all = [&](size_t request, size_t depth) -> double {
    const auto start = std::chrono::steady_clock::now();
    uint64_t ticket = 1;
    for (size_t at = 0; at < total;) {
      const size_t group = std::min(depth, (total - at) / request);
      for (size_t i = 0; i < group; ++i) {
        const size_t pos = at + i * request;
        const uint64_t offset = offsets[pos / chunk] + pos % chunk;
        if (!f.submit_read(ticket, offset, request, buffer + (i * request) % (16 * chunk)).ok()) return -1;
      }
      if (!f.wait(ticket).ok()) return -1;
      ++ticket;
      at += group * request;
    }
    return total / seconds_since(start) / 1e9;
  };
  std::printf("read 1 MiB x16 in flight: %.2f GB/s\n", read_all(chunk, 16));
  std::printf("read %zu KiB x64 in flight: %.2f GB/s\n", slot_kib, read_all(slot_kib << 10, 64));
  std::printf("read %zu KiB x16 in flight: %.2f GB/s\n", slot_kib, read_all(slot_kib << 10, 16));
  // The exact cold tier re-reads the same working set every step; a virtual disk may cache it on the host.
  const size_t saved_total = total;
  total = std::min(total, working_mib * chunk);
  double reread = 0;
  for (int pass = 0; pass < 4; ++pass) reread = read_all(chunk, 16);  // the last of 4 passes
  total = saved_total;
  std::printf("re-read a %zu MiB working set (1 MiB x16, 4th pass): %.2f GB/s\n", std::min(mib, working_mib), reread);
  std::free(buffer);
  return 0;
}
