// Integer fused decode for AVX-512 VNNI + VBMI (Highway's AVX3_DL target: Ice Lake, Zen 4/5). Included by
// kernels/cpu/paged_attention.cpp inside its per-target namespace, for HWY_TARGET == HWY_AVX3_DL only, after
// CodeRows, RowCoefficients, FusedScratch and ExpNonPositive; no include guard (one copy per target pass).
// Requires: #pragma GCC target("avx512vnni") around the include.

// ---- Integer fused decode (AVX-512 VNNI + VBMI): 2-, 3- and 4-bit codes times 8-bit coefficients ----
//
// vpdpbusd multiplies the 4 unsigned bytes of each 32-bit lane by 4 signed bytes and adds the 4 products to
// the lane's int32: with lane i holding element i's codes in 4 consecutive rows r..r+3 and the broadcast word
// holding those rows' 8-bit coefficients, one instruction does 64 multiply-adds (the f32 path: 16 per FMA,
// plus a shift, mask and convert per 16 codes). Transposing packed rows (kv::unpack_code_row: byte b of a
// w-bit plane of s bytes holds elements b + j*s, j < 8/w), 16 bytes of each of 4 rows at a time:
//   gathered = [row r, bytes b..b+15][row r+1, same][row r+2][row r+3]      (four 128-bit loads)
//   lanes    = vpermb(gathered):  lane i = bytes (r, b+i) (r+1, b+i) (r+2, b+i) (r+3, b+i)
//   codes_j  = (lanes >> j*w) & (2^w - 1) per byte:  element b + i + j*s of rows r..r+3
// 3-bit rows are a 2-bit plane (s bytes) then a 1-bit plane of s/2 bytes holding element e's high bit in byte
// e % (s/2), bit e / (s/2). Lane i's element of 2-bit plane j, b + i + j*s, so has its high bit in byte
// (b + i) % (s/2), bit (b + i) / (s/2) + 2j: gathered and transposed like the low bytes, each lane shifted right
// by (b + i) / (s/2) (0 or 1), plane j's high bit is bit 2j of every byte of the lane:
//   codes_j  = ((low >> 2j) & 3) | (bit 2j of high) << 2
// Coefficients (keys: q[d] s[d]; values: p[t] s[t][g]) are quantized per head and group to int8 with
// scale max|coef| / 127 (round to nearest), as llama.cpp quantizes the query to q8 against quantized keys.
// Against 3- and 4-bit codes they also get a second int8 term, the rounding residual at 1/254 of that scale
// (about 16 bits in all): with 8 bits alone, uniform q4's decode KLD on tiny-llama-31m rose from 0.0088 to 0.0100
// (values) and 0.0093 (keys), while against 2-bit codes 8 bits changed it by less than its noise (0.1651 ->
// 0.1646-0.1655; docs/kv_quality.md): there the codes' own error dwarfs the coefficients'. 3-bit rows with 8
// bits alone moved the kernel test's outputs by 7.8e-3 on average (2-bit: 4.2e-3), with the residual by 1.5e-5;
// their 4 planes x 2 sums per head then fill the 16 accumulators at 2 heads per pass.

// Quantizes the coefficients of up to 4 heads, x[h][0, n) (h < n_heads; x[h] = x0 + h * x_stride), to int8
// as q = round(x * inverse[h]) (inverse = 127 / max|x[h]|, or 0 if all are zero) and stores them as words: the
// 4 coefficients of rows 4k..4k+3 of heads 0..3 at words[k * word_stride + 0..3] (rows past n and heads past
// n_heads zero, up to the next multiple of 16 rows). With `residual`, also the rounding error's words
// (x ~ (q + residual / 254) / inverse) at the same offsets. A 4x4 transpose of 32-bit words turns 4 heads'
// 16 bytes into 4 rows' 16 bytes.
HWY_INLINE void QuantizeWithInverse(const float* x0, size_t x_stride, int n_heads, int n, const float* inverse, int32_t* words,
                         int32_t* residual, size_t word_stride) {
  const auto lanes_of = [n](int i) { return static_cast<__mmask16>(n - i >= 16 ? 0xFFFF : (1u << (n - i)) - 1); };
  const auto store_transposed = [word_stride](const __m128i (&bytes)[4], int32_t* at) {
    const __m128i ab_low = _mm_unpacklo_epi32(bytes[0], bytes[1]), ab_high = _mm_unpackhi_epi32(bytes[0], bytes[1]);
    const __m128i cd_low = _mm_unpacklo_epi32(bytes[2], bytes[3]), cd_high = _mm_unpackhi_epi32(bytes[2], bytes[3]);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(at), _mm_unpacklo_epi64(ab_low, cd_low));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(at + word_stride), _mm_unpackhi_epi64(ab_low, cd_low));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(at + 2 * word_stride), _mm_unpacklo_epi64(ab_high, cd_high));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(at + 3 * word_stride), _mm_unpackhi_epi64(ab_high, cd_high));
  };
  for (int i = 0; i < n; i += 16) {
    __m128i q8[4], residual8[4];
    for (int h = 0; h < 4; ++h) {
      const __m512 scaled = h < n_heads ? _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes_of(i), x0 + h * x_stride + i),
                                                        _mm512_set1_ps(inverse[h]))
                                        : _mm512_setzero_ps();
      const __m512i q = _mm512_cvtps_epi32(scaled);
      q8[h] = _mm512_cvtsepi32_epi8(q);
      if (residual != nullptr) {
        const __m512 error = _mm512_mul_ps(_mm512_sub_ps(scaled, _mm512_cvtepi32_ps(q)), _mm512_set1_ps(254.0f));
        residual8[h] = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(error));
      }
    }
    store_transposed(q8, words + i / 4 * word_stride);
    if (residual != nullptr) store_transposed(residual8, residual + i / 4 * word_stride);
  }
}

