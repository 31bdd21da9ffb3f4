#version 450
// kv_transcode.glsl with the parameter fit's sums, solve and divisions in f32 (kv_fit.glsl), for devices without
// shaderFloat64; kv_transcode_f64.comp is the variant that follows the CPU codec's f64 solve.
#include "kv_transcode.glsl"
