#include "model/vulkan/device_kv_pages.h"

#include <fmt/format.h>

#include <algorithm>

#include "kernels/vulkan/vulkan_kernels.h"
#include "kv/tiered_store.h"

namespace kvtier {
namespace {

size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }
bool width_on_device(int bits) { return bits == 16 || bits == 8 || bits == 4 || bits == 2; }

}  // namespace

Result<DeviceKvPages> DeviceKvPages::create(const kv::LadderSpec& ladder, kv::KeyMode key_mode, int n_kv_heads,
                                            int head_dim, int group, int max_tokens, int chunk_tokens) {
  if (ladder.rungs.empty()) return Status::error("--device vulkan: empty KV ladder");
  if (max_tokens <= 0) return Status::error("Vulkan KV cache: the context size must be positive");
  DeviceKvPages t;
  t.ladder_ = ladder;
  t.max_tokens_ = max_tokens;
  t.ring_pages_ = kv::TieredKvStore::ring_pages_for(ladder);
  bool quantized = false;
  for (const kv::Rung& r : ladder.rungs) {
    const kv::Precision p = r.precision;
    if (!width_on_device(kv::key_bits(p)) || !width_on_device(kv::value_bits(p))) {
      return Status::error(fmt::format("--device vulkan: KV precision {} (3-bit codes) does not run on the GPU yet; "
                                       "the Vulkan cache takes f16, q8, q4, q2 and kXvY of 8, 4 and 2 bits",
                                       kv::precision_name(p)));
    }
    quantized |= p != kv::Precision::F16;
  }
  if (quantized && key_mode != kv::KeyMode::PerChannel) {
    return Status::error("--device vulkan: rotated keys (--kv-keys rotated) do not run on the GPU yet; use channel");
  }
  if (group == 0) group = kv::default_group(head_dim);
  if (quantized && group > 64) {
    return Status::error(fmt::format("--device vulkan: value groups of {} channels do not run on the GPU (at most 64)",
                                     group));
  }
  // An all-f16 cache needs no sink page: sinks only matter where older pages lose precision.
  t.n_sinks_ = quantized ? ladder.n_sinks : 0;
  const int64_t max_pages = std::max<int64_t>(1, (std::max(max_tokens - t.n_sinks_, 0) + kv::kTokensPerPage - 1) /
                                                     kv::kTokensPerPage);
  auto add_region = [&](kv::Precision p) -> Status {
    Region r;
    std::string error;
    if (!kv::make_page_format(p, key_mode, kv::kTokensPerPage, n_kv_heads, head_dim, group, &r.format, &error)) {
      return Status::error("--device vulkan: " + error);
    }
    if (!vulkan::Kernels::supports_transcode(r.format)) {  // the shaders read and write whole 32-bit words
      return Status::error(fmt::format("--device vulkan: KV precision {} at head_dim {} does not run on the GPU "
                                       "(a packed value row must be a whole number of 32-bit words)",
                                       kv::precision_name(p), head_dim));
    }
    t.regions_.push_back(std::move(r));
    return {};
  };
  if (Status s = add_region(kv::Precision::F16); !s.ok()) return s;
  const kv::Precision hot = kv::with_hot_rung(ladder).rungs.front().precision;
  if (hot != kv::Precision::F16) {
    if (Status s = add_region(hot); !s.ok()) return s;
    t.hot_region_ = 1;
  }
  for (const kv::Rung& r : ladder.rungs) {
    if (t.region_of(r.precision) < 0) {
      if (Status s = add_region(r.precision); !s.ok()) return s;
    }
  }
  // Slots per region: ceil(T / 64) full pages of a bounded rung, + 2 (the page arriving while the leaving one
  // is still read; the tail); every page for the last rung.
  // The tail's region: the tail, the next tail allocated while the full one waits to move, a promoted page;
  // f16 also the sink page.
  std::vector<int64_t> capacity(t.regions_.size(), 0);
  capacity[0] = 1;
  capacity[t.hot_region_] += 3;
  for (const kv::Rung& r : ladder.rungs) {
    const int region = t.region_of(r.precision);
    capacity[region] += r.tokens < 0 ? max_pages + 1 : (r.tokens + kv::kTokensPerPage - 1) / kv::kTokensPerPage + 2;
  }
  // During a chunk the ring pushes up to ceil(chunk / 64) + 1 pages down the ladder, which stay on their rung
  // until the chunk ends (moves wait for it), and their old slots stay taken until then: a region other than the
  // last rung's (which holds every page of the context already) holds that many more. An all-f16 cache moves
  // nothing.
  const int64_t chunk_slack =
      quantized && chunk_tokens > 1 ? (chunk_tokens + kv::kTokensPerPage - 1) / kv::kTokensPerPage + 1 : 0;
  const int last_region = t.region_of(ladder.rungs.back().precision);
  for (size_t i = 0; i < capacity.size(); ++i) {
    if (static_cast<int>(i) != last_region || static_cast<int>(i) == t.hot_region_) capacity[i] += chunk_slack;
  }
  size_t offset = 0;
  uint32_t list = 0;
  for (size_t i = 0; i < t.regions_.size(); ++i) {
    Region& r = t.regions_[i];
    r.capacity = static_cast<uint32_t>(std::min(capacity[i], max_pages + 3 + chunk_slack));
    offset = align_up(offset, kRegionAlign);
    r.offset = static_cast<uint32_t>(std::min<size_t>(offset, UINT32_MAX));
    offset += static_cast<size_t>(r.capacity) * r.format.page_bytes;
    r.list_base = list;
    list += static_cast<uint32_t>(align_up(r.capacity, kListAlign));
    for (uint32_t s = r.capacity; s > 0; --s) r.free.push_back(s - 1);
  }
  t.layer_bytes_ = align_up(offset, kRegionAlign);
  if (t.layer_bytes_ > UINT32_MAX) {
    return Status::error(fmt::format("--device vulkan: a layer's KV pages at {} tokens ({:.1f} MiB) exceed 4 GiB; lower -c",
                                     max_tokens, t.layer_bytes_ / 1048576.0));
  }
  t.list_entries_ = list;
  return t;
}