// QuantizeWithInverse with each head's scale found here: scale[h] = max|x[h]| / 127.
void QuantizeCoefficients(const float* x0, size_t x_stride, int n_heads, int n, int32_t* words, int32_t* residual,
                          size_t word_stride, float* scale) {
  const auto lanes_of = [n](int i) { return static_cast<__mmask16>(n - i >= 16 ? 0xFFFF : (1u << (n - i)) - 1); };
  float inverse[4] = {0, 0, 0, 0};
  for (int h = 0; h < n_heads; ++h) {
    __m512 vmax = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) {
      vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_maskz_loadu_ps(lanes_of(i), x0 + h * x_stride + i)));
    }
    const float max_abs = _mm512_reduce_max_ps(vmax);
    scale[h] = max_abs / 127.0f;
    inverse[h] = max_abs > 0 ? 127.0f / max_abs : 0.0f;
  }
  QuantizeWithInverse(x0, x_stride, n_heads, n, inverse, words, residual, word_stride);
}

// The coefficients of one call, as 32-bit words of 4 int8 coefficients (rows 4k..4k+3), laid out so that the
// kernel's inner loop reads every head's word at a fixed offset from one index:
//   words[(g * quads + k) * heads + h]  (group g, row quad k, head h; heads: the call's, rounded up to 4);
//   scale[h * n_groups + g].
// The residual words (4-bit rows), where present, have the same layout and weigh scale / 254.
// The kernel's epilogue writes out = (overwrite ? 0 : out) * keep[h] + add[h * n_groups + g] + the sum (keep,
// add: absent = 1, 0): the page step uses it to start scores at their constant and to apply the softmax
// correction and the min term to the state in the same pass.
struct Int8Coefficients {
  const int32_t* words;
  const int32_t* residual;
  const float* scale;
  int heads, quads, n_groups;
  bool overwrite = false;
  const float* keep = nullptr;  // [heads]
  const float* add = nullptr;   // [heads][n_groups]
};

// Width of the code plane the kernel's lanes are built from: 3-bit rows' first plane is 2 bits wide.
constexpr int kLowBitsOf(int bits) { return bits == 3 ? 2 : bits; }
constexpr int kPerByteOf(int bits) { return 8 / kLowBitsOf(bits); }

// Rows the VNNI kernels take: IntegerRowsFit's 2- and 4-bit rows, and 3-bit rows on which a 16-byte chunk of the
// 2-bit plane meets its high bits without wrapping around the 1-bit plane: 64 codes (24-byte rows, the 8 plane
// bytes read twice) or a multiple of 128.
bool VnniRowsFit(const CodeRows& rows) {
  if (rows.bits != 3) return IntegerRowsFit(rows);
  const bool sixty_four = rows.row_len == 64 && rows.row_bytes == 24;
  return (sixty_four || rows.row_len % 128 == 0) && rows.group % 16 == 0;
}

// acc += vpdpbusd(codes, the word at `word` in every lane), in place. Written as asm because GCC 12 wraps the
// intrinsic in this loop with register-to-register copies of the accumulators (one per multiply-add, plus
// reloads of the transpose index), which cost as much as the arithmetic.
HWY_INLINE void DotBytes(__m512i& acc, __m512i codes, const int32_t* word) {
  asm("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(codes), "m"(*word));
}
// The same with the word already broadcast to every lane: a row of one coefficient group uses each word for all
// 8 / bits code planes, and the register form issues at 1 per cycle where the memory-broadcast form manages ~0.8
// (measured on Zen 5: 4.19 vs 3.33 G/s).
HWY_INLINE void DotBytes(__m512i& acc, __m512i codes, __m512i words) {
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(codes), "v"(words));
}

