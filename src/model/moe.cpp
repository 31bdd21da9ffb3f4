// Routed experts (qwen3moe, Mixtral-style llama): binding the 3-D expert tensors and the feed-forward block
// that runs only the experts each token is routed to.
//
// Per token (as llama.cpp's build_moe_ffn with softmax gating and norm_w):
//   p = softmax(xn Wrouter^T)                         [n_expert]
//   chosen = the n_expert_used largest p (ties: lower index first)
//   w_e = p_e / sum_{chosen} p  (times expert_weights_scale when it is set and not 1)
//   out = sum_{e in chosen} w_e * (silu(xn Wgate_e^T) * (xn Wup_e^T)) Wdown_e^T
// Tokens are grouped per expert, so each chosen expert's weights are read once per micro-batch chunk and
// experts no token chose are never touched.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "kvtier/model.h"
#include "model/activation.h"

namespace kvtier {

namespace {

std::string dims_string(const gguf::TensorInfo& t) {
  std::string s = "[";
  for (int i = 0; i < t.n_dims; ++i) s += (i ? ", " : "") + std::to_string(t.ne[i]);
  return s + "]";
}

// Expert e of a 3-D tensor {cols, rows, n_expert} as a [rows, cols] matrix (a view of its bytes).
kernels::WeightMatrix expert_slice(const gguf::TensorInfo& t, int64_t e) {
  const size_t row_bytes = ggml_row_bytes(t.type, t.ne[0]);
  return {t.type, t.data + static_cast<size_t>(e) * t.ne[1] * row_bytes, t.ne[1], t.ne[0], row_bytes};
}

}  // namespace

Status Model::bind_experts(const std::string& p, LayerWeights& w) {
  const ModelConfig& c = config_;
  const gguf::File& f = *file_;
  // The router: [n_expert, n_embd] (ne = {n_embd, n_expert}).
  const std::string router_name = p + "ffn_gate_inp.weight";
  const gguf::TensorInfo* router = f.find_tensor(router_name);
  if (!router) return Status::error("tensor " + router_name + " is missing (expert_count is set)");
  if (router->n_dims != 2 || router->ne[0] != c.n_embd || router->ne[1] != c.n_expert) {
    return Status::error("tensor " + router_name + " has shape " + dims_string(*router) + ", expected [" +
                         std::to_string(c.n_embd) + ", " + std::to_string(c.n_expert) +
                         "] (n_embd, expert_count)");
  }
  if (!kernels::is_supported_weight_type(router->type)) {
    return Status::error("tensor " + router_name + " has type " + ggml_type_name(router->type) +
                         ", which kvtier cannot compute with yet");
  }
  w.router = {router->type, router->data, c.n_expert, c.n_embd, ggml_row_bytes(router->type, c.n_embd)};
  weight_bytes_ += router->n_bytes;

  struct Expected {
    const char* name;
    int64_t cols, rows;
    std::vector<kernels::WeightMatrix>* out;
  };
  const Expected tensors[] = {{"ffn_gate_exps.weight", c.n_embd, c.n_ff_expert, &w.expert_gate},
                              {"ffn_up_exps.weight", c.n_embd, c.n_ff_expert, &w.expert_up},
                              {"ffn_down_exps.weight", c.n_ff_expert, c.n_embd, &w.expert_down}};
  for (const Expected& e : tensors) {
    const std::string name = p + e.name;
    const gguf::TensorInfo* t = f.find_tensor(name);
    if (!t) return Status::error("tensor " + name + " is missing (expert_count is set)");
    if (t->n_dims != 3 || t->ne[0] != e.cols || t->ne[1] != e.rows || t->ne[2] != c.n_expert) {
      return Status::error("tensor " + name + " has shape " + dims_string(*t) + ", expected [" +
                           std::to_string(e.cols) + ", " + std::to_string(e.rows) + ", " +
                           std::to_string(c.n_expert) + "] (expert_count " + std::to_string(c.n_expert) +
                           ", expert hidden size " + std::to_string(c.n_ff_expert) + ")");
    }
    if (!kernels::is_supported_weight_type(t->type)) {
      return Status::error("tensor " + name + " has type " + ggml_type_name(t->type) +
                           ", which kvtier cannot compute with yet");
    }
    e.out->clear();
    for (int64_t x = 0; x < c.n_expert; ++x) e.out->push_back(expert_slice(*t, x));
    weight_bytes_ += t->n_bytes;
  }
  return {};
}

void Model::moe_ffn(const LayerWeights& w, int n, ThreadPool& pool) {
  const ModelConfig& c = config_;
  const int d = c.n_embd;
  const int n_exp = c.n_expert;
  const int k = c.n_expert_used;
  kernels::matmul(w.router, xn_.data(), n, router_.data(), pool);

  // Routing: per expert, the (token, weight) pairs it serves.  routed[e]: tokens in increasing order.
  std::vector<std::vector<std::pair<int, float>>> routed(n_exp);
  std::vector<int> order(n_exp);
  for (int t = 0; t < n; ++t) {
    float* p = router_.data() + static_cast<size_t>(t) * n_exp;
    const float max = *std::max_element(p, p + n_exp);
    double sum = 0;
    for (int e = 0; e < n_exp; ++e) {
      p[e] = std::exp(p[e] - max);
      sum += p[e];
    }
    const float inv = static_cast<float>(1.0 / sum);
    for (int e = 0; e < n_exp; ++e) p[e] *= inv;
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [&](int a, int b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
    float chosen_sum = 0;
    for (int j = 0; j < k; ++j) chosen_sum += p[order[j]];
    chosen_sum = std::max(chosen_sum, 6.103515625e-5f);  // llama.cpp clamps the sum to the smallest normal f16
    for (int j = 0; j < k; ++j) {
      float weight = p[order[j]] / chosen_sum;
      if (c.expert_weights_scale != 0.0f && c.expert_weights_scale != 1.0f) weight *= c.expert_weights_scale;
      routed[order[j]].emplace_back(t, weight);
    }
  }

  std::fill(proj_.begin(), proj_.begin() + static_cast<size_t>(n) * d, 0.0f);
  const int ff = c.n_ff_expert;
  for (int e = 0; e < n_exp; ++e) {
    const auto& tokens = routed[e];
    for (size_t first = 0; first < tokens.size(); first += kFfnChunk) {  // routed tokens [first, first + rows)
      const int rows = static_cast<int>(std::min<size_t>(kFfnChunk, tokens.size() - first));
      for (int r = 0; r < rows; ++r) {
        const float* src = xn_.data() + static_cast<size_t>(tokens[first + r].first) * d;
        std::copy(src, src + d, expert_in_.data() + static_cast<size_t>(r) * d);
      }
      const kernels::MatmulOutput gate_up[] = {{&w.expert_gate[e], gate_.data()}, {&w.expert_up[e], up_.data()}};
      kernels::matmul_shared(gate_up, expert_in_.data(), rows, pool);
      gated_activation(false, gate_.data(), up_.data(), static_cast<size_t>(rows) * ff, pool);  // SwiGLU
      kernels::matmul(w.expert_down[e], gate_.data(), rows, expert_out_.data(), pool);
      for (int r = 0; r < rows; ++r) {
        const auto [token, weight] = tokens[first + r];
        float* dst = proj_.data() + static_cast<size_t>(token) * d;
        const float* out = expert_out_.data() + static_cast<size_t>(r) * d;
        for (int i = 0; i < d; ++i) dst[i] += weight * out[i];
      }
    }
  }
}

}  // namespace kvtier