int DeviceKvPages::region_of(kv::Precision p) const {
  for (size_t i = 0; i < regions_.size(); ++i) {
    if (regions_[i].format.precision == p) return static_cast<int>(i);
  }
  return -1;
}

Result<uint32_t> DeviceKvPages::allocate(int region) {
  Region& r = regions_[region];
  if (r.free.empty()) {  // the capacities above are upper bounds: this is a bug, not a full cache
    return Status::error(fmt::format("Vulkan KV cache: no free {} slot of {} (page table bug)",
                                     kv::precision_name(r.format.precision), r.capacity));
  }
  const uint32_t slot = r.free.back();
  r.free.pop_back();
  return slot;
}

Result<DeviceKvPages::Page*> DeviceKvPages::plan_position(int pos, bool moves,
                                                           std::vector<std::array<uint32_t, 2>>* zero,
                                                           std::vector<Transcode>* transcodes,
                                                           std::vector<Transcode>* pushed_out,
                                                           std::vector<Page>* leaving, uint32_t* row) {
  if (pos != n_tokens_ || pos >= max_tokens_) {
    return Status::error(fmt::format("Vulkan KV cache: position {} does not follow the {} cached (context {})", pos,
                                     n_tokens_, max_tokens_));
  }
  const int hot_rung = ladder_.rungs.front().precision == kv::Precision::F16 ? 0 : -1;
  auto fresh = [&](int region, Page* p) -> Status {  // a zeroed page: rows not yet written hold zeros
    Result<uint32_t> slot = allocate(region);
    if (!slot.ok()) return slot.status();
    *p = Page{region, *slot, hot_rung};
    zero->push_back({offset_of(*p), static_cast<uint32_t>(regions_[region].format.page_bytes)});
    return {};
  };
  // Moves a page to `rung` (re-encoded where its region changes).
  auto move = [&](Page& p, int rung, std::vector<Transcode>* out) -> Status {
    const int region = region_of(ladder_.rungs[rung].precision);
    if (region != p.region) {
      Result<uint32_t> slot = allocate(region);
      if (!slot.ok()) return slot.status();
      const Page moved{region, *slot, rung};
      out->push_back({p.region, region, offset_of(p), offset_of(moved), kv::kTokensPerPage});
      leaving->push_back(p);
      p = moved;
    }
    p.rung = rung;
    return {};
  };
  Page* target = nullptr;
  size_t index = 0;
  bool entered = false;  // a new page enters the ring at pos
  if (pos < n_sinks_) {
    if (sink_.region < 0) {
      if (Status s = fresh(0, &sink_); !s.ok()) return s;
    }
    target = &sink_;
    *row = static_cast<uint32_t>(pos);
  } else {
    index = static_cast<size_t>(pos - n_sinks_) / kv::kTokensPerPage;
    *row = static_cast<uint32_t>((pos - n_sinks_) % kv::kTokensPerPage);
    if (index >= pages_.size()) pages_.resize(index + 1);
    Page& p = pages_[index];
    if (p.region < 0) {
      if (Status s = fresh(hot_region_, &p); !s.ok()) return s;
      entered = *row == 0;
    } else if (p.region != hot_region_) {  // a page that truncate() left partial: back to the tail's format
      Result<uint32_t> slot = allocate(hot_region_);
      if (!slot.ok()) return slot.status();
      const Page tail{hot_region_, *slot, hot_rung};
      transcodes->push_back({p.region, hot_region_, offset_of(p), offset_of(tail), *row});
      leaving->push_back(p);
      p = tail;
    }
    target = &pages_[index];
  }
  // Full pages whose newest token has left their rung (kv::plan_moves with the cache's n = pos).
  for (size_t i = 0; moves && i < pages_.size(); ++i) {
    const int64_t last_pos = n_sinks_ + static_cast<int64_t>(i + 1) * kv::kTokensPerPage - 1;
    if (last_pos >= pos) break;
    Page& p = pages_[i];
    const int rung = kv::target_rung(ladder_, last_pos, pos);
    if (rung <= p.rung) continue;
    if (Status s = move(p, rung, transcodes); !s.ok()) return s;
    if (i >= ring_first_) ring_first_ = i + 1;  // the ring's oldest pages leave it first
  }
  // A page entering a full ring pushes its oldest page out, to the rung of its newest token now (the CPU
  // store's evict_ring_front).
  if (entered && index >= ring_first_ + static_cast<size_t>(ring_pages_)) {
    Page& oldest = pages_[ring_first_];
    const int64_t last_pos = n_sinks_ + static_cast<int64_t>(ring_first_ + 1) * kv::kTokensPerPage - 1;
    const int rung = kv::target_rung(ladder_, last_pos, pos);
    if (rung > oldest.rung) {
      if (Status s = move(oldest, rung, pushed_out); !s.ok()) return s;
    }
    ++ring_first_;
  }
  n_tokens_ = pos + 1;
  return target;
}

