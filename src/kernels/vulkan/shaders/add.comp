#version 450
// In-place add with a repeating addend: x[i] += y[i % n_y]. The residual adds of the forward pass (n_y = n)
// and the bias adds of qwen2's q/k/v projections (n_y = the bias length, one row per token).
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 256;

layout(push_constant) uniform Push {
  uint n;    // elements of x
  uint n_y;  // elements of y
} pc;

layout(binding = 0) buffer XBuf { float x[]; };           // [n]
layout(binding = 1) readonly buffer YBuf { float y[]; };  // [n_y]

void main() {
  const uint i = gl_GlobalInvocationID.x;
  if (i >= pc.n) return;
  x[i] += y[i % pc.n_y];
}
