// The forward pass against an independent, naive double-precision transformer
// on small synthetic models written with the GGUF writer. Covers what the shared
// models do not: qwen2 (QKV biases, NeoX RoPE), Llama-3.1 rope frequency factors,
// linear rope scaling, untied output — and that broken model files are refused.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>

#include "kvtier/gguf_writer.h"
#include "kvtier/model.h"

namespace kvtier {
namespace {

struct Spec {
  std::string arch = "llama";
  int vocab = 64, embd = 32, layers = 2, heads = 4, kv_heads = 2, ff = 48;
  float rope_base = 10000.0f;
  float linear_scale = 1.0f;  // rope.scaling.factor; 1 = none
  bool freq_factors = false;
  bool tied = false;
  int head_dim() const { return embd / heads; }
};

using Tensors = std::map<std::string, std::vector<float>>;  // name -> row-major values

// Random weights for every tensor of the spec; shapes follow GGUF (ne0 = columns).
Tensors make_weights(const Spec& s, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.3f);
  Tensors t;
  auto fill = [&](const std::string& name, size_t n, float base = 0.0f) {
    auto& v = t[name];
    v.resize(n);
    for (float& x : v) x = base + normal(rng);
  };
  const int hd = s.head_dim();
  fill("token_embd.weight", static_cast<size_t>(s.vocab) * s.embd);
  if (!s.tied) fill("output.weight", static_cast<size_t>(s.vocab) * s.embd);
  fill("output_norm.weight", s.embd, 1.0f);
  if (s.freq_factors) {
    auto& f = t["rope_freqs.weight"];
    for (int i = 0; i < hd / 2; ++i) f.push_back(1.0f + i * 0.5f);
  }
  for (int l = 0; l < s.layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    fill(p + "attn_norm.weight", s.embd, 1.0f);
    fill(p + "attn_q.weight", static_cast<size_t>(s.heads) * hd * s.embd);
    fill(p + "attn_k.weight", static_cast<size_t>(s.kv_heads) * hd * s.embd);
    fill(p + "attn_v.weight", static_cast<size_t>(s.kv_heads) * hd * s.embd);
    fill(p + "attn_output.weight", static_cast<size_t>(s.embd) * s.heads * hd);
    if (s.arch == "qwen2") {
      fill(p + "attn_q.bias", static_cast<size_t>(s.heads) * hd);
      fill(p + "attn_k.bias", static_cast<size_t>(s.kv_heads) * hd);
      fill(p + "attn_v.bias", static_cast<size_t>(s.kv_heads) * hd);
    }
    fill(p + "ffn_norm.weight", s.embd, 1.0f);
    fill(p + "ffn_gate.weight", static_cast<size_t>(s.ff) * s.embd);
    fill(p + "ffn_up.weight", static_cast<size_t>(s.ff) * s.embd);
    fill(p + "ffn_down.weight", static_cast<size_t>(s.embd) * s.ff);
  }
  return t;
}

std::vector<int64_t> dims_of(const Spec& s, const std::string& name) {
  const int hd = s.head_dim();
  auto ends = [&](const char* suffix) { return name.size() >= std::strlen(suffix) && name.compare(name.size() - std::strlen(suffix), std::string::npos, suffix) == 0; };
  if (name == "token_embd.weight" || name == "output.weight") return {s.embd, s.vocab};
  if (ends("attn_q.weight")) return {s.embd, s.heads * hd};
  if (ends("attn_k.weight") || ends("attn_v.weight")) return {s.embd, s.kv_heads * hd};
  if (ends("attn_output.weight")) return {s.heads * hd, s.embd};
  if (ends("ffn_gate.weight") || ends("ffn_up.weight")) return {s.embd, s.ff};
  if (ends("ffn_down.weight")) return {s.ff, s.embd};
  return {static_cast<int64_t>(0)};  // 1-D: filled by the caller
}

std::string write_model(const Spec& s, const Tensors& t, const std::string& file_name,
                        const std::string& skip_tensor = "", int metadata_ff = 0) {
  gguf::GgufWriter w;
  w.set_string("general.architecture", s.arch);
  const std::string a = s.arch + ".";
  w.set_u32(a + "embedding_length", s.embd);
  w.set_u32(a + "block_count", s.layers);
  w.set_u32(a + "feed_forward_length", metadata_ff > 0 ? metadata_ff : s.ff);
  w.set_u32(a + "attention.head_count", s.heads);
  w.set_u32(a + "attention.head_count_kv", s.kv_heads);
  w.set_u32(a + "context_length", 256);
  w.set_f32(a + "attention.layer_norm_rms_epsilon", 1e-5f);
  w.set_f32(a + "rope.freq_base", s.rope_base);
  if (s.linear_scale != 1.0f) {
    w.set_string(a + "rope.scaling.type", "linear");
    w.set_f32(a + "rope.scaling.factor", s.linear_scale);
  }
  for (const auto& [name, values] : t) {
    if (name == skip_tensor) continue;
    std::vector<int64_t> dims = dims_of(s, name);
    if (dims.size() == 1) dims[0] = static_cast<int64_t>(values.size());
    EXPECT_TRUE(w.add_tensor_f32(name, dims, values).ok()) << name;
  }
  const std::string path = (std::filesystem::path(::testing::TempDir()) / file_name).string();
  EXPECT_TRUE(w.write_file(path).ok());
  return path;
}

// ---- the naive reference transformer (double precision, textbook formulas) ----
std::vector<double> naive_logits(const Spec& s, const Tensors& t, const std::vector<int32_t>& tokens) {
  const int hd = s.head_dim(), n = static_cast<int>(tokens.size()), group = s.heads / s.kv_heads;
  auto W = [&](const std::string& name) -> const std::vector<float>& { return t.at(name); };
  auto matvec = [](const std::vector<float>& w, const std::vector<double>& x, int rows) {
    const int cols = static_cast<int>(x.size());
    std::vector<double> y(rows, 0.0);
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) y[r] += w[static_cast<size_t>(r) * cols + c] * x[c];
    return y;
  };
  auto rmsnorm = [](const std::vector<double>& x, const std::vector<float>& g) {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double inv = 1.0 / std::sqrt(ss / x.size() + 1e-5);
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * g[i];
    return y;
  };
  auto rope = [&](std::vector<double>& v, int n_h, int pos) {
    for (int h = 0; h < n_h; ++h) {
      for (int i = 0; i < hd / 2; ++i) {
        double freq = std::pow(static_cast<double>(s.rope_base), -2.0 * i / hd);
        if (s.freq_factors) freq /= W("rope_freqs.weight")[i];
        const double angle = pos * freq / s.linear_scale;
        const int a = s.arch == "qwen2" ? i : 2 * i;
        const int b = s.arch == "qwen2" ? i + hd / 2 : 2 * i + 1;
        double& x0 = v[h * hd + a];
        double& x1 = v[h * hd + b];
        const double r0 = x0 * std::cos(angle) - x1 * std::sin(angle);
        const double r1 = x0 * std::sin(angle) + x1 * std::cos(angle);
        x0 = r0;
        x1 = r1;
      }
    }
  };
  std::vector<std::vector<double>> x(n, std::vector<double>(s.embd));
  for (int i = 0; i < n; ++i)
    for (int d = 0; d < s.embd; ++d) x[i][d] = W("token_embd.weight")[static_cast<size_t>(tokens[i]) * s.embd + d];
  for (int l = 0; l < s.layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    std::vector<std::vector<double>> q(n), k(n), v(n);
    for (int i = 0; i < n; ++i) {
      auto xn = rmsnorm(x[i], W(p + "attn_norm.weight"));
      q[i] = matvec(W(p + "attn_q.weight"), xn, s.heads * hd);
      k[i] = matvec(W(p + "attn_k.weight"), xn, s.kv_heads * hd);
      v[i] = matvec(W(p + "attn_v.weight"), xn, s.kv_heads * hd);
      if (s.arch == "qwen2") {
        for (size_t j = 0; j < q[i].size(); ++j) q[i][j] += W(p + "attn_q.bias")[j];
        for (size_t j = 0; j < k[i].size(); ++j) k[i][j] += W(p + "attn_k.bias")[j];
        for (size_t j = 0; j < v[i].size(); ++j) v[i][j] += W(p + "attn_v.bias")[j];
      }
      rope(q[i], s.heads, i);
      rope(k[i], s.kv_heads, i);
    }
    for (int i = 0; i < n; ++i) {
      std::vector<double> attn(s.heads * hd, 0.0);
      for (int h = 0; h < s.heads; ++h) {
        const int kvh = h / group;
        std::vector<double> score(i + 1);
        double mx = -1e300;
        for (int j = 0; j <= i; ++j) {
          double dot = 0;
          for (int d = 0; d < hd; ++d) dot += q[i][h * hd + d] * k[j][kvh * hd + d];
          score[j] = dot / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, score[j]);
        }
        double sum = 0;
        for (double& sc : score) sum += sc = std::exp(sc - mx);
        for (int j = 0; j <= i; ++j)
          for (int d = 0; d < hd; ++d) attn[h * hd + d] += score[j] / sum * v[j][kvh * hd + d];
      }
      auto o = matvec(W(p + "attn_output.weight"), attn, s.embd);
      for (int d = 0; d < s.embd; ++d) x[i][d] += o[d];
      auto xn = rmsnorm(x[i], W(p + "ffn_norm.weight"));
      auto g = matvec(W(p + "ffn_gate.weight"), xn, s.ff);
      auto u = matvec(W(p + "ffn_up.weight"), xn, s.ff);
      for (int f = 0; f < s.ff; ++f) g[f] = g[f] / (1 + std::exp(-g[f])) * u[f];
      auto down = matvec(W(p + "ffn_down.weight"), g, s.embd);
      for (int d = 0; d < s.embd; ++d) x[i][d] += down[d];
    }
  }
  auto xn = rmsnorm(x[n - 1], W("output_norm.weight"));
  return matvec(W(s.tied ? "token_embd.weight" : "output.weight"), xn, s.vocab);
}