Result<DeviceKvPages::StepPlan> DeviceKvPages::plan_step(int pos) {
  StepPlan plan;
  std::vector<std::array<uint32_t, 2>> zero;
  std::vector<Page> leaving;  // slots freed once every allocation of the step is made
  uint32_t row = 0;
  // A step's pushed-out page goes with its moves, before its attention (only chunks fill the ring past what
  // the moves empty: a step pushes out pages that stay on the f16 rung, with nothing to re-encode).
  Result<Page*> target = plan_position(pos, true, &zero, &plan.transcodes, &plan.transcodes, &leaving, &row);
  if (!target.ok()) return target.status();
  if (!zero.empty()) {
    plan.zero_offset = zero.back()[0];
    plan.zero_bytes = zero.back()[1];
  }
  plan.write_slot = row;
  plan.write_offset = offset_of(**target);
  plan.write_format = &regions_[(*target)->region].format;
  for (const Page& p : leaving) regions_[p.region].free.push_back(p.slot);
  return plan;
}

Result<DeviceKvPages::ChunkPlan> DeviceKvPages::plan_chunk(int pos, int n) {
  if (n <= 0 || pos < n_sinks_ || pos + n > max_tokens_) {
    return Status::error(fmt::format("Vulkan KV cache: a chunk of {} positions at {} (context {}, {} sinks)", n, pos,
                                     max_tokens_, n_sinks_));
  }
  ChunkPlan plan;
  // Slots left by the moves before the chunk are read only by the re-encodes recorded first, so they take the
  // chunk's new pages (zeroed after those re-encodes); slots left during the chunk are freed at its end (its
  // layers read them until then).
  std::vector<Page> leaving;
  for (int p = pos; p < pos + n; ++p) {
    uint32_t row = 0;
    Result<Page*> target = plan_position(p, p == pos, &plan.zero, &plan.before, &plan.after_write, &leaving, &row);
    if (!target.ok()) return target.status();
    if (p == pos) {
      for (const Page& left : leaving) regions_[left.region].free.push_back(left.slot);
      leaving.clear();
    }
    const uint32_t index = static_cast<uint32_t>((p - n_sinks_) / kv::kTokensPerPage);
    if (plan.ring_offsets.empty()) plan.first_ring_page = index;
    if (index - plan.first_ring_page >= plan.ring_offsets.size()) plan.ring_offsets.push_back(offset_of(**target));
  }
  // The attention's lists: every page up to the chunk's last position, with its rows at the chunk's end.
  plan.lists.assign(regions_.size(), {});
  const int64_t end = static_cast<int64_t>(pos) + n;
  if (sink_.region >= 0) {
    const uint32_t rows = static_cast<uint32_t>(std::min<int64_t>(end, n_sinks_));
    plan.lists[sink_.region].push_back({offset_of(sink_), rows, 0, 0});
  }
  for (size_t i = 0; i < pages_.size(); ++i) {
    const int64_t first = n_sinks_ + static_cast<int64_t>(i) * kv::kTokensPerPage;
    if (first >= end || pages_[i].region < 0) break;
    plan.lists[pages_[i].region].push_back({offset_of(pages_[i]),
                                            static_cast<uint32_t>(std::min<int64_t>(kv::kTokensPerPage, end - first)),
                                            static_cast<uint32_t>(first), 0});
  }
  for (const Page& p : leaving) regions_[p.region].free.push_back(p.slot);
  return plan;
}

