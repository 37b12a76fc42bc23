// Thin wrappers over the Hopper PTX this library uses: shared-memory addressing, mbarriers,
// TMA (cp.async.bulk.tensor), clusters, proxy fences and register reallocation.
// Self-contained on purpose: NVRTC compiles it with no CUDA headers on the include path.
#pragma once

namespace deep_gemm {

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef int i32;
typedef unsigned long long u64;
typedef long long i64;

// A CUtensorMap as the driver encodes it: 128 opaque bytes, 64-byte aligned. The kernel receives
// it by value inside a __grid_constant__ parameter struct, so TMA reads it from parameter space.
struct alignas(64) TmaDescriptor {
    u64 opaque[16];
};

#define DG_DEVICE __device__ __forceinline__

// A compile-time index carried by type, for lambdas that must address register arrays statically.
template <u32 V> struct IntConst { static constexpr u32 value = V; };

template <typename T>
DG_DEVICE T ceil_div(T a, T b) { return (a + b - 1) / b; }

// The shared-window address of a generic pointer into shared memory. The intrinsic, unlike a
// volatile cvta, lets the compiler hoist the conversion (two special-register reads) out of loops.
DG_DEVICE u32 smem_u32(const void* ptr) { return static_cast<u32>(__cvta_generic_to_shared(ptr)); }

DG_DEVICE u32 lane_id() { u32 r; asm volatile("mov.u32 %0, %%laneid;" : "=r"(r)); return r; }
// True in exactly one lane of the warp (all 32 lanes must execute it).
DG_DEVICE bool elect_one_sync() {
    u32 elected;
    asm volatile("{\n\t.reg .pred p;\n\telect.sync _|p, 0xffffffff;\n\tselp.u32 %0, 1, 0, p;\n}" : "=r"(elected));
    return elected != 0;
}

// ---------------------------------------------------------------------------------------------
// Clusters
DG_DEVICE u32 cluster_cta_rank() { u32 r; asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r)); return r; }

DG_DEVICE void cluster_sync() {
    asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}

// Address of the same shared-memory location in another CTA of the cluster.
DG_DEVICE u32 map_to_cta(u32 local_addr, u32 cta_rank) {
    u32 r;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(r) : "r"(local_addr), "r"(cta_rank));
    return r;
}

// ---------------------------------------------------------------------------------------------
// mbarriers (64-bit, in shared memory)
DG_DEVICE void mbar_init(u64* bar, u32 count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" :: "r"(smem_u32(bar)), "r"(count));
}

// Makes barrier initialisation visible to the async proxy (TMA) and to the other CTAs of the cluster.
DG_DEVICE void fence_mbar_init() {
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

DG_DEVICE void mbar_arrive(u64* bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" :: "r"(smem_u32(bar)) : "memory");
}

// Arrive on the barrier at the same offset in CTA `cta_rank` of this cluster (itself included).
// Default (CTA-scope) release semantics on purpose: `.release.cluster` makes ptxas emit a GPU-wide
// MEMBAR before every arrive, which cost about a microsecond per k-block. The arrive only has to
// order this warp's shared-memory reads of the stage, which have completed by then.
DG_DEVICE void mbar_arrive_cluster(u64* bar, u32 cta_rank) {
    asm volatile("mbarrier.arrive.shared::cluster.b64 _, [%0];"
                 :: "r"(map_to_cta(smem_u32(bar), cta_rank)) : "memory");
}

// Orders this thread's earlier memory accesses, and those it has observed, before its later ones
// at cluster scope. A GPU-wide MEMBAR in SASS: once per tile, never per k-block.
DG_DEVICE void fence_acq_rel_cluster() { asm volatile("fence.acq_rel.cluster;" ::: "memory"); }

DG_DEVICE void mbar_arrive_expect_tx(u64* bar, u32 bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" :: "r"(smem_u32(bar)), "r"(bytes) : "memory");
}

DG_DEVICE void mbar_wait(u64* bar, u32 parity) {
    asm volatile(
        "{\n\t.reg .pred done;\n"
        "WAIT_%=:\n\t"
        "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n\t"
        "@!done bra WAIT_%=;\n}"
        :: "r"(smem_u32(bar)), "r"(parity) : "memory");
}

// Waits for a phase and acquires, at cluster scope, what the arriving CTAs released.
DG_DEVICE void mbar_wait_cluster(u64* bar, u32 parity) {
    asm volatile(
        "{\n\t.reg .pred done;\n"
        "WAIT_%=:\n\t"
        "mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 done, [%0], %1;\n\t"
        "@!done bra WAIT_%=;\n}"
        :: "r"(smem_u32(bar)), "r"(parity) : "memory");
}

// 16 bytes from the shared memory of another CTA of the cluster (a shared::cluster address).
DG_DEVICE float4 ld_dsmem_f32x4(u32 cluster_addr) {
    float4 v;
    asm volatile("ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [%4];"
                 : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w) : "r"(cluster_addr));
    return v;
}