void expect_engine_matches_naive(const Spec& s, const std::string& file_name) {
  const Tensors t = make_weights(s, 1234);
  const std::string path = write_model(s, t, file_name);
  auto model = Model::load(path);
  ASSERT_TRUE(model.ok()) << model.error();
  const std::vector<int32_t> tokens = {1, 17, 5, 42, 63, 0, 8, 30, 2};
  const std::vector<double> expected = naive_logits(s, t, tokens);
  ThreadPool pool(2);
  auto cache = make_contiguous_kv_cache((*model)->config(), 32, /*f16=*/false);
  std::vector<float> logits(s.vocab);  // [n_vocab] for the last token
  ASSERT_TRUE((*model)->forward(tokens.data(), static_cast<int>(tokens.size()), 0, *cache, pool,
                                static_cast<int>(tokens.size()) - 1, logits.data()).ok());
  double max_abs = 0;
  for (double e : expected) max_abs = std::max(max_abs, std::fabs(e));
  for (int v = 0; v < s.vocab; ++v) EXPECT_NEAR(logits[v], expected[v], 2e-4 * std::max(1.0, max_abs)) << "vocab " << v;
}

TEST(Architecture, LlamaWithGqaMatchesNaiveReference) { expect_engine_matches_naive(Spec{}, "arch_llama.gguf"); }