void DeviceKvPages::page_lists(int pos, std::vector<std::vector<uint32_t>>* lists) const {
  lists->assign(regions_.size(), {});
  const int64_t n = static_cast<int64_t>(pos) + 1;
  auto add = [&](const Page& p, int64_t valid) {
    (*lists)[p.region].push_back(offset_of(p));
    (*lists)[p.region].push_back(static_cast<uint32_t>(valid));
  };
  if (sink_.region >= 0 && n > 0) add(sink_, std::min<int64_t>(n, n_sinks_));
  for (size_t i = 0; i < pages_.size(); ++i) {
    const int64_t first = n_sinks_ + static_cast<int64_t>(i) * kv::kTokensPerPage;
    if (first >= n || pages_[i].region < 0) break;
    add(pages_[i], std::min<int64_t>(kv::kTokensPerPage, n - first));
  }
}

void DeviceKvPages::truncate(int n) {
  n = std::clamp(n, 0, n_tokens_);
  for (size_t i = 0; i < pages_.size(); ++i) {
    const int64_t first = n_sinks_ + static_cast<int64_t>(i) * kv::kTokensPerPage;
    Page& p = pages_[i];
    if (first >= n && p.region >= 0) {
      regions_[p.region].free.push_back(p.slot);
      p = Page{};
    }
  }
  // The page holding the last kept position is on the ring again (the CPU store's truncate puts it back).
  if (n > n_sinks_) {
    ring_first_ = std::min(ring_first_, static_cast<size_t>(n - n_sinks_ - 1) / kv::kTokensPerPage);
  } else {
    ring_first_ = 0;
  }
  if (n == 0 && sink_.region >= 0) {
    regions_[0].free.push_back(sink_.slot);
    sink_ = Page{};
  }
  n_tokens_ = n;
}

size_t DeviceKvPages::live_bytes() const {
  size_t bytes = 0;
  for (const Region& r : regions_) bytes += static_cast<size_t>(r.capacity - r.free.size()) * r.format.page_bytes;
  return bytes;
}

std::string DeviceKvPages::describe_usage() const {
  std::string s;
  for (const Region& r : regions_) {
    if (!s.empty()) s += ", ";
    s += fmt::format("{} {}/{} pages", kv::precision_name(r.format.precision), r.capacity - r.free.size(), r.capacity);
  }
  return s;
}

}  // namespace kvtier
