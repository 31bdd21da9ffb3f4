// Saving and restoring a TieredKvStore (sessions): every tier in the page format.
//
// Stream layout (little-endian, after the session file's own header):
//   u32 magic "KVTS", u32 version (4)
//   u32 n_layers, n_kv_heads, head_dim, group, n_sinks, u32 page_bytes[kPrecisionCount], u32 sink page bytes
//   per layer:
//     i32 n_tokens, i64 ring_first, i32 ring_count, u32 n_table_pages, u32 n_released (version 4)
//     sink page                           (sink page bytes; only when n_sinks > 0 and n_tokens > 0)
//     per table page from n_released on: u8 rung, page bytes in that rung's format (cold pages are read back
//                                         and checked first)
//     per ring page: page bytes in the ring's format (f16, or k16vY when the ladder starts quantized)
// The session file checksums the whole stream; load() still validates every count against the geometry
// so that a damaged or foreign stream is refused with a message, never trusted.
#include <cstring>
#include <string>
#include <vector>

#include "kv/tiered_store.h"

namespace kvtier::kv {

namespace {
constexpr uint32_t kMagic = 0x5354564Bu;  // "KVTS"
// 2: value groups of 64, split key/value rungs (page sizes changed); 3: k16vY tail pages (4 more precisions);
// 4: the pages a sliding-window layer released (n_released per layer; version 3 streams load as none released)
constexpr uint32_t kVersion = 4;
constexpr uint32_t kOldestReadable = 3;

template <class T>
Status put(ByteSink& out, T value) {
  return out.write(&value, sizeof value);
}
template <class T>
Status get(ByteSource& in, T* value) {
  return in.read(value, sizeof *value);
}
}  // namespace

std::string TieredKvStore::policy() const {
  return "paged " + options_.ladder.describe() + " keys=" + (keys_rotated() ? "rotated" : "channel") +
         " group=" + std::to_string(format(Precision::Q8).group) + " page=" + std::to_string(kTokensPerPage);
}

Status TieredKvStore::save(ByteSink& out) {
  drain();  // background encodings into the table first: the stream holds settled pages
#define KVTIER_TRY(expr)              \
  if (Status s_ = (expr); !s_.ok()) { \
    return s_;                        \
  }
  KVTIER_TRY(put(out, kMagic));
  KVTIER_TRY(put(out, kVersion));
  for (int v : {geometry_.n_layers, geometry_.n_kv_heads, geometry_.head_dim, format(Precision::Q8).group, n_sinks_}) {
    KVTIER_TRY(put(out, static_cast<uint32_t>(v)));
  }
  for (int p = 0; p < kPrecisionCount; ++p) KVTIER_TRY(put(out, static_cast<uint32_t>(formats_[p].page_bytes)));
  KVTIER_TRY(put(out, static_cast<uint32_t>(n_sinks_ > 0 ? sink_format_.page_bytes : 0)));
  std::vector<uint8_t> cold_page(format(Precision::F16).page_bytes);  // [page_bytes] a cold page read back
  for (int layer = 0; layer < geometry_.n_layers; ++layer) {
    const Layer& l = layers_[layer];
    KVTIER_TRY(put(out, static_cast<int32_t>(l.n_tokens)));
    KVTIER_TRY(put(out, static_cast<int64_t>(l.ring_first)));
    KVTIER_TRY(put(out, static_cast<int32_t>(l.ring_count)));
    KVTIER_TRY(put(out, static_cast<uint32_t>(table_.n_pages(layer))));
    KVTIER_TRY(put(out, static_cast<uint32_t>(l.released)));
    if (n_sinks_ > 0 && l.n_tokens > 0) KVTIER_TRY(out.write(l.sinks, sink_format_.page_bytes));
    for (int64_t i = l.released; i < table_.n_pages(layer); ++i) {
      const int rung = table_.rung(layer, i);
      const PageFormat& f = format(rungs_.rungs[rung].precision);
      KVTIER_TRY(put(out, static_cast<uint8_t>(rung)));
      if (i < cold_end(layer)) {
        KVTIER_TRY(cold_->read_page(layer, i - l.released, cold_page.data()));
        KVTIER_TRY(out.write(cold_page.data(), f.page_bytes));
      } else {
        KVTIER_TRY(out.write(pool_.data(table_.page(layer, i)), f.page_bytes));
      }
    }
    for (int64_t page = l.ring_first; page < l.ring_first + l.ring_count; ++page) {
      KVTIER_TRY(out.write(ring_slot(layer, page), ring_format().page_bytes));
    }
  }
  return Status();
}

void TieredKvStore::clear() {
  drain();
  for (int layer = 0; layer < geometry_.n_layers; ++layer) {
    if (cold_) cold_->truncate(layer, 0);
    for (PageId id : table_.truncate(layer, 0)) {
      if (id.valid()) pool_.release(id);
    }
    layers_[layer].ring_first = 0;
    layers_[layer].ring_count = 0;
    layers_[layer].n_tokens = 0;
    layers_[layer].released = 0;
  }
  if (cold_) cold_->clear_bad_position();
}

Status TieredKvStore::load(ByteSource& in) {
  clear();
  Status status = [&]() -> Status {
    uint32_t magic = 0, version = 0;
    KVTIER_TRY(get(in, &magic));
    KVTIER_TRY(get(in, &version));
    if (magic != kMagic) return Status::error("not a kvtier paged KV stream (bad magic)");
    if (version < kOldestReadable || version > kVersion) {
      return Status::error("paged KV stream version " + std::to_string(version) + " (this build reads versions " +
                           std::to_string(kOldestReadable) + " to " + std::to_string(kVersion) + ")");
    }
    const char* names[] = {"layers", "KV heads", "head_dim", "group", "sinks"};
    const int expected[] = {geometry_.n_layers, geometry_.n_kv_heads, geometry_.head_dim, format(Precision::Q8).group, n_sinks_};
    for (int i = 0; i < 5; ++i) {
      uint32_t v = 0;
      KVTIER_TRY(get(in, &v));
      if (v != static_cast<uint32_t>(expected[i])) {
        return Status::error(std::string("saved cache has ") + std::to_string(v) + " " + names[i] + ", this one " +
                             std::to_string(expected[i]));
      }
    }
    for (int p = 0; p <= kPrecisionCount; ++p) {
      uint32_t bytes = 0;
      KVTIER_TRY(get(in, &bytes));
      const size_t want = p < kPrecisionCount ? formats_[p].page_bytes : (n_sinks_ > 0 ? sink_format_.page_bytes : 0);
      if (bytes != want) return Status::error("saved cache uses another page format (page size " + std::to_string(bytes) +
                                              " bytes where this build has " + std::to_string(want) + ")");
    }
    const int last_rung = static_cast<int>(rungs_.rungs.size()) - 1;
    for (int layer = 0; layer < geometry_.n_layers; ++layer) {
      Layer& l = layers_[layer];
      int32_t n_tokens = 0, ring_count = 0;
      int64_t ring_first = 0;
      uint32_t n_pages = 0, n_released = 0;
      KVTIER_TRY(get(in, &n_tokens));
      KVTIER_TRY(get(in, &ring_first));
      KVTIER_TRY(get(in, &ring_count));
      KVTIER_TRY(get(in, &n_pages));
      if (version >= 4) KVTIER_TRY(get(in, &n_released));
      const std::string where = "saved cache, layer " + std::to_string(layer) + ": ";
      // The positions the pages cover must be exactly what n_tokens says.
      const int64_t covered = n_tokens <= n_sinks_ ? n_tokens : page_first_pos(ring_first + ring_count);
      const bool shape_ok =
          n_tokens >= 0 && (geometry_.max_tokens == 0 || n_tokens <= geometry_.max_tokens) && ring_count >= 0 &&
          ring_count <= ring_pages_ && ring_first == static_cast<int64_t>(n_pages) &&
          (n_tokens <= n_sinks_ ? (n_pages == 0 && ring_count == 0)
                                : (ring_count > 0 && covered >= n_tokens && covered - kTokensPerPage < n_tokens));
      if (!shape_ok) {
        return Status::error(where + "inconsistent shape (" + std::to_string(n_tokens) + " positions, " +
                             std::to_string(n_pages) + " pages, ring " + std::to_string(ring_first) + "+" +
                             std::to_string(ring_count) + ", context " + std::to_string(geometry_.max_tokens) + ")");
      }
      if (layer > 0 && n_tokens != layers_[0].n_tokens) return Status::error(where + "layers hold different lengths");
      // Released pages: only those wholly behind the window of the next position (what this store's window
      // would have released itself), so that every position a later query sees is in the stream.
      const int64_t releasable = std::min<int64_t>(pages_behind_window(layer, n_tokens), n_pages);
      if (n_released > releasable) {
        return Status::error(where + std::to_string(n_released) + " pages released behind a sliding window, but " +
                             (geometry_.window(layer) > 0
                                  ? "its window of " + std::to_string(geometry_.window(layer)) + " at " +
                                        std::to_string(n_tokens) + " positions allows at most " + std::to_string(releasable)
                                  : std::string("this layer has no window")) +
                             " (a cache saved with another window?)");
      }
      if (n_sinks_ > 0 && n_tokens > 0) KVTIER_TRY(in.read(l.sinks, sink_format_.page_bytes));
      for (uint32_t i = 0; i < n_released; ++i) table_.append_released(layer, last_rung);
      l.released = n_released;
      int previous_rung = last_rung;
      for (uint32_t i = n_released; i < n_pages; ++i) {
        uint8_t rung = 0;
        KVTIER_TRY(get(in, &rung));
        if (rung > last_rung || rung > previous_rung) {
          return Status::error(where + "page " + std::to_string(i) + " has rung " + std::to_string(rung) +
                               " (the ladder has " + std::to_string(last_rung + 1) +
                               " rungs, and a page is never at a higher precision than an older one)");
        }
        previous_rung = rung;
        const PageFormat& f = format(rungs_.rungs[rung].precision);
        KVTIER_TRY(make_room(f.page_bytes));
        Result<PageId> id = pool_.allocate(size_class_[static_cast<int>(f.precision)]);
        if (!id.ok()) return id.status();
        table_.append(layer, *id, rung);
        KVTIER_TRY(in.read(pool_.data(*id), f.page_bytes));
      }
      l.ring_first = ring_first;
      l.ring_count = ring_count;
      for (int64_t page = ring_first; page < ring_first + ring_count; ++page) {
        KVTIER_TRY(in.read(ring_slot(layer, page), ring_format().page_bytes));
      }
      l.n_tokens = n_tokens;
    }
    return Status();
  }();
#undef KVTIER_TRY
  if (!status.ok()) {
    clear();
  } else {
    for (const Layer& l : layers_) released_pages_ += l.released;
  }
  return status;
}

}  // namespace kvtier::kv
