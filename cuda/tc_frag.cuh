// cuda/ private: how the tensor-core matmul (kernels_tc.cu) lays weights and activations out in
// shared memory and turns them into mma.m16n8k16 fragments. Host and device code, so the layout
// can be checked on a machine without a GPU (every function here is plain integer and bf16 work).
//
// A stage holds 64 columns of k: two 32-column groups (the q8/q4 scale group). A warp takes one
// group of 32 rows; a thread (g = lane / 4, q = lane % 4) owns the 8 consecutive columns
// 8q..8q+7 of the group in rows g and g + 8 of each 16-row fragment, and the same 8 columns of
// token g of each 8-token fragment. mma.m16n8k16 wants 2 consecutive k of one row per 32-bit
// register; which 2 of a thread's 8 columns share a register does not matter to a dot product as
// long as the activation registers pair the same columns. So each format pairs its codes in the
// order that decodes cheapest (TC_PERM), and the activations are written in that order too.
#ifndef SL_CUDA_TC_FRAG_CUH
#define SL_CUDA_TC_FRAG_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>
#include <string.h>

extern "C" {
#include "quant/quant.h"
}

#define SL_TC_HD __host__ __device__ __forceinline__

enum { TC_BM = 128, TC_BK = 64 }; // weight rows per block, columns per stage

// Bytes of one weight row in a stage (64 columns) and the pairing order of its 8-column runs.
template <int FMT> struct tc_fmt;
template <> struct tc_fmt<SL_WF_BF16> { static constexpr int RB = 128, PERM = 0; };
template <> struct tc_fmt<SL_WF_FP8> { static constexpr int RB = 64, PERM = 1; };
template <> struct tc_fmt<SL_WF_Q8> { static constexpr int RB = 64, PERM = 1; };
template <> struct tc_fmt<SL_WF_Q4> { static constexpr int RB = 32, PERM = 2; };

// Position i of a permuted 8-column run holds column tc_perm(perm, i); register j pairs positions
// 2j and 2j + 1. PERM 0: (0,1) (2,3) (4,5) (6,7); 1: (0,2) (1,3) (4,6) (5,7), bytes 0 and 2 of a
// word decode together; 2: (0,4) (1,5) (2,6) (3,7), nibbles j and j + 4 of a word do.
SL_TC_HD int tc_perm(int perm, int i)
{
    return perm == 1 ? (i & 4) | ((i & 1) << 1) | ((i >> 1) & 1) : perm == 2 ? (i >> 1) | ((i & 1) << 2) : i;
}

// Shared-memory swizzles: 16-byte chunk c of row r is stored at chunk tc_wswz(r, c) of that row,
// so the 8-column reads of tc_load_a (8, 16 or 4 bytes a thread) of one warp-wide load hit
// distinct banks (fp8/q8: 4 rows x 32 bytes per half-warp; bf16: 2 rows x 64 bytes per quarter;
// q4: 8 rows x 16 bytes). Rows g and g + 8 of a fragment start at multiples of 8, so only r % 8
// matters.
template <int FMT> SL_TC_HD int tc_wswz(int r, int c)
{
    if (FMT == SL_WF_BF16)
        return c ^ ((r & 1) << 2);
    if (FMT == SL_WF_Q4)
        return c ^ ((r >> 2) & 1);
    return c ^ (((r >> 1) & 1) << 1);
}
// Activations: 64 bf16 (8 chunks) per token row, read 16 bytes a thread by 2 tokens per quarter.
SL_TC_HD int tc_xswz(int t, int c) { return c ^ ((t & 1) << 2); }

// Byte offsets in a stage of weight chunk c of row r, and of activation chunk c of token t.
template <int FMT> SL_TC_HD int tc_wpos(int r, int c) { return r * tc_fmt<FMT>::RB + 16 * tc_wswz<FMT>(r, c); }
SL_TC_HD int tc_xpos(int t, int c) { return t * 128 + 16 * tc_xswz(t, c); }