TEST(Architecture, LlamaTiedEmbeddingsFreqFactorsAndLinearScaling) {
  Spec s;
  s.tied = true;
  s.freq_factors = true;
  s.linear_scale = 4.0f;
  s.rope_base = 500000.0f;
  expect_engine_matches_naive(s, "arch_llama31.gguf");
}

TEST(Architecture, Qwen2BiasesAndNeoxRopeMatchNaiveReference) {
  Spec s;
  s.arch = "qwen2";
  s.kv_heads = 1;
  expect_engine_matches_naive(s, "arch_qwen2.gguf");
}

TEST(Architecture, MissingOrMisshapenTensorsAreRefusedByName) {
  Spec s;
  Tensors t = make_weights(s, 7);
  auto missing = Model::load(write_model(s, t, "arch_missing.gguf", "blk.1.ffn_up.weight"));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().find("blk.1.ffn_up.weight"), std::string::npos) << missing.error();

  Spec qwen;
  qwen.arch = "qwen2";
  Tensors tq = make_weights(qwen, 7);
  auto no_bias = Model::load(write_model(qwen, tq, "arch_nobias.gguf", "blk.0.attn_k.bias"));
  ASSERT_FALSE(no_bias.ok());
  EXPECT_NE(no_bias.error().find("blk.0.attn_k.bias"), std::string::npos) << no_bias.error();

  // Metadata says feed_forward_length 56 while the FFN tensors have 48 rows.
  auto misshapen = Model::load(write_model(s, t, "arch_shape.gguf", "", /*metadata_ff=*/56));
  ASSERT_FALSE(misshapen.ok());
  EXPECT_NE(misshapen.error().find("ffn_gate.weight"), std::string::npos) << misshapen.error();
  EXPECT_NE(misshapen.error().find("shape"), std::string::npos) << misshapen.error();
}

}  // namespace
}  // namespace kvtier
