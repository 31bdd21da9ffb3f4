#version 450
// out = softmax(scale * x) over each row; one workgroup per row.
#extension GL_KHR_shader_subgroup_arithmetic : require

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 256;
#include "row_reduce.glsl"

layout(push_constant) uniform Push {
  uint n;       // row width
  float scale;
} pc;

layout(binding = 0) readonly buffer XBuf { float x[]; };        // [n_rows][n]
layout(binding = 1) writeonly buffer OutBuf { float out_[]; };  // [n_rows][n]

void main() {
  const uint base = gl_WorkGroupID.x * pc.n;
  float m = -1.0 / 0.0;
  for (uint i = gl_LocalInvocationID.x; i < pc.n; i += WG) m = max(m, pc.scale * x[base + i]);
  m = workgroup_max(m);
  float s = 0.0;
  for (uint i = gl_LocalInvocationID.x; i < pc.n; i += WG) s += exp(pc.scale * x[base + i] - m);
  const float inv = 1.0 / workgroup_sum(s);
  for (uint i = gl_LocalInvocationID.x; i < pc.n; i += WG) out_[base + i] = exp(pc.scale * x[base + i] - m) * inv;
}
