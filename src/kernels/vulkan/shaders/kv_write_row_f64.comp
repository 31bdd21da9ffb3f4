#version 450
// kv_write_row.glsl with the parameter fit in the CPU codec's order of operations: f32 lanes summed and solved in
// f64, f32 divisions rounded once through f64 (kv_fit.glsl); used where the device has shaderFloat64.
#define KV_FIT_F64
#include "kv_write_row.glsl"