// out[h][e] += scale[h][g(e)] * sum_{r < n_rows} coef[h][g(e)][r] * code(row r, element e), for heads
// first_head .. first_head + H - 1 (out: the first of them), every element e < row_len (VnniRowsFit). Reads whole
// groups of 4 rows: rows up to the next multiple of 4 must be readable (a page's rows past its valid tokens
// are; their coefficients are 0).
// kOneGroup: each row is one coefficient group (rows.row_len <= rows.group), so every code plane j of a quad
// takes the same words, broadcast to registers once per quad.
// kUnpacked: kStore also writes each quad's code planes, as vpdpbusd takes them, to `unpacked`
// ([16-byte chunk][quad][plane j][64 bytes]); kLoad reads them from there instead of unpacking the rows again.
enum class Unpacked { kNo, kStore, kLoad };
template <int H, int kBits, bool kResidual, bool kOneGroup, Unpacked kUnpacked = Unpacked::kNo>
HWY_NOINLINE void AccumulateCodeRowsVnni(const CodeRows& rows, const Int8Coefficients& c, int first_head, float* out,
                                         size_t out_stride, uint8_t* unpacked = nullptr) {
  static_assert(H >= 1 && H <= 4 && kBits >= 2 && kBits <= 4, "one to four heads, 2-, 3- or 4-bit codes");
  static_assert(kPerByteOf(kBits) * H * (kResidual ? 2 : 1) <= 16, "at most 16 accumulators (of 32 registers)");
  constexpr int kPerByte = kPerByteOf(kBits);
  constexpr int kLowBits = kLowBitsOf(kBits);
  const int plane_bytes = rows.row_len * kLowBits / 8;
  const int high_bytes = rows.row_len / 8;  // 3-bit rows: the 1-bit plane, after the 2-bit one
  alignas(64) static constexpr uint8_t kTranspose[64] = {  // lane i, byte j <- row j, byte i
      0, 16, 32, 48, 1, 17, 33, 49, 2, 18, 34, 50, 3, 19, 35, 51, 4, 20, 36, 52, 5, 21, 37, 53,
      6, 22, 38, 54, 7, 23, 39, 55, 8, 24, 40, 56, 9, 25, 41, 57, 10, 26, 42, 58, 11, 27, 43, 59,
      12, 28, 44, 60, 13, 29, 45, 61, 14, 30, 46, 62, 15, 31, 47, 63};
  // 3-bit rows of 64 codes (24 bytes): 4 rows are 96 contiguous bytes, two registers that vpermt2b indexes.
  alignas(64) static constexpr uint8_t kLow24[64] = {  // lane i, byte j <- row j, 2-bit plane byte i
      0, 24, 48, 72, 1, 25, 49, 73, 2, 26, 50, 74, 3, 27, 51, 75, 4, 28, 52, 76, 5, 29, 53, 77,
      6, 30, 54, 78, 7, 31, 55, 79, 8, 32, 56, 80, 9, 33, 57, 81, 10, 34, 58, 82, 11, 35, 59, 83,
      12, 36, 60, 84, 13, 37, 61, 85, 14, 38, 62, 86, 15, 39, 63, 87};
  alignas(64) static constexpr uint8_t kHigh24[64] = {  // lane i, byte j <- row j, 1-bit plane byte i % 8
      16, 40, 64, 88, 17, 41, 65, 89, 18, 42, 66, 90, 19, 43, 67, 91, 20, 44, 68, 92, 21, 45, 69, 93,
      22, 46, 70, 94, 23, 47, 71, 95, 16, 40, 64, 88, 17, 41, 65, 89, 18, 42, 66, 90, 19, 43, 67, 91,
      20, 44, 68, 92, 21, 45, 69, 93, 22, 46, 70, 94, 23, 47, 71, 95};
  const __m512i transpose = _mm512_load_si512(kTranspose);
  const __m512i mask = _mm512_set1_epi8(static_cast<char>((1 << kLowBits) - 1));
  const __m512i seven = _mm512_set1_epi8(7);
  const size_t stride = rows.row_bytes;
  const bool rows_of_24 = kBits == 3 && stride == 24;  // then plane_bytes == 16: b == 0 only
  const int quads = (rows.n_rows + 3) / 4;
  for (int b = 0; b < plane_bytes; b += 16) {
    const int32_t* words[kPerByte];     // codes_j's group: its words of head first_head, quad 0
    const int32_t* residual[kPerByte];
    int per_group[kPerByte];            // codes_j's group: index of head first_head's scale (and add)
    for (int j = 0; j < kPerByte; ++j) {
      const int g = (b + j * plane_bytes) / rows.group;
      const size_t at = static_cast<size_t>(g) * c.quads * c.heads + first_head;
      words[j] = c.words + at;
      residual[j] = kResidual ? c.residual + at : nullptr;
      per_group[j] = first_head * c.n_groups + g;
    }
    // 3-bit rows: lane i's high bits sit (b + i) / high_bytes bits up (VnniRowsFit: 8 high bytes and b == 0, or
    // a multiple of 16 high bytes, where the chunk's 16 high bytes are consecutive).
    __m512i high_shift = _mm512_setzero_si512();
    if constexpr (kBits == 3) {
      high_shift = high_bytes == 8 ? _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0)
                                   : _mm512_set1_epi32(b / high_bytes);
    }
    __m512i acc[kPerByte][H], acc_residual[kPerByte][H];
    for (int j = 0; j < kPerByte; ++j) {
      for (int h = 0; h < H; ++h) acc[j][h] = acc_residual[j][h] = _mm512_setzero_si512();
    }
    const uint8_t* row = rows.data + b;
    const uint8_t* high_row = rows.data + plane_bytes + (kBits == 3 ? b % high_bytes : 0);
    for (int quad = 0; quad < quads; ++quad, row += 4 * stride, high_row += 4 * stride) {
      const size_t at = static_cast<size_t>(quad) * c.heads;
      const auto gather16 = [stride](const uint8_t* p) {  // 16 bytes of each of the 4 rows at p
        __m512i g = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        g = _mm512_inserti32x4(g, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + stride)), 1);
        g = _mm512_inserti32x4(g, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * stride)), 2);
        return _mm512_inserti32x4(g, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 3 * stride)), 3);
      };
      __m512i lanes = _mm512_setzero_si512(), high = _mm512_setzero_si512();
      __m512i* saved = kUnpacked == Unpacked::kNo ? nullptr
                       : reinterpret_cast<__m512i*>(unpacked) + (static_cast<size_t>(b / 16) * quads + quad) * kPerByte;
      if (kUnpacked == Unpacked::kLoad) {
        // the planes are in `saved`
      } else if (kBits == 3 && rows_of_24) {
        const __m512i first = _mm512_loadu_si512(row);
        const __m512i second = _mm512_maskz_loadu_epi8(0xFFFFFFFFull, row + 64);  // bytes 64..95
        lanes = _mm512_permutex2var_epi8(first, _mm512_load_si512(kLow24), second);
        high = _mm512_permutex2var_epi8(first, _mm512_load_si512(kHigh24), second);
      } else if (kBits != 3 && stride == 16) {  // 16-byte rows (2-bit codes of 64): the 4 rows are one 64-byte load
        lanes = _mm512_permutexvar_epi8(transpose, _mm512_loadu_si512(row));
      } else {
        lanes = _mm512_permutexvar_epi8(transpose, gather16(row));
        if constexpr (kBits == 3) high = _mm512_permutexvar_epi8(transpose, gather16(high_row));
      }
      // Plane j's high bit moves from bit 2j to bit 2 below; a shift of 1 brings the next byte's bit 0 into
      // bit 7, which no plane reads.
      if constexpr (kBits == 3 && kUnpacked != Unpacked::kLoad) high = _mm512_srlv_epi32(high, high_shift);
      __m512i head_words[H], head_residual[H];
      if constexpr (kOneGroup) {
#pragma GCC unroll 4
        for (int h = 0; h < H; ++h) {
          head_words[h] = _mm512_set1_epi32(words[0][at + h]);
          if constexpr (kResidual) head_residual[h] = _mm512_set1_epi32(residual[0][at + h]);
        }
      }
