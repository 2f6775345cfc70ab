/* cuda/: the GPU backend. Built only when nvcc is present (SL_HAVE_CUDA).
 *
 * Device discovery, and an sl_backend (model/model.h's ops table) on one CUDA device:
 *   - memory: one cudaMalloc of the VRAM budget at create; alloc/free are a first-fit arena
 *     inside it (256-byte aligned), so nothing is allocated from the driver on a per-token path;
 *   - order: every op runs on the backend's compute stream; upload/download synchronise, so host
 *     buffers may be reused when they return. A second (copy) stream and events let stream/
 *     overlap uploads with compute (the functions at the end of this header);
 *   - errors: ops return void, so the first CUDA error (or bad argument) an op meets is kept in
 *     the backend ("sticky"), with the call, file:line, error name and text. Every later op is
 *     skipped, and download (and upload) return SL_E_DEVICE until the backend is destroyed; the
 *     message is sl_cuda_backend_error(). Kernel faults surface at the next synchronising call;
 *     set SL_CUDA_SYNC=1 in the environment to synchronise after every launch and name the op.
 *   - numerics: activations are stored fp32 and every sum is accumulated in fp32; weights are
 *     decoded inside the matrix products (exactly: every code of every format is an fp32 value).
 *     Matmuls of few tokens are fp32 GEMVs (up to 4 on fp8/q8/q4 weights, 6 on bf16, 12 on f32:
 *     the measured crossover, kernels_matmul.cu); of more tokens on bf16/fp8/q8/q4 weights,
 *     tensor-core products whose activation rounding sl_cuda_set_activations chooses (below).
 *   - cuBLAS is loaded (dlopen) the first time a matmul path uses it, not at create; its scratch
 *     is a fixed slice of the workspace.
 *
 * This header is C and C++: model.h is a C header, so it is included inside extern "C". */
#ifndef SL_CUDA_H
#define SL_CUDA_H

#include <signal.h> /* the system headers model.h pulls in, first, outside extern "C" */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "model/model.h"

/* Number of CUDA devices usable by this process; 0 when there is no driver or no GPU (never an
 * error: a CPU-only box is normal). */
int sl_cuda_device_count(void);

/* One line describing device `dev` ("NVIDIA H100 80GB HBM3, sm_90, 79.1 GiB, 132 SMs") into buf.
 * Returns 0, or a negative SL_E_DEVICE when the runtime refuses. */
int sl_cuda_describe(int dev, char *buf, size_t n);

/* ---- the backend --------------------------------------------------------------------------- */

/* Create a backend on CUDA device `device` owning `vram_budget` bytes of device memory, taken
 * with one cudaMalloc now (0: all free memory but 1 GiB, kept for the CUDA context and
 * libraries). Of it, a fixed workspace (split-K partial sums, min(64 MiB, budget/8)) is kept
 * internally; the rest serves ops->alloc. Destroy with b->ops->destroy(b).
 * Errors: SL_E_ARG (no such device), SL_E_DEVICE (runtime error, text in e), SL_E_NOMEM (the
 * budget cannot be allocated, or host memory). Cost: one device allocation, two streams. */
int sl_cuda_backend_create(int device, size_t vram_budget, sl_backend **out, sl_error *e);

/* The sticky error message ("" while none). Valid until the backend is destroyed. */
const char *sl_cuda_backend_error(sl_backend *b);

/* Wait for both streams; returns 0 or SL_E_DEVICE (the sticky error, or the one found now, in e). */
int sl_cuda_sync(sl_backend *b, sl_error *e);

/* Arena figures in bytes: capacity (for ops->alloc), in use now, largest use so far. */
void sl_cuda_arena_stats(sl_backend *b, size_t *capacity, size_t *used, size_t *peak);

/* Benchmarks only: change the few-token matmul's settings, with the syntax of the SL_CUDA_GEMV
 * environment variable ("max=12,pdl=1,pf=0,fill=2,small=1", any subset; cuda/internal.cuh
 * says what each is). Keys not named keep their value. Returns 0, or SL_E_DEVICE after an
 * error. */
int sl_cuda_gemv_tune(sl_backend *b, const char *spec);

/* For tests: the most tokens a matmul takes on the GEMV, per weight format (quant.h's SL_WF_*
 * order); past them it goes to the GEMM, which rounds x in bf16-activation mode. */
void sl_cuda_gemv_tokens(sl_backend *b, int out[5]);

/* The compute stream as a cudaStream_t (void * keeps this header free of cuda_runtime.h), for
 * timing with events in benchmarks. */
void *sl_cuda_compute_stream(sl_backend *b);

/* ---- numerics and paths of the many-token matrix products ---------------------------------
 * matmul of more tokens than the GEMV takes (above: 4 on fp8/q8/q4 weights, 6 on bf16) on bf16,
 * fp8, q8 or q4 weights runs on tensor cores: bf16 x bf16
 * products with fp32 sums. The fused kernel decodes weight codes exactly (every code is a bf16
 * value) and applies scales to fp32 partial sums of 32 columns; cuBLAS takes bf16 weights as
 * stored. What the activations x are rounded to:
 *   SL_CUDA_ACT_F32 (the default): x is split as hi + lo, two bf16 values, and both are
 *     multiplied (twice the tensor-core work): x is kept to 2^-16 relative, so results match the
 *     CPU backend to ~3e-6 relative L2 (~8e-6 through cuBLAS), like fp32 FMA. Weights are never
 *     rounded.
 *   SL_CUDA_ACT_BF16: x is rounded to bf16 (nearest even) where the product reads it, one
 *     multiply: ~1.7e-3 relative L2 from the CPU backend on random data. Quantized weights are
 *     rounded too (code * scale to bf16, nearest even; ~2.4e-3 together) where they go through a
 *     bf16 copy: on sm_90 (H100/H200) from 192 to 511 tokens (96 to 255 when cols <= 4096)
 *     through the wgmma kernel (kernels_wgmma.cu, the copy made per block in shared memory),
 *     above through cuBLAS on a copy in the workspace; on other GPUs through cuBLAS from 256
 *     tokens (128 when cols <= 4096). Both give the same numbers for the same weights.
 * Not affected, fp32 in both modes: matmul of the GEMV's few tokens (it reads x in fp32; rounding
 * it would cost a pass and save nothing), matmul on f32 weights, MLA attention's products, and
 * every other op (norms, rope, softmax, routing, elementwise). fp8 codes 0x7f/0xff (NaN) read as
 * +-480 in the fused kernel; quantizers never write them.
 * Returns 0, or SL_E_ARG for another value. Affects ops queued after it. Cost: none. */
