// Shared part of the matrix-vector shaders matvec_<format>.comp: y = W x for n_tokens columns x.
//
// One workgroup computes ROWS consecutive rows for one token (workgroup (i, t) -> rows [i*ROWS, i*ROWS+ROWS),
// token t). A row is cut into "units" (a few quantization blocks' worth of bytes, fixed per format); thread k
// takes units k, k + WG, ... and, for each, loads the unit's x elements once and dots them with that unit of
// all ROWS rows, so x is read once per workgroup rather than once per row. The per-thread sums are reduced
// with subgroupAdd and then across subgroups through shared memory.
//
// Each format file declares the weight binding (0) and defines
//   void unit_dots(uint first_row, uint x_base, uint u, inout float acc[ROWS])
// adding unit u of rows first_row .. first_row + ROWS - 1 (rows past pc.rows read the last row; their sums
// are not written) dotted with x (x_base: the token's first vec4 in x4), reading x through load_x.
//
// The decode step fuses its neighbouring elementwise work into the product (FUSE, a specialization constant
// of bits; 0 is the plain product, and then binding 3 is not read):
//   FUSE_NORM:   x is RMS-normalised on the way in: y = (W (x * aux)) / sqrt(mean(x^2) + EPS), aux the norm's
//                weight [cols] (each workgroup sums the token's squares itself: x is a few KiB).
//   FUSE_MUL:    x * aux on the way in, aux [n_tokens][cols] (the SwiGLU product silu(gate) * up, the gate
//                already through FUSE_SILU).
//   FUSE_SILU:   y = silu(W x), silu(s) = s / (1 + e^-s).
//   FUSE_ADD:    y += W x (the residual add; each element of y is written by one thread).
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_shader_16bit_storage : require

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 128;   // threads per workgroup
layout(constant_id = 1) const uint ROWS = 2;   // rows per workgroup
layout(constant_id = 2) const uint FUSE = 0;   // FUSE_* bits
layout(constant_id = 3) const float EPS = 1e-5;  // FUSE_NORM's epsilon
const uint FUSE_NORM = 1u, FUSE_MUL = 2u, FUSE_SILU = 4u, FUSE_ADD = 8u;

layout(push_constant) uniform Push {
  uint rows;           // rows of W (= length of y per token)
  uint cols;           // columns of W (= length of x per token), a multiple of the format's block
  uint row_words;      // distance between rows of W in words of the weight binding
  uint units_per_row;  // cols / the format's unit
} pc;

layout(binding = 1) readonly buffer XBuf { vec4 x4[]; };  // x: [n_tokens][cols] f32
layout(binding = 2) buffer YBuf { float y[]; };            // y: [n_tokens][rows] f32
layout(binding = 3) readonly buffer AuxBuf { vec4 aux4[]; };  // FUSE_NORM: [cols]; FUSE_MUL: [n_tokens][cols]

shared float partial[ROWS * WG];  // [ROWS][subgroups]: per-subgroup sums (at most WG subgroups)

uint row_of(uint first_row, uint r) { return min(first_row + r, pc.rows - 1); }

void unit_dots(uint first_row, uint x_base, uint u, inout float acc[ROWS]);

uint token_x_base;  // the token's first vec4 in x4

// Element group i of x4 (an absolute index: x_base + j), as the product reads it.
vec4 load_x(uint i) {
  if ((FUSE & FUSE_NORM) != 0u) return x4[i] * aux4[i - token_x_base];
  if ((FUSE & FUSE_MUL) != 0u) return x4[i] * aux4[i];
  return x4[i];
}

// 1 / sqrt(mean(x^2) + EPS) of the token's x, in every thread (FUSE_NORM), else 1.
float input_scale(uint x_base) {
  if ((FUSE & FUSE_NORM) == 0u) return 1.0;
  float sq = 0.0;
  for (uint i = gl_LocalInvocationID.x; i < pc.cols / 4; i += WG) {
    const vec4 v = x4[x_base + i];
    sq += dot(v, v);
  }
  const float s = subgroupAdd(sq);
  if (subgroupElect()) partial[gl_SubgroupID] = s;
  barrier();
  float total = 0.0;
  for (uint g = 0; g < gl_NumSubgroups; ++g) total += partial[g];
  barrier();  // partial is reused by the row sums
  return 1.0 / sqrt(total / float(pc.cols) + EPS);
}

void main() {
  const uint first_row = gl_WorkGroupID.x * ROWS;
  const uint token = gl_WorkGroupID.y;
  const uint x_base = token * (pc.cols / 4);
  token_x_base = x_base;
  const float scale = input_scale(x_base);
  float acc[ROWS];
  for (uint r = 0; r < ROWS; ++r) acc[r] = 0.0;
  for (uint u = gl_LocalInvocationID.x; u < pc.units_per_row; u += WG) unit_dots(first_row, x_base, u, acc);
  for (uint r = 0; r < ROWS; ++r) {
    const float s = subgroupAdd(acc[r]);
    if (subgroupElect()) partial[r * WG + gl_SubgroupID] = s;
  }
  barrier();
  const uint r = gl_LocalInvocationID.x;
  if (r < ROWS && first_row + r < pc.rows) {
    float s = 0.0;
    for (uint g = 0; g < gl_NumSubgroups; ++g) s += partial[r * WG + g];
    s *= scale;
    if ((FUSE & FUSE_SILU) != 0u) s = s / (1.0 + exp(-s));
    const uint at = token * pc.rows + first_row + r;
    y[at] = (FUSE & FUSE_ADD) != 0u ? y[at] + s : s;
  }
}
