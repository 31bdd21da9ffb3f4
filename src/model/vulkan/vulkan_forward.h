// The forward pass on the Vulkan backend (kvtier/device.h): the weights of a dense llama-family model
// (`llama`, `qwen2`) in device memory, activations in device buffers, and a KV cache in the project's page
// format (kv/page_format.h) in a device buffer: f16 pages, or a precision ladder's, re-encoded on the GPU as
// they age (device_kv_pages.h); attended by the decode-attention shader, one dispatch per page format.
// Built only with KVTIER_VULKAN.
//
// One token step is one command batch (one submit): embedding row and RoPE table row written on the host into
// a mapped buffer, copied in; the ladder's page moves and the page lists; per layer RMSNorm, q/k/v products (+ qwen2 biases), RoPE, the new K/V row
// written into its page, split-K decode attention over the layer's pages and the merge, the output
// projection and residual add, RMSNorm, gate/up products, SwiGLU, down product and residual add; then, when
// the step's logits are wanted, the final RMSNorm and output product, copied back to a mapped buffer.
//
// A prompt runs in chunks of up to DeviceOptions::prefill_chunk tokens, one command batch each: the same
// sequence over [T][...] activations, the products as matrix-matrix shaders (each weight tile decoded once per 64
// tokens), the chunk's K/V rows written in one dispatch, and causal attention in one dispatch per layer (each
// page read once per block of query rows); logits only for the rows asked for.
#pragma once

#include <memory>

#include "kvtier/device.h"

namespace kvtier {

Result<std::unique_ptr<DeviceModel>> open_vulkan_model(const Model& model, const DeviceOptions& options,
                                                       const ProgressFn& progress);

}  // namespace kvtier
