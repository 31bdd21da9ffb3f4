// Llama-family transformer models loaded from GGUF: architectures `llama`
// (Llama 2/3.x, Mistral-style, SmolLM2, Mixtral-style MoE), `qwen2`, `qwen3`,
// `qwen3moe`, `smollm3` and `phi3` (see docs/models.md).
//
// The model owns only weights (memory-mapped). The KV cache is passed in to
// every forward call, so one model can serve many sequences and the cache
// implementation can change without touching the forward pass.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kvtier/gguf.h"
#include "kvtier/kernels.h"
#include "kvtier/kv_cache.h"
#include "kvtier/status.h"
#include "kvtier/thread_pool.h"

namespace kvtier {

enum class RopeMode { kNormal, kNeox };  // adjacent pairs (llama) / split halves (qwen2)
enum class RopeScaling { kNone, kLinear, kYarn };

struct ModelConfig {
  std::string architecture;  // "llama", "qwen2", "qwen3", "qwen3moe", "smollm3" or "phi3"
  std::string name;          // general.name, if any
  int n_vocab = 0;
  int n_embd = 0;
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int n_ff = 0;
  int n_ctx_train = 0;
  float rms_eps = 1e-5f;
  RopeMode rope_mode = RopeMode::kNormal;
  int rope_dims = 0;           // rotated dims per head (usually head_dim)
  float rope_freq_base = 10000.0f;
  float rope_freq_scale = 1.0f;  // 1 / linear scaling factor
  bool has_rope_freq_factors = false;  // Llama-3.1 style per-dimension factors (rope_freqs.weight)
  bool tied_embeddings = false;
  bool has_qkv_bias = false;
  // YaRN (rope.scaling.type = yarn): frequencies interpolated by rope_freq_scale below the correction range,
  // extrapolated above it, ramped between (ggml's rope_yarn).
  RopeScaling rope_scaling = RopeScaling::kNone;
  int rope_n_ctx_orig = 0;          // rope.scaling.original_context_length (default: context_length)
  float yarn_beta_fast = 32.0f;
  float yarn_beta_slow = 1.0f;
  float rope_mscale = 1.0f;         // cos/sin scale: rope.scaling.attn_factor (times 1 + 0.1 ln factor for YaRN)
  // LongRoPE (phi3): rope_factors_short / rope_factors_long [rope_dims / 2] divide the frequencies; the long
  // ones when the context exceeds rope_n_ctx_orig (llama.cpp's rule).
  bool has_longrope_factors = false;
  bool has_qk_norm = false;         // qwen3: per-head RMSNorm of q and k before RoPE (attn_{q,k}_norm [head_dim])
  int no_rope_layer_step = 0;       // smollm3: layers l with (l + 1) % step == 0 have no RoPE; 0 = all use RoPE
  bool fused_gate_up = false;       // phi3: ffn_up holds gate rows then up rows, [2 n_ff, n_embd]
  // Routed experts (qwen3moe; Mixtral-style llama): softmax over ffn_gate_inp's logits, the top n_expert_used,
  // their weights renormalised to sum 1 (then scaled by expert_weights_scale when that is not 0).
  int n_expert = 0;                 // 0: dense feed-forward
  int n_expert_used = 0;
  int n_ff_expert = 0;              // hidden width of one expert
  float expert_weights_scale = 0.0f;

  bool layer_uses_rope(int layer) const { return no_rope_layer_step == 0 || (layer + 1) % no_rope_layer_step != 0; }
  // Gemma 2 / 3 (docs/sliding_window.md). `gemma`: embeddings scaled by sqrt(n_embd), RMSNorms after
  // attention and after the FFN (post_attention_norm, post_ffw_norm), GELU-tanh gated FFN.
  bool gemma = false;
  float attn_scale = 0;               // multiplies q.k; 0: 1/sqrt(head_dim)
  float attn_softcap = 0;             // > 0: attention logits soft-capped (gemma2 attn_logit_softcapping)
  float final_softcap = 0;            // > 0: output logits soft-capped (final_logit_softcapping)
  int sliding_window = 0;             // > 0: attention.sliding_window, for the layers layer_is_windowed() names
  int sliding_window_pattern = 0;     // every pattern-th layer (the last of each run) is global
  float rope_freq_base_swa = 10000.0f;  // RoPE of windowed layers (rope.freq_base_swa), unscaled
  float rope_freq_scale_swa = 1.0f;
  bool layer_is_windowed(int layer) const {
    return sliding_window > 0 && (sliding_window_pattern <= 1 || layer % sliding_window_pattern < sliding_window_pattern - 1);
  }
  int layer_window(int layer) const { return layer_is_windowed(layer) ? sliding_window : 0; }