typedef enum { SL_CUDA_ACT_F32 = 0, SL_CUDA_ACT_BF16 = 1 } sl_cuda_act;
int sl_cuda_set_activations(sl_backend *b, sl_cuda_act act, sl_error *e);

/* For benchmarks and tests: pin the many-token matmul (past the GEMV's token count) to one path.
 *   SL_CUDA_GEMM_AUTO   the default: on bf16 weights the fused tensor-core kernel
 *                       (kernels_tc.cu) below 64 tokens, cuBLAS from 64; on fp8/q8/q4 the
 *                       fused kernel, or in bf16-activation mode the wgmma kernel from 192 to
 *                       511 tokens (96 to 255 when cols <= 4096) on sm_90, cuBLAS on a bf16 copy
 *                       above (elsewhere from 256 tokens, 128 when cols <= 4096); the fp32
 *                       kernel on f32 weights (the crossovers: bench/results/gemm-h100-2026-11-24.md,
 *                       gemm-h100-2026-12-06.md);
 *   SL_CUDA_GEMM_SIMT   the fp32 FMA kernel for every format (no tensor cores, x never rounded);
 *   SL_CUDA_GEMM_TC     the fused tensor-core kernel for bf16/fp8/q8/q4 weights;
 *   SL_CUDA_GEMM_CUBLAS cuBLAS bf16 GEMMs (two, hi and lo, in fp32-activation mode): on bf16
 *                       weights as stored; on fp8/q8/q4 in bf16-activation mode on a bf16 copy
 *                       (in fp32 mode those stay on the fused kernel, never rounded);
 *   SL_CUDA_GEMM_WGMMA  the wgmma kernel (sm_90 built as sm_90a, bf16-activation mode, cols a
 *                       multiple of 64, aligned planes); elsewhere the fused kernel.
 * token_tile: the tensor-core kernel's tokens per block, 16, 32, 64 or 128, or the wgmma kernel's,
 * 128 or 256 (0: by token count; odd or misaligned weights always use 16). Returns 0, SL_E_ARG (bad value) or SL_E_UNSUPPORTED
 * (cuBLAS asked for and it cannot be loaded: reason in e). Cost: loading cuBLAS (~0.1-1 s) the
 * first time it is asked for. */
typedef enum {
    SL_CUDA_GEMM_AUTO = 0,
    SL_CUDA_GEMM_SIMT = 1,
    SL_CUDA_GEMM_TC = 2,
    SL_CUDA_GEMM_CUBLAS = 3,
    SL_CUDA_GEMM_WGMMA = 4,
} sl_cuda_gemm_path;
int sl_cuda_set_gemm_path(sl_backend *b, sl_cuda_gemm_path path, int token_tile, sl_error *e);

/* ---- overlap of uploads with compute (for stream/) -------------------------------------------
 * The pattern, per VRAM slot: copy stream waits on the slot's "free" event, copies into it and
 * records its "ready" event; the compute stream waits on "ready", runs the ops that read the slot,
 * then records "free". All calls return at once; 0 or SL_E_DEVICE (text in e). */
typedef struct sl_cuda_event sl_cuda_event;

int sl_cuda_event_create(sl_backend *b, sl_cuda_event **out, sl_error *e);
void sl_cuda_event_destroy(sl_cuda_event *ev); /* NULL is fine */

/* Queue a host -> device copy of `bytes` on the copy stream, then record `ready` (may be NULL)
 * after it. src must stay untouched until `ready` completes; for the copy to overlap compute it
 * must be pinned (cudaHostRegister / sl_upload). dst is backend memory. */
int sl_cuda_upload_async(sl_backend *b, void *dst, const void *src, size_t bytes,
                         sl_cuda_event *ready, sl_error *e);
/* Make the compute stream (every later op) wait for `ev`, e.g. an upload's "ready" event. */
int sl_cuda_compute_wait(sl_backend *b, sl_cuda_event *ev, sl_error *e);
/* Record `ev` on the compute stream after the ops queued so far, e.g. a slot's "free" event. */
int sl_cuda_compute_record(sl_backend *b, sl_cuda_event *ev, sl_error *e);
/* Make the copy stream (every later upload) wait for `ev`, e.g. a slot's "free" event. */
int sl_cuda_copy_wait(sl_backend *b, sl_cuda_event *ev, sl_error *e);
/* Host side: 1 when `ev` has completed (or was never recorded), 0 when pending, or SL_E_DEVICE. */
int sl_cuda_event_query(sl_cuda_event *ev, sl_error *e);
/* Host side: block until `ev` has completed. */
int sl_cuda_event_wait(sl_cuda_event *ev, sl_error *e);

#ifdef __cplusplus
}
#endif

#endif