#pragma GCC unroll 4
      for (int j = 0; j < kPerByte; ++j) {
        __m512i codes;
        if constexpr (kUnpacked == Unpacked::kLoad) {
          codes = _mm512_loadu_si512(saved + j);
        } else if constexpr (kBits == 3) {
          const __m512i low = j == 0 ? lanes : _mm512_srli_epi16(lanes, 2 * j);
          const __m512i top = j == 0 ? _mm512_slli_epi16(high, 2) : j == 1 ? high : _mm512_srli_epi16(high, 2 * j - 2);
          // mask ? low : top, then the 3 code bits. vpternlogd overwrites its first operand: a temporary (low for
          // j == 1, where top is `high` itself), not the mask, which would cost a copy per plane.
          const __m512i merged = j == 1 ? _mm512_ternarylogic_epi32(low, top, mask, 0xE4)    // c ? a : b
                                        : _mm512_ternarylogic_epi32(top, low, mask, 0xD8);  // c ? b : a
          codes = _mm512_and_si512(merged, seven);
        } else {
          codes = _mm512_and_si512(_mm512_srli_epi16(lanes, j * kBits), mask);
        }
        if constexpr (kUnpacked == Unpacked::kStore) _mm512_storeu_si512(saved + j, codes);
#pragma GCC unroll 4
        for (int h = 0; h < H; ++h) {
          if constexpr (kOneGroup) {
            DotBytes(acc[j][h], codes, head_words[h]);
            if constexpr (kResidual) DotBytes(acc_residual[j][h], codes, head_residual[h]);
          } else {
            DotBytes(acc[j][h], codes, words[j] + at + h);
            if constexpr (kResidual) DotBytes(acc_residual[j][h], codes, residual[j] + at + h);
          }
        }
      }
    }
    // Unrolled and branch-free, so that the accumulators stay in registers (a loop here spilled them all).
    const __mmask16 keep_out = c.overwrite ? 0 : 0xFFFF;
#pragma GCC unroll 4
    for (int j = 0; j < kPerByte; ++j) {
#pragma GCC unroll 4
      for (int h = 0; h < H; ++h) {
        float* o = out + h * out_stride + b + j * plane_bytes;
        const int at = per_group[j] + h * c.n_groups;
        const float sc = c.scale[at];
        const float keep = c.keep != nullptr ? c.keep[first_head + h] : 1.0f;
        const float add = c.add != nullptr ? c.add[at] : 0.0f;
        const __m512 base = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(keep_out, o), _mm512_set1_ps(keep), _mm512_set1_ps(add));
        __m512 sum = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[j][h]), _mm512_set1_ps(sc), base);
        if constexpr (kResidual) {
          sum = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc_residual[j][h]), _mm512_set1_ps(sc / 254.0f), sum);
        }
        _mm512_storeu_ps(o, sum);
      }
    }
  }
}

// AccumulateCodeRowsVnni with the one-group form where the rows allow it.
template <int H, int kBits, bool kResidual>
HWY_INLINE void AccumulateRows(const CodeRows& rows, const Int8Coefficients& c, int first_head, float* out,
                               size_t out_stride) {
  if (rows.row_len <= rows.group) {
    AccumulateCodeRowsVnni<H, kBits, kResidual, true>(rows, c, first_head, out, out_stride);
  } else {
    AccumulateCodeRowsVnni<H, kBits, kResidual, false>(rows, c, first_head, out, out_stride);
  }
}

// 3-bit rows times the coefficients of heads first_head .. first_head + heads - 1, 2 heads per pass (4 planes x 2
// sums x 2 heads fill the 16 accumulators). The first pass keeps the unpacked code planes for the others, which
// then only load and multiply (unpacking is about half the instructions of a pass).
template <bool kOneGroup>
void AccumulateThreeBitRows(const CodeRows& rows, const Int8Coefficients& c, int first_head, int heads, float* out,
                            size_t out_stride, std::vector<uint8_t>& unpacked) {
  if (heads <= 2) {
    if (heads == 2) return AccumulateCodeRowsVnni<2, 3, true, kOneGroup>(rows, c, first_head, out, out_stride);
    return AccumulateCodeRowsVnni<1, 3, true, kOneGroup>(rows, c, first_head, out, out_stride);
  }
  const size_t bytes = static_cast<size_t>(rows.row_len / 64) * ((rows.n_rows + 3) / 4) * kPerByteOf(3) * 64;
  if (unpacked.size() < bytes) unpacked.resize(bytes);
  AccumulateCodeRowsVnni<2, 3, true, kOneGroup, Unpacked::kStore>(rows, c, first_head, out, out_stride, unpacked.data());
  for (int h = 2; h < heads; h += 2) {
    float* o = out + h * out_stride;
    if (heads - h >= 2) {
      AccumulateCodeRowsVnni<2, 3, true, kOneGroup, Unpacked::kLoad>(rows, c, first_head + h, o, out_stride, unpacked.data());
    } else {
      AccumulateCodeRowsVnni<1, 3, true, kOneGroup, Unpacked::kLoad>(rows, c, first_head + h, o, out_stride, unpacked.data());
    }
  }
}
void AccumulateThreeBit(const CodeRows& rows, const Int8Coefficients& c, int first_head, int heads, float* out,
                        size_t out_stride, std::vector<uint8_t>& unpacked) {
  if (rows.row_len <= rows.group) return AccumulateThreeBitRows<true>(rows, c, first_head, heads, out, out_stride, unpacked);
  AccumulateThreeBitRows<false>(rows, c, first_head, heads, out, out_stride, unpacked);
}

// Rows times the coefficients of 4 heads (first_head 0): one pass, or two of 2 heads for 3-bit rows.
template <int kBits>
HWY_INLINE void AccumulateFourHeads(const CodeRows& rows, const Int8Coefficients& c, float* out, size_t out_stride,
                                    FusedScratch& s) {
  if constexpr (kBits == 3) {
    AccumulateThreeBit(rows, c, 0, 4, out, out_stride, s.unpacked_codes);
  } else {
    AccumulateRows<4, kBits, kBits == 4>(rows, c, 0, out, out_stride);
  }
}

