// Runtime self-test kernel: each CTA copies one tile of a 2-D tensor global -> shared memory with a
// TMA load completing on an mbarrier, then shared -> global with a TMA store. Proves that descriptors,
// launch parameters, dynamic shared memory and the barrier protocol all work on the device.
#pragma once
#include <deep_gemm/ptx.cuh>

namespace deep_gemm {

struct TmaCopyParams {
    TmaDescriptor src;   // box = [box_cols, box_rows]
    TmaDescriptor dst;   // same box
    u32 box_bytes;       // full box size: TMA counts out-of-bounds fill toward the transaction too
    u32 box_cols, box_rows;
    u32 tiles_per_row;
};

__global__ void __launch_bounds__(128, 1) tma_copy_kernel(const __grid_constant__ TmaCopyParams p) {
    extern __shared__ __align__(1024) u8 smem[];
    __shared__ u64 bar;
    const i32 col = (blockIdx.x % p.tiles_per_row) * p.box_cols;
    const i32 row = (blockIdx.x / p.tiles_per_row) * p.box_rows;
    if (threadIdx.x == 0) {
        mbar_init(&bar, 1);
        fence_mbar_init();
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        mbar_arrive_expect_tx(&bar, p.box_bytes);
        tma_load_2d(smem, &p.src, &bar, col, row);
        mbar_wait(&bar, 0);
        tma_store_2d(&p.dst, smem, col, row);
        tma_store_commit();
        tma_store_wait_all();
    }
}

}  // namespace deep_gemm
