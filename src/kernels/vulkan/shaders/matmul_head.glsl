// Shared part of the matrix-matrix shaders matmul_<format>.comp: Y = X W^T for a chunk of tokens, the
// prefill's products. The weights are read once per BN tokens (the matvec shaders read them once per token).
//
// Workgroup (i, j) computes the tile of rows [i*BM, i*BM + BM) of W for tokens [j*BN, j*BN + BN). It walks the
// columns BK at a time: the threads decode the BM x BK weight tile (4 consecutive elements each, by the format's
// decode4) and load the BN x BK activation tile into shared memory, then each thread accumulates its 4 x 4
// outputs — rows 4 tr + [0, 4), tokens 4 tn + [0, 4) (tr = tid % 16, tn = tid / 16) — from one 16-byte load of
// each tile per column: neighbouring threads read neighbouring words of the weight tile. Rows past pc.rows decode the
// last row and tokens past pc.n_tokens load zeros; neither is written.
//
// Each format file declares the weight binding (0) and defines
//   vec4 decode4(uint row, uint col)   // elements col .. col + 3 of row (col % 4 == 0), dequantized
// before including this file.
#extension GL_EXT_shader_16bit_storage : require

layout(local_size_x = 256) in;
const uint WG = 256;
const uint BM = 64;  // rows of W per workgroup
const uint BN = 64;  // tokens per workgroup
const uint BK = 32;  // columns per step (one Q4_0 / Q8_0 block, one K-quant sub-block)
// Outputs per thread: 4 rows x 4 tokens (BM / 16 = BN / 16 = 4), so 16 x 16 threads cover the tile.

layout(push_constant) uniform Push {
  uint rows;       // rows of W (= outputs per token)
  uint cols;       // columns of W (= inputs per token), a multiple of the format's block
  uint row_words;  // distance between rows of W in words of the weight binding
  uint n_tokens;
} pc;

layout(binding = 1) readonly buffer XBuf { vec4 x4[]; };   // X: [n_tokens][cols] f32
layout(binding = 2) writeonly buffer YBuf { float y[]; };  // Y: [n_tokens][rows] f32

shared vec4 w_s[BK * BM / 4];  // [BK][BM] the weight tile, column-major, 4 rows a vec4
shared vec4 x_s[BK * BN / 4];  // [BK][BN] the activation tile, 4 tokens a vec4

vec4 decode4(uint row, uint col);

void main() {
  const uint tid = gl_LocalInvocationID.x;
  const uint row0 = gl_WorkGroupID.x * BM, token0 = gl_WorkGroupID.y * BN;
  const uint tr = tid % 16, tn = tid / 16;
  vec4 acc[4];  // acc[j][i]: row 4 tr + i, token 4 tn + j
  for (uint j = 0; j < 4; ++j) acc[j] = vec4(0.0);
  const uint x_words = pc.cols / 4;
  for (uint k0 = 0; k0 < pc.cols; k0 += BK) {
    // Weight tile: BM * BK / 4 groups of 4 elements, group g = (row g / (BK / 4), columns 4 (g % (BK / 4))).
    for (uint g = tid; g < BM * BK / 4; g += WG) {
      const uint r = g / (BK / 4), c = 4 * (g % (BK / 4));
      const vec4 v = decode4(min(row0 + r, pc.rows - 1), k0 + c);
      w_s[c * (BM / 4) + r / 4][r % 4] = v.x;
      w_s[(c + 1) * (BM / 4) + r / 4][r % 4] = v.y;
      w_s[(c + 2) * (BM / 4) + r / 4][r % 4] = v.z;
      w_s[(c + 3) * (BM / 4) + r / 4][r % 4] = v.w;
    }
    // Activation tile: BN * BK / 4 vec4s.
    for (uint g = tid; g < BN * BK / 4; g += WG) {
      const uint t = g / (BK / 4), c = 4 * (g % (BK / 4));
      const vec4 v = token0 + t < pc.n_tokens ? x4[(token0 + t) * x_words + (k0 + c) / 4] : vec4(0.0);
      x_s[c * (BN / 4) + t / 4][t % 4] = v.x;
      x_s[(c + 1) * (BN / 4) + t / 4][t % 4] = v.y;
      x_s[(c + 2) * (BN / 4) + t / 4][t % 4] = v.z;
      x_s[(c + 3) * (BN / 4) + t / 4][t % 4] = v.w;
    }
    barrier();
    for (uint k = 0; k < BK; ++k) {
      const vec4 wv = w_s[k * (BM / 4) + tr], xv = x_s[k * (BN / 4) + tn];
      acc[0] += wv * xv.x;
      acc[1] += wv * xv.y;
      acc[2] += wv * xv.z;
      acc[3] += wv * xv.w;
    }
    barrier();  // the tiles are rewritten by the next step
  }
  for (uint j = 0; j < 4; ++j) {
    const uint t = token0 + 4 * tn + j;
    if (t >= pc.n_tokens) continue;
    for (uint i = 0; i < 4; ++i) {
      const uint r = row0 + 4 * tr + i;
      if (r < pc.rows) y[t * pc.rows + r] = acc[j][i];
    }
  }
}
