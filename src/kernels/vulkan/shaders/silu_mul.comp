#version 450
// SwiGLU gating: out[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + e^-g).
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 256;

layout(push_constant) uniform Push { uint n; } pc;

layout(binding = 0) readonly buffer GateBuf { float gate[]; };  // [n]
layout(binding = 1) readonly buffer UpBuf { float up[]; };      // [n]
layout(binding = 2) writeonly buffer OutBuf { float out_[]; };  // [n]

void main() {
  const uint i = gl_GlobalInvocationID.x;
  if (i >= pc.n) return;
  const float g = gate[i];
  out_[i] = g / (1.0 + exp(-g)) * up[i];
}