  // Reads and validates {arch}.* keys; errors name the key.
  static Result<ModelConfig> from_gguf(const gguf::File& file);
  KvGeometry kv_geometry(int max_tokens) const {
    KvGeometry g{n_layers, n_kv_heads, head_dim, max_tokens};
    for (int l = 0; l < n_layers && sliding_window > 0; ++l) g.layer_windows.push_back(layer_window(l));
    return g;
  }
};

// Weights of one transformer block. 1-D tensors are f32 [n_embd] (or [dim] for biases).
struct LayerWeights {
  const float* attn_norm = nullptr;  // [n_embd]
  kernels::WeightMatrix wq, wk, wv;  // [n_heads*head_dim | n_kv*head_dim, n_embd]
  const float* bq = nullptr;         // qwen2 biases, [rows] or null
  const float* bk = nullptr;
  const float* bv = nullptr;
  kernels::WeightMatrix wo;          // [n_embd, n_heads*head_dim]
  const float* ffn_norm = nullptr;   // [n_embd]
  kernels::WeightMatrix w_gate, w_up;  // [n_ff, n_embd]
  kernels::WeightMatrix w_down;        // [n_embd, n_ff]
  const float* q_norm = nullptr;     // per-head norms of q and k (qwen3, gemma3), [head_dim] or null
  const float* k_norm = nullptr;
  // Routed experts (empty for a dense layer): views into the 3-D ffn_{gate,up,down}_exps tensors.
  kernels::WeightMatrix router;      // ffn_gate_inp, [n_expert, n_embd]
  std::vector<kernels::WeightMatrix> expert_gate, expert_up;  // [n_expert] of [n_ff_expert, n_embd]
  std::vector<kernels::WeightMatrix> expert_down;              // [n_expert] of [n_embd, n_ff_expert]
  // Gemma: norms of the attention and FFN outputs ([n_embd]).
  const float* attn_post_norm = nullptr;
  const float* ffn_post_norm = nullptr;
};

// One sequence's part of a batched forward pass (Model::forward_segments): tokens at positions [pos, pos + n)
// of its own cache (which must hold exactly `pos` positions), and where its logits go.
struct ForwardSegment {
  const int32_t* tokens = nullptr;  // [n]
  int n = 0;
  int pos = 0;
  KvCache* cache = nullptr;
  int logits_from = 0;              // logits of rows [logits_from, n) are written ...
  float* logits = nullptr;          // ... here: [n - logits_from, n_vocab]; null for none
};

// Progress of a long operation: done and total units (bytes, tokens, ...).
using ProgressFn = std::function<void(uint64_t done, uint64_t total)>;

// A forward pass that runs on a GPU over a KV cache in that GPU's memory (kvtier/device.h): such a cache returns
// it from KvCache::device_forward(), and Model::forward hands it the whole call (after checking the tokens and
// positions), so everything above the model (sessions, perplexity) runs unchanged on either backend.
class DeviceForward {
 public:
  virtual ~DeviceForward() = default;
  // As Model::forward: tokens at positions [pos, pos + n); logits of rows [logits_from, n) into `logits`.
  virtual Status forward(const int32_t* tokens, int n, int pos, int logits_from, float* logits,
                         const ProgressFn& progress) = 0;
};

// Where the weights live once loaded (llama.cpp's default, --mlock and --no-mmap).
enum class WeightResidency {
  kMapped,  // memory-mapped and read on first use: loading reads only the metadata. The kernel is asked to read
            // ahead every tensor but the MoE experts' (an expert's pages come in when a token is routed to it).
  kLocked,  // mapped, then locked in RAM (mlock) at load: never paged out. A lock the system refuses is a
            // warning (load_warnings()) and the weights stay mapped.
  kCopied,  // read into the process's memory at load (checked against the memory available first); the file's
            // pages are not used afterwards.
};

struct ModelLoadOptions {
  WeightResidency residency = WeightResidency::kMapped;
};

class Model {
 public:
  // Maps the file, validates config and every tensor's type and shape, and places the weights as `options`
  // says; `progress` reports the bytes read or locked at load (none when mapped).
  static Result<std::unique_ptr<Model>> load(const std::string& path, const ModelLoadOptions& options,
                                             const ProgressFn& progress = {});
  static Result<std::unique_ptr<Model>> load(const std::string& path, const ProgressFn& progress = {}) {
    return load(path, ModelLoadOptions{}, progress);
  }
  // Config and tensor binding (every check of load()) over a file already open, e.g. gguf::File::from_bytes
  // (the model fuzzer); the weights stay where the file has them. Errors name the key or tensor.
  static Result<std::unique_ptr<Model>> from_file(std::unique_ptr<gguf::File> file);
  // Conditions found at load that do not stop it (e.g. the weights could not be locked).
  const std::vector<std::string>& load_warnings() const { return load_warnings_; }

  const ModelConfig& config() const { return config_; }
  const gguf::File& file() const { return *file_; }
  uint64_t weight_bytes() const { return weight_bytes_; }

  // The weights as bound at load, for the GPU backends, which copy them to device memory (kvtier/device.h).
  const std::vector<LayerWeights>& layer_weights() const { return layers_; }
  const kernels::WeightMatrix& token_embedding() const { return token_embd_; }
  const kernels::WeightMatrix& output_weights() const { return output_; }
  const float* output_norm() const { return output_norm_; }
  // RoPE's per-dimension frequency factors ([rope_dims / 2], or empty): rope_freqs, or LongRoPE's short ones.
  const std::vector<float>& rope_freq_factors() const { return rope_freq_factors_; }