// Quantizes the f32 coefficients of `heads` heads and runs AccumulateCodeRowsVnni over them in blocks of 4
// heads (2 for 3-bit rows); 3- and 4-bit rows with residual coefficient terms, 2-bit rows without.
template <int kBits>
void AccumulateVnni(int heads, const CodeRows& rows, const RowCoefficients& coefs, float* out, size_t out_stride,
                    FusedScratch& s) {
  constexpr bool kResidual = kBits != 2;
  const int n_groups = rows.row_len / rows.group;
  const int quads = (rows.n_rows + 15) / 16 * 4;  // whole vectors of 16 coefficients
  const int padded_heads = (heads + 3) / 4 * 4;
  const size_t n_words = static_cast<size_t>(n_groups) * quads * padded_heads;
  s.coef_words.resize((kResidual ? 2 : 1) * n_words);  // [1 or 2][n_groups][quads][padded_heads]
  s.coef_scale.resize(static_cast<size_t>(padded_heads) * n_groups);
  int32_t* words = s.coef_words.data();
  std::vector<float>& scale = s.coef_scale;
  for (int h = 0; h < heads; h += 4) {
    for (int g = 0; g < n_groups; ++g) {
      const size_t at = static_cast<size_t>(g) * quads * padded_heads + h;
      float block_scale[4];
      QuantizeCoefficients(coefs.coef + h * coefs.head_stride + g * coefs.group_stride, coefs.head_stride,
                           std::min(4, heads - h), rows.n_rows, words + at, kResidual ? words + n_words + at : nullptr,
                           padded_heads, block_scale);
      for (int i = 0; i < std::min(4, heads - h); ++i) scale[(h + i) * n_groups + g] = block_scale[i];
    }
  }
  const Int8Coefficients c{words, words + n_words, s.coef_scale.data(), padded_heads, quads, n_groups};
  if constexpr (kBits == 3) {
    AccumulateThreeBit(rows, c, 0, heads, out, out_stride, s.unpacked_codes);
  } else {
    for (int h = 0; h < heads; h += 4, out += 4 * out_stride) {
      switch (std::min(4, heads - h)) {
        case 4: AccumulateRows<4, kBits, kResidual>(rows, c, h, out, out_stride); break;
        case 3: AccumulateRows<3, kBits, kResidual>(rows, c, h, out, out_stride); break;
        case 2: AccumulateRows<2, kBits, kResidual>(rows, c, h, out, out_stride); break;
        default: AccumulateRows<1, kBits, kResidual>(rows, c, h, out, out_stride); break;
      }
    }
  }
}

// ---- The page step: one full page, one block of 4 query heads, every per-page reduction batched ----
//
// The general path above (FusedDecodePage + AccumulateVnni) spends ~70% of its time around the vpdpbusd loops:
// per head a horizontal max, sum and min-term reduction, a scalar softmax update, and f32 coefficient arrays
// written, reread and quantized. Here the 4 heads of a block go through every stage together: 4 horizontal
// reductions share one shuffle tree (SumOfLanes4), the softmax correction is one 4-lane exp, coefficient
// maxima are taken as the coefficients are made, and the kernels' epilogue writes scores and the corrected
// state directly.

// Lane h of the result: the sum (max) of the 16 lanes of v[h], h < 4. Per 128-bit block unpack + add gives
// [a0+a2, b0+b2, a1+a3, b1+b3], a shuffle pair + add [a, b, c, d]; then the 4 blocks are added.
template <bool kMax>
HWY_INLINE __m128 ReduceLanes4(const __m512 (&v)[4]) {
  const auto op = [](__m512 x, __m512 y) { return kMax ? _mm512_max_ps(x, y) : _mm512_add_ps(x, y); };
  const __m512 ab = op(_mm512_unpacklo_ps(v[0], v[1]), _mm512_unpackhi_ps(v[0], v[1]));
  const __m512 cd = op(_mm512_unpacklo_ps(v[2], v[3]), _mm512_unpackhi_ps(v[2], v[3]));
  const __m512 abcd = op(_mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)), _mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
  const __m256 low = _mm512_castps512_ps256(abcd), high = _mm512_extractf32x8_ps(abcd, 1);
  const __m256 half = kMax ? _mm256_max_ps(low, high) : _mm256_add_ps(low, high);
  const __m128 a = _mm256_castps256_ps128(half), b = _mm256_extractf128_ps(half, 1);
  return kMax ? _mm_max_ps(a, b) : _mm_add_ps(a, b);
}

// e^x for finite x <= 0 on 16 lanes, for softmax weights that are then rounded to 8 (or ~16) bits:
// ExpNonPositive's reduction (n = round(x / ln 2), r = x - n ln 2 with ln 2 in two parts) with a degree-5 Taylor
// polynomial (relative error < 3.5e-6 on |r| <= ln2/2: r^6/720 against e^r >= 0.707) and vscalefps for the 2^n
// (which flushes huge negative n to 0: no clamp needed). 10 instructions; Highway's Round + ConvertTo add 4 more
// for out-of-range fix-ups. (-inf would give NaN: the page step's scores are finite; ExpNonPositive takes -inf.)
HWY_INLINE __m512 ExpWeights(__m512 x) {
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-0.693145751953125f), x);
  r = _mm512_fmadd_ps(n, _mm512_set1_ps(-1.428606765330187045e-6f), r);
  __m512 poly = _mm512_fmadd_ps(_mm512_set1_ps(1.0f / 120), r, _mm512_set1_ps(1.0f / 24));
  poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(1.0f / 6));
  poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(0.5f));
  poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(1.0f));
  poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(poly, n);
}

// Scale and inverse of 4 heads' coefficients from their maxima: scale = max / 127, inverse = 127 / max (0 if 0).
HWY_INLINE void ScaleAndInverse(__m128 max_abs, float* scale, float* inverse) {
  _mm_storeu_ps(scale, _mm_mul_ps(max_abs, _mm_set1_ps(1.0f / 127.0f)));
  const __mmask8 nonzero = _mm_cmp_ps_mask(max_abs, _mm_setzero_ps(), _CMP_GT_OQ);
  _mm_storeu_ps(inverse, _mm_maskz_div_ps(nonzero, _mm_set1_ps(127.0f), max_abs));
}

