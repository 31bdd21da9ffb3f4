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
// are not written) dotted with x (x_base: the token's first vec4 in x4).
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_shader_16bit_storage : require

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 128;   // threads per workgroup
layout(constant_id = 1) const uint ROWS = 2;   // rows per workgroup

layout(push_constant) uniform Push {
  uint rows;           // rows of W (= length of y per token)
  uint cols;           // columns of W (= length of x per token), a multiple of the format's block
  uint row_words;      // distance between rows of W in words of the weight binding
  uint units_per_row;  // cols / the format's unit
} pc;

layout(binding = 1) readonly buffer XBuf { vec4 x4[]; };  // x: [n_tokens][cols] f32
layout(binding = 2) writeonly buffer YBuf { float y[]; };  // y: [n_tokens][rows] f32

shared float partial[ROWS * WG];  // [ROWS][subgroups]: per-subgroup sums (at most WG subgroups)

uint row_of(uint first_row, uint r) { return min(first_row + r, pc.rows - 1); }

void unit_dots(uint first_row, uint x_base, uint u, inout float acc[ROWS]);

void main() {
  const uint first_row = gl_WorkGroupID.x * ROWS;
  const uint token = gl_WorkGroupID.y;
  const uint x_base = token * (pc.cols / 4);
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
    y[token * pc.rows + first_row + r] = s;
  }
}
