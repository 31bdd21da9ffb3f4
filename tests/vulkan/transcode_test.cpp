// The ladder's re-encode shader (kv_transcode.comp) against the CPU codec (kv::encode_page, kv::transcode_page):
// every format the attention shader reads, from f16 and from quantized pages, full and partial pages, head
// sizes with one and several value groups. Checked: the bytes (most equal: the fit's sums and the GPU's
// division round apart only now and then), and each group's squared error within 2% of the CPU's own for the
// same group, decoded by the CPU decoder (the definition of the format).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "kernels/kernel_test_util.h"
#include "kv/codec.h"
#include "kvtier/f16.h"
#include "vulkan_test_util.h"

namespace kvtier::vulkan {
namespace {

using kernels::testing::random_floats;
using kv::Precision;
using testing::VulkanTest;

struct Geometry {
  int n_kv_heads, head_dim, group;
};

kv::PageFormat make_format(Precision p, const Geometry& g) {
  kv::PageFormat f;
  std::string error;
  EXPECT_TRUE(kv::make_page_format(p, kv::KeyMode::PerChannel, kv::kTokensPerPage, g.n_kv_heads, g.head_dim, g.group,
                                   &f, &error))
      << error;
  return f;
}

// Squared error of each group of `got` against `want` (both [n][n_kv_heads][head_dim]): key channels over the
// tokens, then value groups per token.
std::vector<double> group_errors(const kv::PageFormat& f, const std::vector<float>& want_k,
                                 const std::vector<float>& got_k, const std::vector<float>& want_v,
                                 const std::vector<float>& got_v, int n) {
  std::vector<double> out;
  const int kv_dim = f.n_kv_heads * f.head_dim;
  for (int c = 0; c < kv_dim; ++c) {
    double e = 0;
    for (int t = 0; t < n; ++t) e += std::pow(static_cast<double>(got_k[t * kv_dim + c]) - want_k[t * kv_dim + c], 2);
    out.push_back(e);
  }
  for (int t = 0; t < n; ++t) {
    for (int g = 0; g < kv_dim / f.group; ++g) {
      double e = 0;
      for (int i = g * f.group; i < (g + 1) * f.group; ++i) {
        e += std::pow(static_cast<double>(got_v[t * kv_dim + i]) - want_v[t * kv_dim + i], 2);
      }
      out.push_back(e);
    }
  }
  return out;
}

class TranscodeTest : public VulkanTest {
 protected:
  // Encodes random keys and values of n rows at `from` on the CPU, transcodes on the GPU to `to`, and compares
  // with the CPU's encoding of the same (decoded) input at `to`.
  void check(Precision from_p, Precision to_p, const Geometry& geometry, int n, uint32_t seed) {
    SCOPED_TRACE(::testing::Message() << kv::precision_name(from_p) << " -> " << kv::precision_name(to_p) << ", "
                                      << geometry.n_kv_heads << " heads x " << geometry.head_dim << " (group "
                                      << geometry.group << "), " << n << " rows");
    const kv::PageFormat from = make_format(from_p, geometry), to = make_format(to_p, geometry);
    const int kv_dim = geometry.n_kv_heads * geometry.head_dim;
    std::mt19937 rng(seed);
    // Keys with per-channel offsets and an outlier channel (what KIVI's per-channel groups are for).
    std::vector<float> k = random_floats(rng, kv::kTokensPerPage * kv_dim, 1.5f);
    const std::vector<float> v = random_floats(rng, kv::kTokensPerPage * kv_dim, 1.0f);
    for (int t = 0; t < kv::kTokensPerPage; ++t) {
      for (int c = 0; c < kv_dim; ++c) k[t * kv_dim + c] += 0.25f * static_cast<float>(c % 7) - (c == 3 ? 6.0f : 0.0f);
    }
    std::vector<uint8_t> source(from.page_bytes);
    kv::encode_page(from, k.data(), v.data(), n, source.data());
    // The input the GPU sees: the source page decoded.
    std::vector<float> xk(static_cast<size_t>(kv::kTokensPerPage) * kv_dim), xv(xk.size());
    kv::decode_page(from, source.data(), n, xk.data(), xv.data());
    std::vector<uint8_t> want(to.page_bytes);
    if (n == kv::kTokensPerPage) {
      std::vector<float> sk(xk.size()), sv(xv.size());
      kv::transcode_page(from, source.data(), to, want.data(), sk.data(), sv.data());
    } else {
      ASSERT_TRUE(from.key_bits != to.key_bits && from.value_bits != to.value_bits);  // no shared sections
      kv::encode_page(to, xk.data(), xv.data(), n, want.data());
    }

    // The pool: a guard word page, the source, the target (zeroed: padding stays zero, as encode_page's).
    const size_t src_offset = 256, dst_offset = src_offset + from.page_bytes + 64;
    Buffer pool = device_buffer(dst_offset + to.page_bytes + 256);
    ASSERT_TRUE(context_->upload(pool, src_offset, source.data(), source.size()).ok());
    Result<CommandBatch> batch = context_->begin();
    ASSERT_TRUE(batch.ok());
    batch->fill(pool, 0, src_offset, 0x7FC00000u);
    batch->fill(pool, dst_offset - 64, 64, 0x7FC00000u);
    batch->fill(pool, dst_offset, to.page_bytes, 0);
    batch->fill(pool, dst_offset + to.page_bytes, 256, 0x7FC00000u);
    batch->barrier();
    Status s = kernels_->transcode_page(*batch, from, to, pool, src_offset, dst_offset, n);
    ASSERT_TRUE(s.ok()) << s.message();
    ASSERT_TRUE(context_->submit(*batch).ok());
    std::vector<uint8_t> all(pool.size());
    ASSERT_TRUE(context_->download(pool, 0, all.data(), all.size()).ok());
    std::vector<uint8_t> got(all.begin() + dst_offset, all.begin() + dst_offset + to.page_bytes);
    EXPECT_EQ(0, std::memcmp(all.data() + src_offset, source.data(), source.size())) << "the source changed";
    for (size_t at : {size_t{0}, dst_offset - 64, dst_offset + to.page_bytes}) {
      uint32_t word;
      std::memcpy(&word, all.data() + at, 4);
      EXPECT_EQ(word, 0x7FC00000u) << "the shader wrote outside its page, near byte " << at;
    }

    size_t same = 0;
    for (size_t i = 0; i < got.size(); ++i) same += got[i] == want[i];
    const double same_fraction = static_cast<double>(same) / got.size();
    std::vector<float> gk(xk.size()), gv(xk.size()), wk(xk.size()), wv(xk.size());
    kv::decode_page(to, got.data(), n, gk.data(), gv.data());
    kv::decode_page(to, want.data(), n, wk.data(), wv.data());
    const std::vector<double> got_err = group_errors(to, xk, gk, xv, gv, n);
    const std::vector<double> want_err = group_errors(to, xk, wk, xv, wv, n);
    double got_sum = 0, want_sum = 0;
    int worse = 0;
    for (size_t i = 0; i < got_err.size(); ++i) {
      got_sum += got_err[i], want_sum += want_err[i];
      // A group's error may exceed the CPU's only by the rounding of a parameter (a few ulps of f16).
      if (got_err[i] > want_err[i] * 1.02 + 1e-9) ++worse;
    }
    EXPECT_EQ(worse, 0) << "groups whose error exceeds the CPU codec's";
    EXPECT_LE(got_sum, want_sum * 1.001 + 1e-9);
    EXPECT_GE(same_fraction, 0.98) << "bytes equal to the CPU codec's";
    // Rows past n decode to zero (code 0, zero parameters or f16 zero).
    std::vector<float> fk(xk.size()), fv(xk.size());
    kv::decode_page(to, got.data(), kv::kTokensPerPage, fk.data(), fv.data());
    for (size_t i = static_cast<size_t>(n) * kv_dim; i < fk.size(); ++i) {
      if (to.key_bits == 16) {
        ASSERT_EQ(fk[i], 0.0f) << "key element " << i;
      }
      ASSERT_EQ(fv[i], 0.0f) << "value element " << i;
    }
    std::printf("%-5s -> %-5s %dx%d/g%d %2d rows: %.4f of bytes equal, squared error %.6g (CPU %.6g)\n",
                kv::precision_name(from_p), kv::precision_name(to_p), geometry.n_kv_heads, geometry.head_dim,
                geometry.group, n, same_fraction, got_sum, want_sum);
  }
};

// Every rung a ladder can reach from the hot f16 page on the device, on a full page and at two geometries.
TEST_F(TranscodeTest, FromF16ToEveryFormatTheAttentionShaderReads) {
  const Precision targets[] = {Precision::Q8,   Precision::Q4,   Precision::Q2,   Precision::K8V4, Precision::K8V2,
                               Precision::K4V8, Precision::K4V2, Precision::K2V8, Precision::K2V4};
  uint32_t seed = 1;
  for (const Geometry& g : {Geometry{2, 64, 64}, Geometry{3, 80, 16}}) {
    for (Precision to : targets) check(Precision::F16, to, g, kv::kTokensPerPage, seed++);
  }
}

// Partial pages (odd row counts, a single row) and a head of several value groups (head_dim 48, group 16).
TEST_F(TranscodeTest, PartialPagesAndSeveralValueGroups) {
  uint32_t seed = 100;
  for (int n : {1, 37, 63}) {
    for (Precision to : {Precision::Q4, Precision::Q2, Precision::K8V2}) {
      check(Precision::F16, to, Geometry{3, 48, 16}, n, seed++);
    }
  }
  check(Precision::Q4, Precision::F16, Geometry{2, 64, 64}, 29, seed++);  // back to f16 (a truncated tail)
}

// Down the ladder from quantized pages: sections of unchanged width are copied, the others re-encoded from the
// decoded page.
TEST_F(TranscodeTest, BetweenQuantizedRungs) {
  uint32_t seed = 200;
  const std::pair<Precision, Precision> moves[] = {{Precision::Q8, Precision::Q4},
                                                   {Precision::Q4, Precision::Q2},
                                                   {Precision::Q8, Precision::K4V2},
                                                   {Precision::K8V4, Precision::K2V4},
                                                   {Precision::Q4, Precision::K2V4}};
  for (const auto& [from, to] : moves) check(from, to, Geometry{2, 64, 64}, kv::kTokensPerPage, seed++);
}

// The hot tail page of a ladder that starts quantized (k16vY): rows written one at a time as tokens arrive, f16
// keys and per-token quantized values, against kv::write_rows (the CPU store's writer), 37 rows of 3 heads of 80.
TEST_F(TranscodeTest, KvWriteRowFillsAK16VyTailPageAsTheCpuWriterDoes) {
  for (Precision p : {Precision::K16V8, Precision::K16V4, Precision::K16V2}) {
    SCOPED_TRACE(kv::precision_name(p));
    const kv::PageFormat f = make_format(p, Geometry{3, 80, 16});
    const int rows = 37, kv_dim = f.n_kv_heads * f.head_dim;
    std::mt19937 rng(7);
    const std::vector<float> k = random_floats(rng, rows * kv_dim, 2.0f), v = random_floats(rng, rows * kv_dim, 1.0f);
    std::vector<uint8_t> want(f.page_bytes, 0);
    kv::write_rows(f, want.data(), 0, rows, k.data(), v.data());
    Buffer pool = device_buffer(f.page_bytes), kb = upload(k), vb = upload(v);
    Result<CommandBatch> batch = context_->begin();
    ASSERT_TRUE(batch.ok());
    batch->fill(pool, 0, f.page_bytes, 0);
    batch->barrier();
    for (int t = 0; t < rows; ++t) {
      const size_t at = static_cast<size_t>(t) * kv_dim * sizeof(float);
      Status s = kernels_->write_kv_row(*batch, f, pool, 0, t, BufferRange(kb, at, kv_dim * sizeof(float)),
                                        BufferRange(vb, at, kv_dim * sizeof(float)));
      ASSERT_TRUE(s.ok()) << s.message();
      batch->barrier();  // rows t and t + 1 share key words
    }
    ASSERT_TRUE(context_->submit(*batch).ok());
    std::vector<uint8_t> got(f.page_bytes);
    ASSERT_TRUE(context_->download(pool, 0, got.data(), got.size()).ok());
    size_t same = 0;
    for (size_t i = 0; i < got.size(); ++i) same += got[i] == want[i];
    std::printf("%s tail page, %d rows: %.5f of bytes equal\n", kv::precision_name(p), rows,
                static_cast<double>(same) / got.size());
    EXPECT_GE(static_cast<double>(same) / got.size(), 0.999);
    std::vector<float> gk(static_cast<size_t>(rows) * kv_dim), gv(gk.size()), wk(gk.size()), wv(gk.size());
    kv::decode_page(f, got.data(), rows, gk.data(), gv.data());
    kv::decode_page(f, want.data(), rows, wk.data(), wv.data());
    EXPECT_EQ(gk, wk) << "f16 keys";
    double got_err = 0, want_err = 0;
    for (size_t i = 0; i < gv.size(); ++i) {
      got_err += std::pow(static_cast<double>(gv[i]) - v[i], 2), want_err += std::pow(static_cast<double>(wv[i]) - v[i], 2);
    }
    EXPECT_LE(got_err, want_err * 1.001 + 1e-9);
  }
}

TEST_F(TranscodeTest, RefusesFormatsTheShaderDoesNotWrite) {
  const kv::PageFormat f16 = make_format(Precision::F16, Geometry{2, 64, 64});
  const kv::PageFormat q3 = make_format(Precision::Q3, Geometry{2, 64, 64});
  Buffer pool = device_buffer(f16.page_bytes + q3.page_bytes);
  Result<CommandBatch> batch = context_->begin();
  ASSERT_TRUE(batch.ok());
  Status s = kernels_->transcode_page(*batch, f16, q3, pool, 0, static_cast<uint32_t>(f16.page_bytes), 64);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("q3"), std::string::npos) << s.message();
  s = kernels_->transcode_page(*batch, f16, f16, pool, 0, 64, 64);  // overlapping pages
  EXPECT_FALSE(s.ok());
  // 2-bit value rows of 40 channels are 10 bytes: not whole words, which the shaders read and write.
  const kv::PageFormat f16_40 = make_format(Precision::F16, Geometry{1, 40, 8});
  const kv::PageFormat q2_40 = make_format(Precision::Q2, Geometry{1, 40, 8});
  s = kernels_->transcode_page(*batch, f16_40, q2_40, pool, 0, static_cast<uint32_t>(f16_40.page_bytes), 64);
  EXPECT_FALSE(s.ok());
}

}  // namespace
}  // namespace kvtier::vulkan