// 16 (scale, min) half pairs -> scales and mins as f32 (the key parameters [channel][scale, min]; the value
// parameters [token][scale, min] with one group).
HWY_INLINE void LoadParamPairs(const uint16_t* halves, __m512& scale, __m512& min) {
  alignas(64) static constexpr int32_t kEven[16] = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
  const __m512i even = _mm512_load_si512(kEven), odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const __m512 low = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(halves)));
  const __m512 high = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(halves + 16)));
  scale = _mm512_permutex2var_ps(low, even, high);
  min = _mm512_permutex2var_ps(low, odd, high);
}

// The value parameters of 16 tokens, [token][group][scale, min] halves, as scale[g] and min[g] over the tokens.
template <int kGroups>
HWY_INLINE void LoadValueParams(const uint16_t* halves, __m512 (&scale)[kGroups], __m512 (&min)[kGroups]) {
  static_assert(kGroups == 1 || kGroups == 2, "one or two value groups per row");
  if constexpr (kGroups == 1) {
    LoadParamPairs(halves, scale[0], min[0]);
  } else {
    // 4 tokens per 16 halves: [s0 m0 s1 m1] x 4. Picking every 4th lane of two vectors gives 8 tokens.
    alignas(64) static constexpr int32_t kFourth[16] = {0, 4, 8, 12, 16, 20, 24, 28, 0, 0, 0, 0, 0, 0, 0, 0};
    const __m512i fourth = _mm512_load_si512(kFourth);
    __m512 part[4];
    for (int i = 0; i < 4; ++i) part[i] = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(halves + 16 * i)));
    for (int k = 0; k < 4; ++k) {  // k: s0, m0, s1, m1
      const __m512i index = _mm512_add_epi32(fourth, _mm512_set1_epi32(k));
      const __m512 first = _mm512_permutex2var_ps(part[0], index, part[1]);   // tokens 0..7 in lanes 0..7
      const __m512 second = _mm512_permutex2var_ps(part[2], index, part[3]);  // tokens 8..15 in lanes 0..7
      const __m512 both = _mm512_insertf32x8(first, _mm512_castps512_ps256(second), 1);
      (k % 2 == 0 ? scale : min)[k / 2] = both;
    }
  }
}

// Whether VnniPageStep takes this page of `rows` valid tokens: a full page, 2-, 3- or 4-bit keys (per-channel or
// rotated) and values, head_dim a multiple of 16 with one or two groups, rows the VNNI kernels take (VnniRowsFit).
bool VnniPageFits(const kv::PageFormat& f, int rows) {
  if (rows != f.tokens || f.tokens % 16 != 0 || f.head_dim % 16 != 0) return false;
  if (f.n_groups != 1 && f.n_groups != 2) return false;
  const CodeRows keys{nullptr, f.key_row_code_bytes, f.head_dim, f.tokens, f.key_bits, f.tokens};
  const CodeRows values{nullptr, f.row_code_bytes, f.tokens, f.head_dim, f.value_bits, f.group};
  return VnniRowsFit(keys) && VnniRowsFit(values);
}

// The scores of 4 heads over a full page of rotated keys (scale and min per token and group g of channels):
// score[t] = sum_g s[t][g] dot_g[t] + m[t][g] qsum_g with dot_g[t] = sum_{d in g} q[d] code[d][t] and qsum_g =
// sum_{d in g} q[d]. The code rows (channels) carry q[d] alone, one call per group; a pass over the tokens then
// applies each token's scales and mins.
//   qs: [4][head_dim], queries times the softmax scale;  scores: [4][tokens] out (s.scores, which holds
//   [kGroups][4][tokens] of dots first);  next: its second quarter prefetched between the two stages.
template <int kKeyBits, int kGroups>
HWY_NOINLINE void RotatedKeyScores(const kv::PageFormat& f, const uint8_t* keys, const float* qs, float* scores,
                                   FusedScratch& s, const NextPageHead& next) {
  const int hd = f.head_dim, tokens = f.tokens;
  __m512 q_max[4], group_sum[kGroups][4];
  for (int h = 0; h < 4; ++h) {
    q_max[h] = _mm512_setzero_ps();
    for (int g = 0; g < kGroups; ++g) group_sum[g][h] = _mm512_setzero_ps();
  }
  for (int d = 0; d < hd; d += 16) {
    for (int h = 0; h < 4; ++h) {
      const __m512 q = _mm512_loadu_ps(qs + h * hd + d);
      q_max[h] = _mm512_max_ps(q_max[h], _mm512_abs_ps(q));
      __m512& sum = group_sum[kGroups == 2 && d >= f.group ? 1 : 0][h];
      sum = _mm512_add_ps(sum, q);
    }
  }
  alignas(16) float key_scale[4], key_inverse[4], q_sum[kGroups][4];
  ScaleAndInverse(ReduceLanes4<true>(q_max), key_scale, key_inverse);
  for (int g = 0; g < kGroups; ++g) _mm_store_ps(q_sum[g], ReduceLanes4<false>(group_sum[g]));
  int32_t* key_words = s.coef_words.data();  // [hd / 4][4 heads], then as many residual words
  QuantizeWithInverse(qs, hd, 4, hd, key_inverse, key_words, kKeyBits != 2 ? key_words + hd : nullptr, 4);
  PrefetchPart(next, 1, 4);
  const uint8_t* key_codes = keys + f.key_codes_offset;
  for (int g = 0; g < kGroups; ++g) {
    const int d0 = g * f.group;
    Int8Coefficients key_c{key_words + d0, key_words + hd + d0, key_scale, 4, f.group / 4, 1};
    key_c.overwrite = true;
    const CodeRows key_rows{key_codes + d0 * f.key_row_code_bytes, f.key_row_code_bytes, f.group, tokens, kKeyBits, tokens};
    AccumulateFourHeads<kKeyBits>(key_rows, key_c, scores + static_cast<size_t>(g) * 4 * tokens, tokens, s);
  }
  const auto* key_params = reinterpret_cast<const uint16_t*>(keys);  // [tokens][kGroups][scale, min] halves
  for (int t = 0; t < tokens; t += 16) {
    __m512 scale[kGroups], min[kGroups];
    LoadValueParams<kGroups>(key_params + 2 * kGroups * t, scale, min);
    for (int h = 0; h < 4; ++h) {
      __m512 score = _mm512_setzero_ps();
      for (int g = 0; g < kGroups; ++g) {
        const __m512 dot = _mm512_loadu_ps(scores + (static_cast<size_t>(g) * 4 + h) * tokens + t);
        score = _mm512_fmadd_ps(min[g], _mm512_set1_ps(q_sum[g][h]), _mm512_fmadd_ps(scale[g], dot, score));
      }
      _mm512_storeu_ps(scores + h * tokens + t, score);
    }
  }
}