// ---------------------------------------------------------------------------------------------
// TMA
DG_DEVICE void tma_prefetch_descriptor(const TmaDescriptor* desc) {
    asm volatile("prefetch.tensormap [%0];" :: "l"(reinterpret_cast<u64>(desc)) : "memory");
}

DG_DEVICE void tma_load_2d(void* dst, const TmaDescriptor* desc, u64* bar, i32 c0, i32 c1) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];"
        :: "r"(smem_u32(dst)), "l"(reinterpret_cast<u64>(desc)), "r"(smem_u32(bar)), "r"(c0), "r"(c1)
        : "memory");
}

DG_DEVICE void tma_load_3d(void* dst, const TmaDescriptor* desc, u64* bar, i32 c0, i32 c1, i32 c2) {
    asm volatile(
        "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5}], [%2];"
        :: "r"(smem_u32(dst)), "l"(reinterpret_cast<u64>(desc)), "r"(smem_u32(bar)), "r"(c0), "r"(c1), "r"(c2)
        : "memory");
}

// Same load, written into the same smem offset of every CTA in `cta_mask`; each destination CTA's
// barrier at `bar`'s offset receives the byte count.
DG_DEVICE void tma_load_2d_multicast(void* dst, const TmaDescriptor* desc, u64* bar, i32 c0, i32 c1, u16 cta_mask) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster"
        " [%0], [%1, {%3, %4}], [%2], %5;"
        :: "r"(smem_u32(dst)), "l"(reinterpret_cast<u64>(desc)), "r"(smem_u32(bar)), "r"(c0), "r"(c1), "h"(cta_mask)
        : "memory");
}

DG_DEVICE void tma_load_3d_multicast(void* dst, const TmaDescriptor* desc, u64* bar, i32 c0, i32 c1, i32 c2, u16 cta_mask) {
    asm volatile(
        "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster"
        " [%0], [%1, {%3, %4, %5}], [%2], %6;"
        :: "r"(smem_u32(dst)), "l"(reinterpret_cast<u64>(desc)), "r"(smem_u32(bar)), "r"(c0), "r"(c1), "r"(c2), "h"(cta_mask)
        : "memory");
}

DG_DEVICE void tma_store_2d(const TmaDescriptor* desc, const void* src, i32 c0, i32 c1) {
    asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%2, %3}], [%1];"
                 :: "l"(reinterpret_cast<u64>(desc)), "r"(smem_u32(src)), "r"(c0), "r"(c1) : "memory");
}

// An L2 policy for data written once and not read again by this kernel (a GEMM's output): its lines
// are evicted first, so a large output stream does not push the operand tiles that other CTAs are
// about to load out of L2 (H200, 4096x32768x512: +1.4%).
DG_DEVICE u64 l2_evict_first_policy() {
    u64 policy;
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
    return policy;
}

// The stores below take such a policy.
DG_DEVICE void tma_store_2d(const TmaDescriptor* desc, const void* src, i32 c0, i32 c1, u64 policy) {
    asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group.L2::cache_hint [%0, {%2, %3}], [%1], %4;"
                 :: "l"(reinterpret_cast<u64>(desc)), "r"(smem_u32(src)), "r"(c0), "r"(c1), "l"(policy) : "memory");
}

