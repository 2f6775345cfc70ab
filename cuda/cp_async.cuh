// cuda/ private: cp.async (sm_80+) wrappers shared by the tensor-core matmuls (kernels_tc.cu,
// kernels_wgmma.cu): global -> shared copies that bypass registers, waited for by group.
#ifndef SL_CUDA_CP_ASYNC_CUH
#define SL_CUDA_CP_ASYNC_CUH

// Copy `valid` (0..16) bytes from global to shared memory, zero-filling the rest of the 16.
__device__ __forceinline__ void cp_async16(void *dst, const void *src, int valid)
{
    unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(src), "r"(valid) : "memory");
}
__device__ __forceinline__ void cp_async4(void *dst, const void *src, int valid)
{
    unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(src), "r"(valid) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Wait until at most n of this thread's copy groups are pending (n > 5 waits as for 5:
// stricter, so still correct).
__device__ __forceinline__ void cp_async_wait(int n)
{
    switch (n) {
    case 0: asm volatile("cp.async.wait_group 0;\n" ::: "memory"); break;
    case 1: asm volatile("cp.async.wait_group 1;\n" ::: "memory"); break;
    case 2: asm volatile("cp.async.wait_group 2;\n" ::: "memory"); break;
    case 3: asm volatile("cp.async.wait_group 3;\n" ::: "memory"); break;
    case 4: asm volatile("cp.async.wait_group 4;\n" ::: "memory"); break;
    default: asm volatile("cp.async.wait_group 5;\n" ::: "memory"); break;
    }
}

#endif