// Folds one full page (KV head section `keys` / `values`) into the online-softmax states of 4 query heads.
// Rotated keys take their scores from RotatedKeyScores (a helper, so that the per-channel path's code is as
// compact as before: inlined, the branches cost the 2-bit step ~3% in the microbenchmark).
//   qs: [4][head_dim], the queries times the softmax scale;  states: head h at states + h * state_stride;
//   next: prefetched a quarter at the start of each of the 4 stages (key coefficients, key codes, softmax, values).
template <int kKeyBits, int kValueBits, int kGroups>
HWY_NOINLINE void VnniPageStep(const kv::PageFormat& f, const uint8_t* keys, const uint8_t* values, const float* qs,
                               float* states, size_t state_stride, FusedScratch& s, const NextPageHead& next) {
  const int hd = f.head_dim, tokens = f.tokens;
  PrefetchPart(next, 0, 4);
  float* scores = s.scores.data();  // [4][tokens]
  if (f.key_mode == kv::KeyMode::RotatedPerToken) {
    RotatedKeyScores<kKeyBits, kGroups>(f, keys, qs, scores, s, next);
  } else {
    // Scores start from sum_d q[d] m[d]; the code rows (channels) carry the coefficients q[d] s[d].
    const auto* key_params = reinterpret_cast<const uint16_t*>(keys);  // [hd][scale, min] halves
    float* key_coef = s.key_coef.data();                                // [4][hd]
    __m512 coef_max[4], constant[4];
    for (int h = 0; h < 4; ++h) coef_max[h] = constant[h] = _mm512_setzero_ps();
    for (int d = 0; d < hd; d += 16) {
      __m512 scale, min;
      LoadParamPairs(key_params + 2 * d, scale, min);
      for (int h = 0; h < 4; ++h) {
        const __m512 q = _mm512_loadu_ps(qs + h * hd + d);
        const __m512 coef = _mm512_mul_ps(q, scale);
        _mm512_storeu_ps(key_coef + h * hd + d, coef);
        coef_max[h] = _mm512_max_ps(coef_max[h], _mm512_abs_ps(coef));
        constant[h] = _mm512_fmadd_ps(q, min, constant[h]);
      }
    }
    alignas(16) float key_scale[4], key_inverse[4], key_constant[4];
    ScaleAndInverse(ReduceLanes4<true>(coef_max), key_scale, key_inverse);
    _mm_store_ps(key_constant, ReduceLanes4<false>(constant));
    int32_t* key_words = s.coef_words.data();  // [hd / 4][4 heads], then as many residual words
    QuantizeWithInverse(key_coef, hd, 4, hd, key_inverse, key_words, kKeyBits != 2 ? key_words + hd : nullptr, 4);
    PrefetchPart(next, 1, 4);
    Int8Coefficients key_c{key_words, key_words + hd, key_scale, 4, hd / 4, 1};
    key_c.overwrite = true;
    key_c.add = key_constant;
    const CodeRows key_rows{keys + f.key_codes_offset, f.key_row_code_bytes, hd, tokens, kKeyBits, tokens};
    AccumulateFourHeads<kKeyBits>(key_rows, key_c, scores, tokens, s);  // one group (group = row_len = tokens)
  }
  PrefetchPart(next, 2, 4);

  // Online softmax of the 4 heads: new maxima, corrections e^(m_old - m_new), weights p = e^(s - m_new); value
  // coefficients p[t] s[t][g], their maxima, and the min terms sum_t p[t] m[t][g].
  __m512 score_max[4];
  for (int h = 0; h < 4; ++h) {
    score_max[h] = _mm512_loadu_ps(scores + h * tokens);
    for (int t = 16; t < tokens; t += 16) score_max[h] = _mm512_max_ps(score_max[h], _mm512_loadu_ps(scores + h * tokens + t));
  }
  alignas(16) float m_old[4], l_old[4], m_new[4], correction[4];
  for (int h = 0; h < 4; ++h) {
    m_old[h] = states[h * state_stride + hd];
    l_old[h] = states[h * state_stride + hd + 1];
  }
  const __m128 m_prev = _mm_load_ps(m_old), m_next = _mm_max_ps(m_prev, ReduceLanes4<true>(score_max));
  const hn::Full128<float> d4;
  const __m128 corr = ExpNonPositive(d4, hn::Vec128<float>{_mm_sub_ps(m_prev, m_next)}).raw;  // m_old = -inf: ~0
  _mm_store_ps(m_new, m_next);
  _mm_store_ps(correction, corr);
  const auto* value_params = reinterpret_cast<const uint16_t*>(values);  // [tokens][kGroups][scale, min] halves
  float* value_coef = s.value_coef.data();                              // [4][kGroups][tokens]
  __m512 p_sum[4], min_term[kGroups][4], value_max[kGroups][4];
  for (int h = 0; h < 4; ++h) {
    p_sum[h] = _mm512_setzero_ps();
    for (int g = 0; g < kGroups; ++g) min_term[g][h] = value_max[g][h] = _mm512_setzero_ps();
  }
  for (int t = 0; t < tokens; t += 16) {
    __m512 scale[kGroups], min[kGroups];
    LoadValueParams<kGroups>(value_params + 2 * kGroups * t, scale, min);
    for (int h = 0; h < 4; ++h) {
      const __m512 x = _mm512_sub_ps(_mm512_loadu_ps(scores + h * tokens + t), _mm512_set1_ps(m_new[h]));
      const __m512 p = ExpWeights(x);
      p_sum[h] = _mm512_add_ps(p_sum[h], p);
      for (int g = 0; g < kGroups; ++g) {
        const __m512 coef = _mm512_mul_ps(p, scale[g]);
        _mm512_storeu_ps(value_coef + (h * kGroups + g) * tokens + t, coef);
        value_max[g][h] = _mm512_max_ps(value_max[g][h], _mm512_abs_ps(coef));
        min_term[g][h] = _mm512_fmadd_ps(p, min[g], min_term[g][h]);
      }
    }
  }
  PrefetchPart(next, 3, 4);
  alignas(16) float l_new[4];
  _mm_store_ps(l_new, _mm_fmadd_ps(_mm_load_ps(l_old), corr, ReduceLanes4<false>(p_sum)));
  for (int h = 0; h < 4; ++h) {
    states[h * state_stride + hd] = m_new[h];
    states[h * state_stride + hd + 1] = l_new[h];
  }
  // Value coefficients to int8 per head and group; the epilogue does acc = acc * correction + min term + sum.
  alignas(16) float value_scale[4 * kGroups], value_add[4 * kGroups];  // [head][group]
  int32_t* value_words = s.coef_words.data() + 2 * hd;  // [kGroups][tokens / 4][4 heads], then the residual words
  const int n_value_words = kGroups * tokens;
  for (int g = 0; g < kGroups; ++g) {
    alignas(16) float scale[4], inverse[4], add[4];
    ScaleAndInverse(ReduceLanes4<true>(value_max[g]), scale, inverse);
    _mm_store_ps(add, ReduceLanes4<false>(min_term[g]));
    for (int h = 0; h < 4; ++h) {
      value_scale[h * kGroups + g] = scale[h];
      value_add[h * kGroups + g] = add[h];
    }
    int32_t* words = value_words + g * tokens;
    QuantizeWithInverse(value_coef + g * tokens, static_cast<size_t>(kGroups) * tokens, 4, tokens, inverse, words,
                        kValueBits != 2 ? words + n_value_words : nullptr, 4);
  }
  Int8Coefficients value_c{value_words, value_words + n_value_words, value_scale, 4, tokens / 4, kGroups};
  value_c.keep = correction;
  value_c.add = value_add;
  const CodeRows value_rows{values + f.value_codes_offset, f.row_code_bytes, tokens, hd, kValueBits, f.group};
  AccumulateFourHeads<kValueBits>(value_rows, value_c, states, state_stride, s);
}