DG_DEVICE void tma_store_3d(const TmaDescriptor* desc, const void* src, i32 c0, i32 c1, i32 c2, u64 policy) {
    asm volatile("cp.async.bulk.tensor.3d.global.shared::cta.bulk_group.L2::cache_hint [%0, {%2, %3, %4}], [%1], %5;"
                 :: "l"(reinterpret_cast<u64>(desc)), "r"(smem_u32(src)), "r"(c0), "r"(c1), "r"(c2), "l"(policy)
                 : "memory");
}

// Element-wise global += shared (the type comes from the tensor map); each element is touched once.
DG_DEVICE void tma_reduce_add_2d(const TmaDescriptor* desc, const void* src, i32 c0, i32 c1, u64 policy) {
    asm volatile("cp.reduce.async.bulk.tensor.2d.global.shared::cta.add.bulk_group.L2::cache_hint"
                 " [%0, {%2, %3}], [%1], %4;"
                 :: "l"(reinterpret_cast<u64>(desc)), "r"(smem_u32(src)), "r"(c0), "r"(c1), "l"(policy) : "memory");
}

DG_DEVICE void tma_store_commit() { asm volatile("cp.async.bulk.commit_group;" ::: "memory"); }

// Waits until the committed stores have finished reading shared memory (so it may be rewritten).
DG_DEVICE void tma_store_wait_smem_read() { asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory"); }

// Waits until the committed stores are complete in global memory.
DG_DEVICE void tma_store_wait_all() { asm volatile("cp.async.bulk.wait_group 0;" ::: "memory"); }

// Generic-proxy writes to shared memory (st.shared, stmatrix) must be fenced before TMA reads them.
DG_DEVICE void fence_async_shared() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }

// ---------------------------------------------------------------------------------------------
// Named barriers (id 0 is __syncthreads)
DG_DEVICE void named_barrier_sync(u32 id, u32 num_threads) {
    asm volatile("bar.sync %0, %1;" :: "r"(id), "r"(num_threads) : "memory");
}

// ---------------------------------------------------------------------------------------------
// Register reallocation between warpgroups (needs a register cap at entry: __launch_bounds__(n, 1)).
template <u32 kRegs> DG_DEVICE void warpgroup_release_registers() {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" :: "n"(kRegs));
}
template <u32 kRegs> DG_DEVICE void warpgroup_claim_registers() {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" :: "n"(kRegs));
}

// ---------------------------------------------------------------------------------------------
// Conversions and global accesses
DG_DEVICE u32 pack_bf16x2(float lo, float hi) {
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %2, %1;" : "=r"(r) : "f"(lo), "f"(hi));
    return r;
}

// Stores 8x8 b16 matrices; lane l gives the address of row l % 8 of matrix l / 8, and register i
// of every lane holds its fragment of matrix i (row lane / 4, columns (lane % 4) * 2 + {0, 1}).
DG_DEVICE void stmatrix_x2(u32 addr, u32 r0, u32 r1) {
    asm volatile("stmatrix.sync.aligned.m8n8.x2.shared.b16 [%0], {%1, %2};" :: "r"(addr), "r"(r0), "r"(r1) : "memory");
}
DG_DEVICE void stmatrix_x4(u32 addr, u32 r0, u32 r1, u32 r2, u32 r3) {
    asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};"
                 :: "r"(addr), "r"(r0), "r"(r1), "r"(r2), "r"(r3) : "memory");
}
DG_DEVICE void st_shared_f32x2(u32 addr, float a, float b) {
    asm volatile("st.shared.v2.f32 [%0], {%1, %2};" :: "r"(addr), "f"(a), "f"(b));
}

// Asynchronous 4-byte global -> shared copy (LDGSTS): the latency is paid while other work runs.
DG_DEVICE void cp_async_4(u32 smem_addr, const void* gmem) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" :: "r"(smem_addr), "l"(gmem) : "memory");
}
DG_DEVICE void cp_async_wait_all() { asm volatile("cp.async.wait_all;" ::: "memory"); }

DG_DEVICE float ld_global_nc_f32(const float* p) {
    float v;
    asm volatile("ld.global.nc.f32 %0, [%1];" : "=f"(v) : "l"(p));
    return v;
}

}  // namespace deep_gemm
