// Warpgroup MMA plumbing: shared-memory matrix descriptors and the fence/commit/wait protocol.
// The per-N instruction wrappers are generated into wgmma_ops.cuh.
#pragma once
#include <deep_gemm/ptx.cuh>
#include <deep_gemm/wgmma_ops.cuh>

namespace deep_gemm {

// Descriptor of a K-major tile whose rows are 128 bytes and 128B-swizzled, as TMA writes it with
// CU_TENSOR_MAP_SWIZZLE_128B. Eight rows form a 1024-byte swizzle atom, hence the 1024-byte stride
// between row groups; the leading offset is unused for swizzled K-major operands. The tile base must
// be 1024-byte aligned; stepping K inside the row is done by adding bytes to the start address.
DG_DEVICE u64 make_kmajor_sw128_desc(const void* smem_tile) {
    const u64 start = (smem_u32(smem_tile) & 0x3FFFFu) >> 4;
    const u64 stride = 1024u >> 4;
    return start | (stride << 32) | (1ull << 62);
}

// Byte offsets are added to a descriptor in 16-byte units.
DG_DEVICE u64 desc_advance(u64 desc, u32 bytes) { return desc + (bytes >> 4); }

DG_DEVICE void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
DG_DEVICE void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int kPending> DG_DEVICE void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;" :: "n"(kPending) : "memory");
}

// Keeps the compiler from moving reads of an accumulator above the wgmma wait that produced it.
DG_DEVICE void pin_register(float& r) { asm volatile("" : "+f"(r) :: "memory"); }

}  // namespace deep_gemm