// VnniPageStep over the GQA group's query heads (group % 4 == 0) for one page (VnniPageFits) of KV head kvh.
//   qs: [group][head_dim], queries times the softmax scale;  states: [group][state_stride];
//   next: the next page's KV head kvh section, prefetched during the step (or none).
void VnniDecodePage(const kv::PageFormat& f, const uint8_t* page, int kvh, int group, const float* qs, float* states,
                    size_t state_stride, FusedScratch& s, const NextPageHead& next) {
  const int hd = f.head_dim;
  const size_t coef_floats = 4 * static_cast<size_t>(std::max(hd, f.n_groups * f.tokens));
  if (s.key_coef.size() < coef_floats) s.key_coef.resize(coef_floats);
  if (s.value_coef.size() < coef_floats) s.value_coef.resize(coef_floats);
  const size_t score_floats = 4 * static_cast<size_t>(f.tokens) * f.n_groups;  // rotated keys: one set per group
  if (s.scores.size() < score_floats) s.scores.resize(score_floats);
  const size_t words = 2 * static_cast<size_t>(hd) + 2 * static_cast<size_t>(f.n_groups) * f.tokens;
  if (s.coef_words.size() < words) s.coef_words.resize(words);
  const uint8_t* keys = page + f.key_section(kvh);
  const uint8_t* values = page + f.value_section(kvh);
  using Step = void (*)(const kv::PageFormat&, const uint8_t*, const uint8_t*, const float*, float*, size_t,
                        FusedScratch&, const NextPageHead&);
  static constexpr Step kSteps[3][3][2] = {  // [key bits - 2][value bits - 2][value groups - 1]
      {{VnniPageStep<2, 2, 1>, VnniPageStep<2, 2, 2>}, {VnniPageStep<2, 3, 1>, VnniPageStep<2, 3, 2>},
       {VnniPageStep<2, 4, 1>, VnniPageStep<2, 4, 2>}},
      {{VnniPageStep<3, 2, 1>, VnniPageStep<3, 2, 2>}, {VnniPageStep<3, 3, 1>, VnniPageStep<3, 3, 2>},
       {VnniPageStep<3, 4, 1>, VnniPageStep<3, 4, 2>}},
      {{VnniPageStep<4, 2, 1>, VnniPageStep<4, 2, 2>}, {VnniPageStep<4, 3, 1>, VnniPageStep<4, 3, 2>},
       {VnniPageStep<4, 4, 1>, VnniPageStep<4, 4, 2>}}};
  const Step step = kSteps[f.key_bits - 2][f.value_bits - 2][f.n_groups - 1];
  for (int h = 0; h < group; h += 4) {
    const NextPageHead ahead = h == 0 ? next : NextPageHead{};  // the first block of heads prefetches
    step(f, keys, values, qs + static_cast<size_t>(h) * hd, states + static_cast<size_t>(h) * state_stride, state_stride,
         s, ahead);
  }
}
