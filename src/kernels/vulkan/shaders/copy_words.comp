#version 450
// dst = src in 16-byte words, grid-stride: the bandwidth a compute shader reaches on plain streaming, the
// ceiling the other shaders are compared with (vulkan_bench).
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 256;

layout(push_constant) uniform Push { uint n; } pc;  // 16-byte words to copy

layout(binding = 0) readonly buffer SrcBuf { uvec4 src[]; };   // [n]
layout(binding = 1) writeonly buffer DstBuf { uvec4 dst[]; };  // [n]

void main() {
  const uint stride = gl_NumWorkGroups.x * WG;
  for (uint i = gl_GlobalInvocationID.x; i < pc.n; i += stride) dst[i] = src[i];
}
