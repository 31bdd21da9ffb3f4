#version 450
// out = x / sqrt(mean(x^2) + eps) * weight for each row; one workgroup per row.
#extension GL_KHR_shader_subgroup_arithmetic : require

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 256;
#include "row_reduce.glsl"

layout(push_constant) uniform Push {
  uint d;     // row width
  float eps;
} pc;

layout(binding = 0) readonly buffer XBuf { float x[]; };         // [n_rows][d]
layout(binding = 1) readonly buffer WeightBuf { float weight[]; };  // [d]
layout(binding = 2) writeonly buffer OutBuf { float out_[]; };   // [n_rows][d]

void main() {
  const uint base = gl_WorkGroupID.x * pc.d;
  float sq = 0.0;
  for (uint i = gl_LocalInvocationID.x; i < pc.d; i += WG) sq += x[base + i] * x[base + i];
  const float scale = 1.0 / sqrt(workgroup_sum(sq) / float(pc.d) + pc.eps);
  for (uint i = gl_LocalInvocationID.x; i < pc.d; i += WG) out_[base + i] = x[base + i] * scale * weight[i];
}