  // Evaluates tokens at positions [pos, pos + n) (the cache must hold exactly
  // `pos` positions), appending their keys and values to the cache. Logits of
  // batch rows [logits_from, n) are written to `logits`: [n - logits_from, n_vocab].
  // Long batches are processed in micro-batches of at most max_batch tokens.
  // A one-segment forward_segments() per micro-batch.
  Status forward(const int32_t* tokens, int n, int pos, KvCache& cache, ThreadPool& pool, int logits_from,
                 float* logits, const ProgressFn& progress = {});

  // Continuous batching: several sequences, each with its own cache, in one pass of at most kMaxBatch tokens in
  // all. The weights are read once for all rows (norms, matmuls, activations run over the rows of every
  // segment together); attention runs per segment over its own cache. Each row's result does not depend on
  // the other rows of the batch (docs/server.md, "Batch invariance"), so a segment's logits equal those of
  // forward() over the same tokens, bit for bit. Errors: a segment that does not follow its cache, overflows
  // it, or holds a token outside the vocabulary; caches shared by two segments; more than kMaxBatch tokens.
  // After an error the caches may hold some layers of the batch's positions: truncate them to what they held.
  Status forward_segments(std::span<const ForwardSegment> segments, ThreadPool& pool);

 private:
  Model() = default;
  Status bind_weights();
  Status bind_experts(const std::string& layer_prefix, LayerWeights& w);  // moe.cpp
  Status check_segment(const ForwardSegment& segment) const;
  Status forward_batch(std::span<const ForwardSegment> segments, ThreadPool& pool);
  void ensure_scratch(int n);
  // The routed-expert feed-forward block (moe.cpp): proj_ rows [0, n) = MoE(xn_ rows [0, n)).
  void moe_ffn(const LayerWeights& w, int n, ThreadPool& pool);

  std::unique_ptr<gguf::File> file_;
  ModelConfig config_;
  kernels::WeightMatrix token_embd_;  // [n_vocab, n_embd]
  kernels::WeightMatrix output_;      // [n_vocab, n_embd] (== token_embd_ when tied)
  const float* output_norm_ = nullptr;
  std::vector<LayerWeights> layers_;
  std::vector<float> rope_freq_factors_;  // [rope_dims / 2] or empty (rope_freqs, or LongRoPE's short factors)
  std::vector<float> rope_factors_long_;  // [rope_dims / 2] or empty (LongRoPE)
  std::vector<std::vector<float>> converted_;  // 1-D tensors stored as F16/BF16 in the file, as f32
  uint64_t weight_bytes_ = 0;
  std::vector<std::string> load_warnings_;

  // Scratch for one micro-batch of up to scratch_tokens_ tokens.
  int scratch_tokens_ = 0;
  std::vector<float> x_;      // [n, n_embd] residual stream
  std::vector<float> xn_;     // [n, n_embd] normalised input of a sub-block
  std::vector<float> q_;      // [n, n_heads*head_dim]
  std::vector<float> k_;      // [n, n_kv*head_dim]
  std::vector<float> v_;      // [n, n_kv*head_dim]
  std::vector<float> attn_;   // [n, n_heads*head_dim]
  std::vector<float> gate_;   // [min(n, kFfnChunk), n_ff]
  std::vector<float> up_;     // [min(n, kFfnChunk), n_ff]
  std::vector<float> proj_;   // [n, n_embd] output of wo / w_down before the residual add
  std::vector<float> rope_;   // [n, rope_dims] RoPE (cos, sin) pairs of each row's position
  std::vector<float> router_;      // [n, n_expert] router logits, then probabilities
  std::vector<float> expert_in_;   // [min(n, kFfnChunk), n_embd] rows of xn_ routed to one expert
  std::vector<float> expert_out_;  // [min(n, kFfnChunk), n_embd] that expert's output for them
  std::vector<float> rope_swa_;  // [n, rope_dims] the same for windowed layers' own base (Gemma 3), or empty
  std::vector<float> logits_;    // [rows asked for, n_vocab] logits of a several-segment batch before they are
                                 // copied to each segment's buffer
};

// Largest number of tokens one forward micro-batch processes.
constexpr int kMaxBatch = 512;
// The feed-forward block runs over a micro-batch in chunks of this many tokens: its two n_ff-wide activations
// are the largest buffers of a prefill (a 512-token batch of a Llama-3.2-1B-shaped model: 32 MiB), and
// chunks of 64 still amortise each decoded weight block over many tokens.
constexpr int kFfnChunk = 64;

// Creates the plain contiguous KV cache (f16 by default) for a model.
std::unique_ptr<KvCache> make_contiguous_kv_cache(const ModelConfig& config, int max_tokens, bool f16 = true);

}  // namespace kvtier