// d += a . b on tensor cores: one mma.m16n8k16 (row-major 16x16 bf16 a, 16x8 b, fp32 d), the
// fragments as the PTX manual lays them out (thread g = lane / 4, q = lane % 4: a0 row g, k 2q;
// a1 row g + 8; a2, a3 the same at k 2q + 8; b0 k 2q, column g; b1 k 2q + 8; d0, d1 row g,
// columns 2q, 2q + 1; d2, d3 row g + 8).
#ifdef __CUDACC__
__device__ __forceinline__ void tc_mma(float d[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                       uint32_t b0, uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
#endif

// ---- exact decoding of codes to bf16 pairs ---------------------------------------------------

SL_TC_HD uint32_t tc_f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
SL_TC_HD float tc_u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// a - b and a * b on bf16 pairs; the callers' results are exactly representable, so the host
// version (through fp32, for layout checks off the GPU) gives the same bits.
SL_TC_HD uint32_t tc_bsub2(uint32_t a, uint32_t b)
{
#ifdef __CUDA_ARCH__
    __nv_bfloat162 r = __hsub2(*(const __nv_bfloat162 *)&a, *(const __nv_bfloat162 *)&b);
    return *(const uint32_t *)&r;
#else
    float lo = tc_u2f(a << 16) - tc_u2f(b << 16), hi = tc_u2f(a & 0xffff0000u) - tc_u2f(b & 0xffff0000u);
    return (tc_f2u(hi) & 0xffff0000u) | (tc_f2u(lo) >> 16);
#endif
}
SL_TC_HD uint32_t tc_bmul2(uint32_t a, uint32_t b)
{
#ifdef __CUDA_ARCH__
    __nv_bfloat162 r = __hmul2(*(const __nv_bfloat162 *)&a, *(const __nv_bfloat162 *)&b);
    return *(const uint32_t *)&r;
#else
    float lo = tc_u2f(a << 16) * tc_u2f(b << 16), hi = tc_u2f(a & 0xffff0000u) * tc_u2f(b & 0xffff0000u);
    return (tc_f2u(hi) & 0xffff0000u) | (tc_f2u(lo) >> 16);
#endif
}

// (u & mask) | bits in one instruction: ptxas splits the C expression into two LOP3s, one for
// each immediate (SASS of the q4 GEMV kernel, H100), where lop3 takes the second from a register.
template <uint32_t MASK, uint32_t BITS> SL_TC_HD uint32_t tc_and_or(uint32_t u)
{
#ifdef __CUDA_ARCH__
    uint32_t r;
    asm("lop3.b32 %0, %1, %2, %3, 0xea;" : "=r"(r) : "r"(u), "n"(MASK), "r"(BITS)); // (a & b) | c
    return r;
#else
    return (u & MASK) | BITS;
#endif
}

// e4m3 bytes 0 and 2 (even) or 1 and 3 (odd) of u -> bf16 pair. The code's 7 magnitude bits
// placed at bf16 bits 4..10 read as the value times 2^-120, subnormal codes included (they land
// on bf16 subnormals, which bf16 arithmetic keeps); one exact multiply by 2^120 (0x7b80) scales
// back. NaN codes (0x7f, 0xff) come out as +-480, not NaN (quantizers never write them).
SL_TC_HD uint32_t tc_fp8_even(uint32_t u)
{
    return tc_bmul2(((u << 4) & 0x07f007f0u) | ((u << 8) & 0x80008000u), 0x7b807b80u);
}
SL_TC_HD uint32_t tc_fp8_odd(uint32_t u)
{
    return tc_bmul2(((u >> 4) & 0x07f007f0u) | (u & 0x80008000u), 0x7b807b80u);
}
// int8 bytes 0 and 2 of u -> bf16 pair: bf16 0x4300 | m is 128 + m for the low 7 bits m, and
// 0x4300 | (sign << 7) is 128 or 256, so the difference is m or m - 128: the signed value.
SL_TC_HD uint32_t tc_q8_even(uint32_t u)
{
    return tc_bsub2(tc_and_or<0x007f007fu, 0x43004300u>(u), tc_and_or<0x00800080u, 0x43004300u>(u));
}
// Nibbles 0 and 4 of u -> bf16 pair of (nibble - 8): (128 + nibble) - 136.
SL_TC_HD uint32_t tc_q4_pair(uint32_t u)
{
    return tc_bsub2(tc_and_or<0x000f000fu, 0x43004300u>(u), 0x43084308u);
}

// 8 consecutive activations -> bf16 pairs in PERM order: hi = bf16(x) (round to nearest even),
// and lo = bf16(x - hi), so hi + lo is x to within 2^-16 relative (|x - hi| <= 2^-8 |x|).
SL_TC_HD void tc_split8(const float v[8], int perm, uint32_t hi[4], uint32_t lo[4])
{
    for (int j = 0; j < 4; j++) {
        float a = v[tc_perm(perm, 2 * j)], b = v[tc_perm(perm, 2 * j + 1)];
        __nv_bfloat162 h = __floats2bfloat162_rn(a, b); // .x (low half) = a
        float2 hf = __bfloat1622float2(h);
        __nv_bfloat162 l = __floats2bfloat162_rn(a - hf.x, b - hf.y);
        memcpy(&hi[j], &h, 4);
        memcpy(&lo[j], &l, 4);
    }
}

// 8 consecutive codes at p (16, 8, 8 or 4 bytes, aligned to that) -> 4 bf16 pairs in TC_PERM order.
template <int FMT> SL_TC_HD void tc_decode8(const uint8_t *p, uint32_t w[4])
{
    if (FMT == SL_WF_BF16) {
        uint4 v = *(const uint4 *)p;
        w[0] = v.x, w[1] = v.y, w[2] = v.z, w[3] = v.w;
    } else if (FMT == SL_WF_FP8) {
        uint2 v = *(const uint2 *)p;
        w[0] = tc_fp8_even(v.x), w[1] = tc_fp8_odd(v.x), w[2] = tc_fp8_even(v.y), w[3] = tc_fp8_odd(v.y);
    } else if (FMT == SL_WF_Q8) {
        uint2 v = *(const uint2 *)p;
        w[0] = tc_q8_even(v.x), w[1] = tc_q8_even(v.x >> 8), w[2] = tc_q8_even(v.y), w[3] = tc_q8_even(v.y >> 8);
    } else {
        uint32_t v = *(const uint32_t *)p;
        w[0] = tc_q4_pair(v), w[1] = tc_q4_pair(v >> 4), w[2] = tc_q4_pair(v >> 8), w[3] = tc_q4_pair(v >> 12);
    }
}

// A thread's 8 columns (run 8q..8q+7 of group kg) of weight row r in a stage -> 4 bf16 pairs in
// TC_PERM order. `ws` is the stage's weight tile: 128 rows of RB bytes, chunks swizzled.
template <int FMT> SL_TC_HD void tc_load_a(const uint8_t *ws, int r, int kg, int q, uint32_t w[4])
{
    constexpr int RB = tc_fmt<FMT>::RB;
    int off = kg * (RB / 2) + q * (RB / 8);
    tc_decode8<FMT>(ws + tc_wpos<FMT>(r, off >> 4) + (off & 15), w);
}

// The same 8 columns of token row t of a stage's activation tile (64 bf16 a row, swizzled).
SL_TC_HD uint4 tc_load_b(const uint8_t *xs, int t, int kg, int q)
{
    return *(const uint4 *)(xs + tc_xpos(t, 4 * kg + q));
}

// The scale of row r's group kg in a stage: q8/q4 keep 2 f16 a row (4 bytes), fp8 one f32 for the
// whole block (128 rows are one scale block), bf16 none.
template <int FMT> SL_TC_HD float tc_scale(const uint8_t *ss, int r, int kg)
{
    if (FMT == SL_WF_BF16)
        return 1.0f;
    if (FMT == SL_WF_FP8)
        return *(const float *)ss;
    uint16_t h;
    memcpy(&h, ss + 4 * r + 2 * kg, 2);
    return __half2float(__ushort_as_half(h));
}

#endif
