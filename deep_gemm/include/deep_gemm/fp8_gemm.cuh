// FP8 GEMM with fine-grained scaling, NT layout, Hopper (sm_90a):
//   D[m, n] = sum_k A[m, k] * sfa[m, k / 128] * B[n, k] * sfb[n / 128, k / 128]   (+ D when accumulating)
// A: e4m3 [M, K] K-major; B: e4m3 [N, K] K-major; sfa: f32, MN-major [ceil(K/128), M_pad4];
// sfb: f32 [ceil(N/128), sfb_ld]; D: bf16 or f32 [M, N].
//
// Persistent and warp-specialized: the last warpgroup is the producer (its first warp walks the
// tiles and one elected lane issues TMA loads of A, B and sfa into a STAGES-deep ring guarded by
// full/empty mbarriers); the other warpgroups do the math. Per 128-wide K block each math
// warpgroup runs four m64nNk32 wgmmas (in a short last K block, only those over its data; TMA
// zero-fills the rest) into a temporary accumulator, waits, and promotes it into
// the FP32 result with both scales (the two-level accumulation that keeps FP8 accurate).
// PIPELINED kernels promote one k-block while the next one's wgmmas run; serial kernels with
// 128-row warpgroups (256-row tiles) run their two m64 slices in turn through one temporary,
// while the other warpgroup keeps the tensor cores busy.
// With a 2-CTA cluster, the operand the pair shares is split in halves, each CTA loads one half
// and multicasts it to both.
//
// Results leave through shared memory: each math warpgroup stages its rows of the tile in
// 128-byte column chunks (the SWIZZLE_128B pattern, so fragment writes are conflict-free) and one
// thread TMA-stores them as whole 128-byte rows, while the next tile's loads are already in flight.
//
// Split-K (small problems that make fewer tiles than SMs): a cluster of SPLIT_K CTAs shares one
// tile, each CTA accumulates one contiguous slice of the K blocks, writes its FP32 partial tile
// to its own shared memory, and every CTA then sums one slice of the tile's elements over all
// partials, read through distributed shared memory in rank order 0..SPLIT_K-1. The order is
// fixed, so results are bitwise reproducible, and no global workspace or counter is involved.
#pragma once
#include <deep_gemm/ptx.cuh>
#include <deep_gemm/scheduler.cuh>
#include <deep_gemm/wgmma.cuh>

namespace deep_gemm {

struct Fp8GemmParams {
    // Masked grouped GEMMs add the expert as the outermost dimension of A, sfa and D.
    TmaDescriptor tma_a;    // A [M, K], box [128, rows loaded by this CTA]
    TmaDescriptor tma_b;    // B [N, K] (grouped: [G * N, K]), box [128, rows loaded by this CTA]
    TmaDescriptor tma_sfa;  // sfa [K/128 blocks, M] (M innermost), box [BLOCK_M, 1]
    TmaDescriptor tma_d;        // D [M, N], box [128 bytes of columns, rows per warpgroup], SWIZZLE_128B
    TmaDescriptor tma_d_tail;   // D [M, N], box [BLOCK_N % chunk columns, rows per warpgroup], unswizzled
    const float* sfb;       // [ceil(N/128), sfb_ld] (grouped: one such block per expert, sfb_group_stride apart)
    void* d;                // D itself, for the direct-store epilogue
    const i32* grouped_layout;   // contiguous: expert id per row of A; masked: valid rows per expert
    u32 m, n, k;            // masked: m = M_max, the rows each expert has in A and D
    u32 sfb_ld;
    u32 ldd;                // D row stride in elements (direct-store epilogue)
    u32 raster_group;       // N units per scheduler group
    u32 num_groups;
    u32 sfb_group_stride;   // elements between two experts' sfb blocks
    // TAIL_BOXES kernels: the last row block of A (and sfa) and the last column block of B, when M or
    // N is not a multiple of the tile, load through boxes of only the rows that exist
    // (a_tail_rows, b_tail_rows; 0 = no such block). Last, so the fields above keep their offsets.
    u32 a_tail_rows, b_tail_rows;
    TmaDescriptor tma_a_tail, tma_sfa_tail, tma_b_tail;
};

// How results leave the kernel.
enum Epilogue : u32 {
    kEpilogueTmaStore = 0,   // smem staging + TMA store (needs 16-byte aligned D rows)
    kEpilogueTmaReduce = 1,  // smem staging + TMA reduce-add into D (FP32 accumulate: D += A B^T)
    kEpilogueDirect = 2,     // plain predicated global stores (any N, any stride)
    kEpilogueDirectAccumulate = 3,
};

template <u32 BLOCK_M, u32 BLOCK_N, u32 STAGES, u32 NUM_MATH_WG, u32 PAIR_AXIS, bool OUT_F32, u32 EPILOGUE,
          bool PIPELINED, u32 KIND, u32 SPLIT_K, u32 K_UNROLL, u32 K_TAIL, bool TAIL_BOXES>
struct Fp8GemmConfig {
    static constexpr u32 BLOCK_K = 128;
    static constexpr u32 K_STEPS = BLOCK_K / 32;   // m64nNk32 wgmmas per k-block and m64 slice
    // K_TAIL (1-3): the problem's last k-block has data only in its first K_TAIL 32-wide K steps
    // (TMA zero-fills the rest), so it runs only their wgmmas; 0: it runs all K_STEPS.
    static constexpr u32 CLUSTER = PAIR_AXIS != 0 ? 2 : SPLIT_K;
    static constexpr u32 MULTICAST_CTAS = PAIR_AXIS != 0 ? 2 : 1;   // CTAs that read each stage
    static constexpr u32 WG_M = BLOCK_M / NUM_MATH_WG;       // rows per math warpgroup
    static constexpr u32 M64_PER_WG = WG_M / 64;
    static constexpr u32 NUM_MATH_THREADS = NUM_MATH_WG * 128;
    static constexpr u32 NUM_THREADS = NUM_MATH_THREADS + 128;
    static constexpr u32 OUT_BYTES = OUT_F32 ? 4 : 2;
    // The TMA-store staging tile of a warpgroup is cut into column chunks of 128 bytes, stored
    // with SWIZZLE_128B (conflict-free fragment writes, 128-byte global segments), then a narrower
    // unswizzled tail chunk when BLOCK_N is not a multiple of the chunk width.
    static constexpr u32 D_CHUNK_COLS = 128 / OUT_BYTES;
    static constexpr u32 D_FULL_CHUNKS = BLOCK_N / D_CHUNK_COLS;
    static constexpr u32 D_TAIL_COLS = BLOCK_N % D_CHUNK_COLS;
    // Split-K tiles leave through the cross-CTA reduction, which stores directly.
    static constexpr bool TMA_EPILOGUE =
        SPLIT_K == 1 && (EPILOGUE == kEpilogueTmaStore || EPILOGUE == kEpilogueTmaReduce);
    static constexpr bool ACCUMULATE = EPILOGUE == kEpilogueTmaReduce || EPILOGUE == kEpilogueDirectAccumulate;
    // Row stride of the split-K partial tile, padded by 16 bytes so the accumulator fragment
    // stores of one warp (8 rows) do not all hit the same banks.
    static constexpr u32 PART_LD = BLOCK_N + 4;

    static constexpr u32 A_STAGE_BYTES = BLOCK_M * BLOCK_K;
    static constexpr u32 B_STAGE_BYTES = BLOCK_N * BLOCK_K;
    static constexpr u32 SFA_STAGE_BYTES = BLOCK_M * 4;
    static constexpr u32 D_WG_BYTES = TMA_EPILOGUE ? WG_M * BLOCK_N * OUT_BYTES : 0;
    // Bytes a stage's loads deliver, per A row (its k-block and its scale) and per B row, and in
    // all. A tail box delivers fewer rows, and its stage counts them with the same per-row bytes.
    static constexpr u32 A_ROW_TX_BYTES = (A_STAGE_BYTES + SFA_STAGE_BYTES) / BLOCK_M;
    static constexpr u32 B_ROW_TX_BYTES = B_STAGE_BYTES / BLOCK_N;
    static constexpr u32 STAGE_TX_BYTES = BLOCK_M * A_ROW_TX_BYTES + BLOCK_N * B_ROW_TX_BYTES;
    DG_DEVICE static u32 stage_tx_bytes(u32 a_rows, u32 b_rows) {
        return a_rows * A_ROW_TX_BYTES + b_rows * B_ROW_TX_BYTES;
    }

    // Layout of dynamic shared memory (offsets from a 1024-aligned base). The sfb copy of each math
    // warpgroup comes last because its size depends on K.
    static constexpr u32 OFF_A = 0;
    static constexpr u32 OFF_B = OFF_A + STAGES * A_STAGE_BYTES;
    static constexpr u32 OFF_D = OFF_B + STAGES * B_STAGE_BYTES;
    static constexpr u32 OFF_SFA = OFF_D + NUM_MATH_WG * D_WG_BYTES;
    static constexpr u32 OFF_PART = OFF_SFA + STAGES * SFA_STAGE_BYTES;
    static constexpr u32 PART_BYTES = SPLIT_K > 1 ? BLOCK_M * PART_LD * 4 : 0;
    // full[STAGES], empty[STAGES], then split-K's partial-ready and partial-free barriers
    static constexpr u32 OFF_BARS = OFF_PART + PART_BYTES;
    static constexpr u32 NUM_BARS = 2 * STAGES + (SPLIT_K > 1 ? 2 : 0);
    static constexpr u32 OFF_SFB = OFF_BARS + NUM_BARS * 8;
    // Bytes before the sfb region; the host adds NUM_MATH_WG * 4 * ceil(K/128) * 4 (two buffers of two
    // scale rows per math warpgroup) and 1024 of alignment slack.
    static constexpr u32 FIXED_SMEM_BYTES = OFF_SFB;

    static constexpr u32 BM = BLOCK_M, BN = BLOCK_N, SPLIT = SPLIT_K;
    static constexpr bool MASKED = KIND == kGemmGroupedMasked, FP32_OUT = OUT_F32;

    static constexpr u32 PRODUCER_REGS = 40;
    static constexpr u32 MATH_REGS = NUM_MATH_WG == 1 ? 240 : 232;

    static_assert(BLOCK_M == 64 || BLOCK_M == 128 || BLOCK_M == 256, "BLOCK_M must be 64, 128 or 256");
    static_assert(M64_PER_WG == 1 || M64_PER_WG == 2, "each math warpgroup owns 64 or 128 rows");
    static_assert(BLOCK_N % 8 == 0 && BLOCK_N >= 8 && BLOCK_N <= 256, "BLOCK_N must be a multiple of 8 in [8, 256]");
    // A tile starting at any multiple of BLOCK_N must touch at most two 128-wide B scale blocks.
    static_assert(BLOCK_N <= 128 + (BLOCK_N & (~BLOCK_N + 1) > 128 ? 128 : (BLOCK_N & (~BLOCK_N + 1))),
                  "BLOCK_N would let a tile straddle three B scale blocks");
    static_assert(PAIR_AXIS != 1 || BLOCK_N % 16 == 0, "multicast of B splits the tile into two halves of 8-row groups");
    static_assert(PAIR_AXIS != 2 || BLOCK_M % 16 == 0, "multicast of A splits the tile into two halves of 8-row groups");
    static_assert(!PIPELINED || STAGES >= 3, "the pipelined main loop holds two stages at a time");
    static_assert(KIND == kGemmDense || (PAIR_AXIS != 1 && (128 % BLOCK_M == 0 || WG_M == 128)),
                  "grouped GEMMs: experts are 128-row aligned, so a math warpgroup's rows have one expert; "
                  "pairs share an expert");
    static_assert(KIND != kGemmGroupedMasked || EPILOGUE == kEpilogueTmaStore || EPILOGUE == kEpilogueDirect,
                  "masked grouped GEMMs store their output (no accumulation)");
    static_assert(!(EPILOGUE == kEpilogueTmaReduce || EPILOGUE == kEpilogueDirectAccumulate) || OUT_F32,
                  "accumulating into D needs FP32 output");
    static_assert(SPLIT_K >= 1 && SPLIT_K <= 8, "split-K clusters have 1 to 8 CTAs (the portable cluster size)");
    static_assert(SPLIT_K == 1 || (PAIR_AXIS == 0 && KIND != kGemmGroupedContiguous),
                  "split-K: dense or masked kinds, without multicast pairs");
    static_assert(K_UNROLL == 1 || K_UNROLL == 2 || K_UNROLL == 4 || K_UNROLL == 8, "K_UNROLL: 1, 2, 4 or 8");
    static_assert(!PIPELINED || K_UNROLL == 1, "pipelined kernels unroll their main loop their own way");
    static_assert(K_TAIL < K_STEPS, "K_TAIL: 0 (full last k-block) or 1-3 steps of 32");
};

// A position in the STAGES-deep ring: the stage and the parity of its current phase. Advanced one
// k-block at a time, so no k-block pays a division by STAGES on its way to the next wgmma.
template <u32 STAGES>
struct RingPos {
    u32 stage = 0, phase = 0;
    DG_DEVICE void advance() {
        stage = stage + 1 == STAGES ? 0 : stage + 1;
        phase ^= stage == 0 ? 1u : 0u;
    }
    DG_DEVICE RingPos next() const { RingPos r = *this; r.advance(); return r; }
};

// Named barrier of all math threads of a CTA (ids 1 and 2 are the per-warpgroup barriers).
constexpr u32 kMathBarrierId = 3;

// A tile's columns before its B scale boundary use the first scale block, the rest the second.
// Tiles start at multiples of BLOCK_N, so the boundary sits 128 - (n0 % 128) columns in, and
// n0 % 128 is a multiple of gcd(BLOCK_N, 128): only a few values are possible.
template <u32 BLOCK_N>
struct ScaleBoundary {
    static constexpr u32 gcd(u32 a, u32 b) { return b == 0 ? a : gcd(b, a % b); }
    static constexpr u32 STEP = gcd(BLOCK_N, 128);
    // 8-column groups before the boundary when the tile starts R columns past a scale block
    static constexpr u32 groups_before(u32 r) { return (BLOCK_N < 128 - r ? BLOCK_N : 128 - r) / 8; }
    static constexpr u32 count_cases(u32 r) {
        return r >= 128 ? 0 : (r == 0 || 128 - r < BLOCK_N ? 1 : 0) + count_cases(r + STEP);
    }
    static constexpr u32 CASES = count_cases(0);
};
// More cases than this fall back to a select per column group (code size; host: MAX_BOUNDARY_CASES).
constexpr u32 kMaxBoundaryCases = 8;

// Calls fn(IntConst<G>{}) with G == groups (the run-time value for this tile), so the promotion's
// choice of scale per column group is resolved at compile time: a select per group and k-block
// costs about as much as the FFMAs themselves. One instantiation per possible value.
template <u32 BLOCK_N, u32 R = 0, typename Fn>
DG_DEVICE void with_groups_before_boundary(u32 groups, Fn&& fn) {
    using SB = ScaleBoundary<BLOCK_N>;
    constexpr u32 G = SB::groups_before(R);
    if constexpr (R + SB::STEP >= 128) {
        fn(IntConst<G>{});   // the last possible value
    } else {
        if constexpr (R == 0 || 128 - R < BLOCK_N) {
            if (groups == G) return fn(IntConst<G>{});
        }
        with_groups_before_boundary<BLOCK_N, R + SB::STEP>(groups, fn);
    }
}

// Flat index of output element (row, col); masked D is [G][M_max][N], so `expert` picks the block.
template <typename Cfg>
DG_DEVICE u64 output_index(const Fp8GemmParams& p, u32 row, u32 col, u32 expert) {
    return (static_cast<u64>(Cfg::MASKED ? expert * p.m : 0u) + row) * p.ldd + col;
}

// Stores one output element, or adds it to what D holds when the epilogue accumulates.
template <typename Cfg>
DG_DEVICE void store_element(const Fp8GemmParams& p, u64 idx, float v) {
    if constexpr (Cfg::FP32_OUT) {
        float* d = static_cast<float*>(p.d) + idx;
        *d = Cfg::ACCUMULATE ? *d + v : v;
    } else {
        static_cast<u16*>(p.d)[idx] = static_cast<u16>(pack_bf16x2(v, 0.0f) & 0xFFFFu);
    }
}

// Stores four consecutive output elements of row `row` starting at column `col` (a multiple of
// 4), clipped at N; adds them to what D holds when the epilogue accumulates.
template <typename Cfg>
DG_DEVICE void store_quad(const Fp8GemmParams& p, u32 row, u32 col, u32 expert, float4 v, bool vector_ok) {
    // The scalar tail writes through its own base pointer, not store_element: with store_element
    // ptxas recomputes the 64-bit address per element (3-6% more SASS in split-K kernels).
    const u64 idx = output_index<Cfg>(p, row, col, expert);
    const float vals[4] = {v.x, v.y, v.z, v.w};
    if constexpr (Cfg::FP32_OUT) {
        float* d = static_cast<float*>(p.d) + idx;
        if (vector_ok && col + 4 <= p.n) {
            float4 out = v;
            if constexpr (Cfg::ACCUMULATE) {
                const float4 old = *reinterpret_cast<const float4*>(d);
                out = make_float4(old.x + v.x, old.y + v.y, old.z + v.z, old.w + v.w);
            }
            *reinterpret_cast<float4*>(d) = out;
        } else {
            #pragma unroll
            for (u32 e = 0; e < 4; ++e)
                if (col + e < p.n) d[e] = Cfg::ACCUMULATE ? d[e] + vals[e] : vals[e];
        }
    } else {
        u16* d = static_cast<u16*>(p.d) + idx;
        if (vector_ok && col + 4 <= p.n) {
            *reinterpret_cast<uint2*>(d) = make_uint2(pack_bf16x2(v.x, v.y), pack_bf16x2(v.z, v.w));
        } else {
            #pragma unroll
            for (u32 e = 0; e < 4; ++e)
                if (col + e < p.n) d[e] = static_cast<u16>(pack_bf16x2(vals[e], 0.0f) & 0xFFFFu);
        }
    }
}

// Writes a warpgroup's accumulator fragments into its TMA staging buffer: 128-byte-wide chunks of
// [WG_M rows][128 B] whose 16-byte granules are XOR-swizzled by row % 8 (the SWIZZLE_128B pattern),
// so the eight rows written at once land in eight different bank groups, then the tail chunk
// [WG_M][TAIL] unswizzled. A thread holds rows warp*16 + lane/4 (+8) of each m64 slice and column
// pairs j*8 + (lane%4)*2: for BF16 each (8-column group, 8-row half) is one stmatrix 8x8 matrix.
template <typename Cfg, u32 M64, u32 NUM_ACC>
DG_DEVICE void stage_output_tile(u32 d_base, const float (&acc)[M64][NUM_ACC], u32 warp, u32 lane) {
    constexpr u32 CHUNK_BYTES = Cfg::WG_M * 128, TAIL_BYTES = Cfg::D_TAIL_COLS * Cfg::OUT_BYTES;
    constexpr u32 GROUPS = Cfg::BN / 8;
    // Byte offset in the staging buffer of row `row`, 16-byte granule `g` of 8-column group `j`.
    auto offset = [](u32 row, u32 j, u32 g) -> u32 {
        constexpr u32 GROUPS_PER_CHUNK = 128 / (8 * Cfg::OUT_BYTES);
        const u32 chunk = j / GROUPS_PER_CHUNK, granule = (j % GROUPS_PER_CHUNK) * Cfg::OUT_BYTES / 2 + g;
        if (chunk < Cfg::D_FULL_CHUNKS) return chunk * CHUNK_BYTES + row * 128 + ((granule ^ (row % 8)) * 16);
        return Cfg::D_FULL_CHUNKS * CHUNK_BYTES + row * TAIL_BYTES + granule * 16;
    };
    #pragma unroll
    for (u32 mi = 0; mi < M64; ++mi) {
        if constexpr (!Cfg::FP32_OUT) {
            // stmatrix: lane l addresses row l % 8 of matrix l / 8; matrices (j, rows 0-7),
            // (j, rows 8-15), (j + 1, rows 0-7), (j + 1, rows 8-15).
            const u32 row = mi * 64 + warp * 16 + (lane / 8 % 2) * 8 + lane % 8;
            #pragma unroll
            for (u32 j = 0; j + 1 < GROUPS; j += 2) {
                const float* v = &acc[mi][j * 4];
                stmatrix_x4(d_base + offset(row, j + lane / 16, 0), pack_bf16x2(v[0], v[1]), pack_bf16x2(v[2], v[3]),
                            pack_bf16x2(v[4], v[5]), pack_bf16x2(v[6], v[7]));
            }
            if constexpr (GROUPS % 2 != 0) {
                const float* v = &acc[mi][(GROUPS - 1) * 4];
                stmatrix_x2(d_base + offset(row, GROUPS - 1, 0), pack_bf16x2(v[0], v[1]), pack_bf16x2(v[2], v[3]));
            }
        } else {
            // Two floats per thread per row and group: lanes 4r..4r+3 fill one 32-byte group row.
            const u32 row = mi * 64 + warp * 16 + lane / 4;
            #pragma unroll
            for (u32 j = 0; j < GROUPS; ++j) {
                const u32 in_granule = (lane % 2) * 8, g = lane % 4 / 2;
                st_shared_f32x2(d_base + offset(row, j, g) + in_granule, acc[mi][j * 4 + 0], acc[mi][j * 4 + 1]);
                st_shared_f32x2(d_base + offset(row + 8, j, g) + in_granule, acc[mi][j * 4 + 2], acc[mi][j * 4 + 3]);
            }
        }
    }
}

// One thread per warpgroup: TMA-stores (or reduce-adds) the staged chunks of the warpgroup's rows,
// evict-first in L2.
template <typename Cfg>
DG_DEVICE void store_output_tile(const Fp8GemmParams& p, const u8* d_smem, u32 n0, u32 row0, u32 expert) {
    const u64 policy = l2_evict_first_policy();
    auto store = [&](const TmaDescriptor* desc, const u8* src, u32 col) {
        if constexpr (Cfg::ACCUMULATE) tma_reduce_add_2d(desc, src, col, row0, policy);
        else if constexpr (Cfg::MASKED) tma_store_3d(desc, src, col, row0, expert, policy);
        else tma_store_2d(desc, src, col, row0, policy);
    };
    #pragma unroll
    for (u32 c = 0; c < Cfg::D_FULL_CHUNKS; ++c)
        store(&p.tma_d, d_smem + c * Cfg::WG_M * 128, n0 + c * Cfg::D_CHUNK_COLS);
    if constexpr (Cfg::D_TAIL_COLS != 0)
        store(&p.tma_d_tail, d_smem + Cfg::D_FULL_CHUNKS * Cfg::WG_M * 128, n0 + Cfg::D_FULL_CHUNKS * Cfg::D_CHUNK_COLS);
}

// Direct-store epilogue: each thread writes its accumulator fragments (rows warp*16 + lane/4 (+8),
// column pairs j*8 + (lane%4)*2) straight to global memory, adding to what D holds when the
// epilogue accumulates. No staging buffer, which leaves its shared memory to another pipeline
// stage. Stores are 8 bytes wide where D's alignment allows: FP32 column pairs as they are; BF16
// after lanes 2i and 2i+1 swap one column pair of groups j and j+1, so that each holds four
// consecutive columns (the four lanes of a row then write one whole 32-byte sector per group
// pair). Any other N or row stride takes predicated scalar stores.
template <typename Cfg, u32 M64, u32 NUM_ACC>
DG_DEVICE void store_fragments_direct(const Fp8GemmParams& p, const float (&acc)[M64][NUM_ACC], u32 row0, u32 n0,
                                      u32 expert, u32 warp, u32 lane) {
    constexpr u32 GROUPS = Cfg::BN / 8;
    // FP32: 8-byte pairs; BF16: 8-byte quads (N a multiple of 4, so a quad is all in or all out).
    const bool vector_ok = (reinterpret_cast<u64>(p.d) % 8 == 0) &&
                           (Cfg::FP32_OUT ? p.ldd % 2 == 0 && p.n % 2 == 0 : p.ldd % 4 == 0 && p.n % 4 == 0);
    const bool odd = lane % 2 != 0;
    #pragma unroll
    for (u32 mi = 0; mi < M64; ++mi) {
        #pragma unroll
        for (u32 half = 0; half < 2; ++half) {
            const u32 row = row0 + mi * 64 + warp * 16 + lane / 4 + half * 8;
            const float* v = &acc[mi][half * 2];   // v[j * 4 + e]: column j*8 + (lane%4)*2 + e
            if (vector_ok && !Cfg::FP32_OUT) {
                // The exchange is warp-wide, so rows past M take part and only skip the store.
                u16* d = static_cast<u16*>(p.d) + output_index<Cfg>(p, min(row, p.m - 1), 0, expert);
                #pragma unroll
                for (u32 j = 0; j + 1 < GROUPS; j += 2) {
                    const u32 mine_j = pack_bf16x2(v[j * 4], v[j * 4 + 1]);
                    const u32 mine_j1 = pack_bf16x2(v[j * 4 + 4], v[j * 4 + 5]);
                    // even lanes keep group j and take their partner's pair of it; odd lanes group j+1
                    const u32 got = __shfl_xor_sync(0xffffffffu, odd ? mine_j : mine_j1, 1);
                    const u32 col = n0 + j * 8 + (lane % 4) * 2 + (odd ? 6 : 0);
                    if (row < p.m && col < p.n)
                        *reinterpret_cast<uint2*>(d + col) = odd ? make_uint2(got, mine_j1) : make_uint2(mine_j, got);
                }
                if constexpr (GROUPS % 2 != 0) {
                    const u32 col = n0 + (GROUPS - 1) * 8 + (lane % 4) * 2;
                    if (row < p.m && col < p.n)
                        *reinterpret_cast<u32*>(d + col) = pack_bf16x2(v[(GROUPS - 1) * 4], v[(GROUPS - 1) * 4 + 1]);
                }
                continue;
            }
            if (row >= p.m) continue;
            #pragma unroll
            for (u32 j = 0; j < GROUPS; ++j) {
                const u32 col = n0 + j * 8 + (lane % 4) * 2;
                if (Cfg::FP32_OUT && vector_ok) {
                    if (col < p.n) {
                        float2* d = reinterpret_cast<float2*>(static_cast<float*>(p.d) + output_index<Cfg>(p, row, col, expert));
                        float2 out = make_float2(v[j * 4], v[j * 4 + 1]);
                        if constexpr (Cfg::ACCUMULATE) {
                            const float2 old = *d;
                            out.x += old.x, out.y += old.y;
                        }
                        *d = out;
                    }
                    continue;
                }
                #pragma unroll
                for (u32 e = 0; e < 2; ++e)
                    if (col + e < p.n)
                        store_element<Cfg>(p, output_index<Cfg>(p, row, col + e, expert), v[j * 4 + e]);
            }
        }
    }
}

// Split-K epilogue, run by all math threads of every CTA of the cluster: publish this CTA's
// partial tile in its shared memory, then sum one slice of the tile over all CTAs' partials in
// rank order (bitwise reproducible) and store it. `phase` is the parity of this CTA's tile count.
template <typename Cfg, u32 M64, u32 NUM_ACC>
DG_DEVICE void reduce_split_k_tile(const Fp8GemmParams& p, u8* smem, const float (&acc)[M64][NUM_ACC],
                                   u64* ready_bar, u64* free_bar, u32 phase, u32 m0, u32 n0,
                                   u32 expert) {
    constexpr u32 BN = Cfg::BN, SPLIT = Cfg::SPLIT, LD = Cfg::PART_LD, NUM_THREADS = Cfg::NUM_MATH_THREADS;
    const u32 tid = threadIdx.x, wg_thread = tid % 128, warp = wg_thread / 32, lane = tid % 32;
    const u32 rank = cluster_cta_rank();
    const u32 part_addr = smem_u32(smem + Cfg::OFF_PART);   // [BLOCK_M][PART_LD] floats

    // The other CTAs must be done reading this CTA's previous partial tile (on the first tile the
    // wait for the phase before the barrier's first one returns at once).
    mbar_wait(free_bar, phase ^ 1);
    #pragma unroll
    for (u32 mi = 0; mi < M64; ++mi) {
        const u32 row = (tid / 128) * Cfg::WG_M + mi * 64 + warp * 16 + lane / 4;
        const u32 base = part_addr + (row * LD + (lane % 4) * 2) * 4;
        #pragma unroll
        for (u32 j = 0; j < BN / 8; ++j) {
            st_shared_f32x2(base + j * 32, acc[mi][j * 4 + 0], acc[mi][j * 4 + 1]);
            st_shared_f32x2(base + j * 32 + 8 * LD * 4, acc[mi][j * 4 + 2], acc[mi][j * 4 + 3]);
        }
    }
    named_barrier_sync(kMathBarrierId, NUM_THREADS);
    if (tid == 0) {
        // One cluster-scope fence publishes the whole CTA's partial tile (ordered before it by
        // bar.sync) ahead of all the arrives.
        fence_acq_rel_cluster();
        #pragma unroll
        for (u32 r = 0; r < SPLIT; ++r) mbar_arrive_cluster(ready_bar, r);
    }
    mbar_wait_cluster(ready_bar, phase);

    // Rank r owns quads [r * PER_RANK, (r + 1) * PER_RANK) of the row-major tile (4 floats each).
    constexpr u32 QUADS_PER_ROW = BN / 4, QUADS = Cfg::BM * QUADS_PER_ROW;
    constexpr u32 PER_RANK = (QUADS + SPLIT - 1) / SPLIT;
    const u32 q_end = min((rank + 1) * PER_RANK, QUADS);
    const bool vector_ok = (reinterpret_cast<u64>(p.d) | (static_cast<u64>(p.ldd) * (Cfg::FP32_OUT ? 4 : 2))) %
                           (Cfg::FP32_OUT ? 16 : 8) == 0;
    // All remote loads are issued before the first is used: each one is a round trip to another
    // SM, and summing as they arrive would serialize those round trips.
    constexpr u32 ITERS = (PER_RANK + NUM_THREADS - 1) / NUM_THREADS;
    float4 parts[ITERS][SPLIT];
    #pragma unroll
    for (u32 it = 0; it < ITERS; ++it) {
        const u32 q = min(rank * PER_RANK + it * NUM_THREADS + tid, QUADS - 1);
        const u32 addr = part_addr + ((q / QUADS_PER_ROW) * LD + (q % QUADS_PER_ROW) * 4) * 4;
        #pragma unroll
        for (u32 r = 0; r < SPLIT; ++r) parts[it][r] = ld_dsmem_f32x4(map_to_cta(addr, r));
    }
    #pragma unroll
    for (u32 it = 0; it < ITERS; ++it) {
        const u32 q = rank * PER_RANK + it * NUM_THREADS + tid;
        const u32 row = q / QUADS_PER_ROW, col = (q % QUADS_PER_ROW) * 4;
        if (q >= q_end || m0 + row >= p.m) continue;   // past this rank's slice, or past M
        float4 sum = parts[it][0];
        #pragma unroll
        for (u32 r = 1; r < SPLIT; ++r)
            sum.x += parts[it][r].x, sum.y += parts[it][r].y, sum.z += parts[it][r].z, sum.w += parts[it][r].w;
        store_quad<Cfg>(p, m0 + row, n0 + col, expert, sum, vector_ok);
    }
    // Every read of the other CTAs' partial tiles has returned (its value is stored).
    named_barrier_sync(kMathBarrierId, NUM_THREADS);
    if (tid == 0) {
        #pragma unroll
        for (u32 r = 0; r < SPLIT; ++r) mbar_arrive_cluster(free_bar, r);
    }
}

template <u32 BLOCK_M, u32 BLOCK_N, u32 STAGES, u32 NUM_MATH_WG, u32 PAIR_AXIS, bool OUT_F32, u32 EPILOGUE,
          bool PIPELINED, u32 KIND, u32 SPLIT_K, u32 K_UNROLL, u32 K_TAIL, bool TAIL_BOXES>
__global__ void __launch_bounds__((NUM_MATH_WG + 1) * 128, 1)
fp8_gemm_kernel(const __grid_constant__ Fp8GemmParams p) {
    using Cfg = Fp8GemmConfig<BLOCK_M, BLOCK_N, STAGES, NUM_MATH_WG, PAIR_AXIS, OUT_F32, EPILOGUE, PIPELINED, KIND,
                              SPLIT_K, K_UNROLL, K_TAIL, TAIL_BOXES>;
    constexpr u32 BLOCK_K = Cfg::BLOCK_K;
    constexpr u32 CLUSTER = Cfg::CLUSTER;

    extern __shared__ u8 smem_raw[];
    // Swizzled TMA tiles need 1024-byte alignment; the host reserved the slack.
    u8* smem = smem_raw + ((1024 - (smem_u32(smem_raw) & 1023)) & 1023);
    u64* full_bars = reinterpret_cast<u64*>(smem + Cfg::OFF_BARS);
    u64* empty_bars = full_bars + STAGES;
    u64* part_ready_bar = empty_bars + STAGES;   // split-K: all partial tiles of the cluster written
    u64* part_free_bar = part_ready_bar + 1;     // split-K: every CTA has read this CTA's partial tile

    const u32 num_k_blocks = ceil_div(p.k, BLOCK_K);
    // Broadcast from lane 0 so the compiler knows it is warp-uniform: the wgmma descriptors built
    // from it then live in uniform registers instead of being moved there before every wgmma.
    const u32 warpgroup = __shfl_sync(0xffffffffu, threadIdx.x / 128, 0);

    if (threadIdx.x == Cfg::NUM_MATH_THREADS) {
        tma_prefetch_descriptor(&p.tma_a);
        tma_prefetch_descriptor(&p.tma_b);
        tma_prefetch_descriptor(&p.tma_sfa);
        if constexpr (Cfg::TMA_EPILOGUE) tma_prefetch_descriptor(&p.tma_d);
        if constexpr (TAIL_BOXES) {
            if (p.a_tail_rows != 0) {
                tma_prefetch_descriptor(&p.tma_a_tail);
                tma_prefetch_descriptor(&p.tma_sfa_tail);
            }
            if (p.b_tail_rows != 0) tma_prefetch_descriptor(&p.tma_b_tail);
        }
        for (u32 s = 0; s < STAGES; ++s) {
            mbar_init(&full_bars[s], 1);
            // Every math warp of every CTA in the cluster releases a stage, since the multicast
            // half that this CTA loads lands in its partner's ring too.
            mbar_init(&empty_bars[s], NUM_MATH_WG * 4 * Cfg::MULTICAST_CTAS);
        }
        if constexpr (SPLIT_K > 1) {
            mbar_init(part_ready_bar, SPLIT_K);
            mbar_init(part_free_bar, SPLIT_K);
        }
        fence_mbar_init();
    }
    if constexpr (CLUSTER > 1) cluster_sync(); else __syncthreads();

    // Each role builds its own scheduler after setmaxnreg: state live across the register
    // reallocation gets spilled by ptxas.
    using Scheduler = TileScheduler<BLOCK_M, BLOCK_N, PAIR_AXIS, KIND, SPLIT_K>;
    // This CTA's slice [begin, end) of the K blocks (all of them without split-K); a slice may be
    // empty. Recomputed where used from the rank register and the parameters: kept live across
    // the main loop, the two bounds made the pipelined loop spill.
    auto k_slice_bound = [&](u32 rank) -> u32 { return min(rank * ceil_div(num_k_blocks, SPLIT_K), num_k_blocks); };
    auto k_slice_begin = [&]() -> u32 { return SPLIT_K == 1 ? 0u : k_slice_bound(cluster_cta_rank()); };
    auto k_slice_end = [&]() -> u32 { return SPLIT_K == 1 ? num_k_blocks : k_slice_bound(cluster_cta_rank() + 1); };
    // End of the k-blocks the math loops run with all K_STEPS wgmmas: with K_TAIL, the slice that
    // holds the problem's last k-block leaves it to a short k-block of its own.
    auto k_full_end = [&]() -> u32 {
        const u32 end = k_slice_end();
        return K_TAIL != 0 && end == num_k_blocks ? end - 1 : end;
    };

    if (warpgroup == NUM_MATH_WG) {
        // ---------------------------------------------------------------- producer
        warpgroup_release_registers<Cfg::PRODUCER_REGS>();
        // The whole first warp walks the tiles, so the scheduler state and TMA coordinates are
        // warp-uniform (uniform registers, as the TMA instructions want them); one elected lane
        // issues. (Run by one thread, each TMA was wrapped in a loop over the lanes' distinct
        // operands that cost ~30 instructions per k-block, on an SM sub-partition whose math
        // warps issue the promotion.)
        if (__shfl_sync(0xffffffffu, threadIdx.x / 32, 0) == Cfg::NUM_MATH_THREADS / 32) {
            const bool leader = elect_one_sync();
            Scheduler scheduler(p.m, p.n, p.raster_group, p.grouped_layout, p.num_groups, p.m);
            const u32 rank = scheduler.rank;
            // TAIL_BOXES: where the tile reaches past M or N, its loads go through the tail maps,
            // whose boxes hold only rows that exist; the rows they leave out keep stale data and
            // feed only outputs the stores skip. (Boxes mostly out of bounds, zero-filled by TMA,
            // made decode kernels up to 1.7x slower: at M = 1, 63 of a 64-row A box.) A template
            // switch, because choosing the maps per tile cost 2% at 4096x32768x512 (4 k-blocks a tile).
            const TmaDescriptor *a_map = &p.tma_a, *sfa_map = &p.tma_sfa, *b_map = &p.tma_b;
            u32 stage_tx_bytes = Cfg::STAGE_TX_BYTES;
            auto choose_maps = [&](i32 m0, i32 n0) {
                if constexpr (!TAIL_BOXES) return;
                const bool a_tail = p.a_tail_rows != 0 && m0 + BLOCK_M > p.m;
                const bool b_tail = p.b_tail_rows != 0 && n0 + BLOCK_N > p.n;
                a_map = a_tail ? &p.tma_a_tail : &p.tma_a;
                sfa_map = a_tail ? &p.tma_sfa_tail : &p.tma_sfa;
                b_map = b_tail ? &p.tma_b_tail : &p.tma_b;
                stage_tx_bytes = Cfg::stage_tx_bytes(a_tail ? p.a_tail_rows : BLOCK_M,
                                                     b_tail ? p.b_tail_rows : BLOCK_N);
            };
            // Stage s: A, B and A's scales of k-block kb, all counted by the stage's full barrier.
            auto load_stage = [&](u32 s, u32 kb, i32 m0, i32 b_row0, u32 expert) {
                mbar_arrive_expect_tx(&full_bars[s], stage_tx_bytes);
                const i32 k0 = kb * BLOCK_K;
                u8* a_dst = smem + Cfg::OFF_A + s * Cfg::A_STAGE_BYTES;
                u8* b_dst = smem + Cfg::OFF_B + s * Cfg::B_STAGE_BYTES;
                if constexpr (PAIR_AXIS == 2) {
                    constexpr u32 HALF = BLOCK_M / 2;
                    if constexpr (Cfg::MASKED)
                        tma_load_3d_multicast(a_dst + rank * HALF * BLOCK_K, &p.tma_a, &full_bars[s], k0, m0 + rank * HALF, expert, 0b11);
                    else
                        tma_load_2d_multicast(a_dst + rank * HALF * BLOCK_K, &p.tma_a, &full_bars[s], k0, m0 + rank * HALF, 0b11);
                } else {
                    if constexpr (Cfg::MASKED) tma_load_3d(a_dst, a_map, &full_bars[s], k0, m0, expert);
                    else tma_load_2d(a_dst, a_map, &full_bars[s], k0, m0);
                }
                if constexpr (PAIR_AXIS == 1) {
                    constexpr u32 HALF = BLOCK_N / 2;
                    tma_load_2d_multicast(b_dst + rank * HALF * BLOCK_K, &p.tma_b, &full_bars[s], k0, b_row0 + rank * HALF, 0b11);
                } else {
                    tma_load_2d(b_dst, b_map, &full_bars[s], k0, b_row0);
                }
                u8* sfa_dst = smem + Cfg::OFF_SFA + s * Cfg::SFA_STAGE_BYTES;
                if constexpr (Cfg::MASKED) tma_load_3d(sfa_dst, sfa_map, &full_bars[s], m0, kb, expert);
                else tma_load_2d(sfa_dst, sfa_map, &full_bars[s], m0, kb);
            };
            RingPos<STAGES> pos;
            u32 m_block, n_block, expert;
            bool has_tile = scheduler.next(m_block, n_block, expert);
            while (has_tile) {
                const i32 m0 = m_block * BLOCK_M, n0 = n_block * BLOCK_N;
                // Grouped B is [G * N, K]: rows past N read the next expert's weights, which only
                // feed output columns the store clips.
                const i32 b_row0 = KIND == kGemmDense ? n0 : static_cast<i32>(expert * p.n) + n0;
                choose_maps(m0, n0);
                // The next tile is worked out once this tile's first loads are issued, while the
                // ring is full anyway, so its cost (and the contiguous kind's global read of the
                // next expert id) never delays a load.
                u32 next_m_block, next_n_block, next_expert;
                const u32 kb_begin = k_slice_begin(), kb_end = k_slice_end();
                bool has_next = kb_begin == kb_end && scheduler.next(next_m_block, next_n_block, next_expert);
                #pragma unroll 1
                for (u32 kb = kb_begin; kb < kb_end; ++kb, pos.advance()) {
                    const u32 s = pos.stage;
                    mbar_wait(&empty_bars[s], pos.phase ^ 1);
                    if (leader) load_stage(s, kb, m0, b_row0, expert);
                    if (kb == kb_begin) has_next = scheduler.next(next_m_block, next_n_block, next_expert);
                }
                m_block = next_m_block, n_block = next_n_block, expert = next_expert, has_tile = has_next;
            }
        }
    } else {
        // ---------------------------------------------------------------- math warpgroups
        warpgroup_claim_registers<Cfg::MATH_REGS>();
        constexpr u32 M64 = Cfg::M64_PER_WG;
        constexpr u32 NUM_ACC = BLOCK_N / 2;   // FP32 accumulators per thread per m64 slice
        const u32 wg_thread = threadIdx.x % 128, warp = wg_thread / 32, lane = lane_id();
        const u32 barrier_id = 1 + warpgroup;   // named barrier of this warpgroup
        // One thread issues the warpgroup's TMA stores, and its warp issues no cp.async: waiting
        // for cp.async (DEPBAR on scoreboard 0) also waits for every bulk store the warp issued to
        // complete, so with both in one warp each tile began with a wait for the previous tile's
        // whole store, and the warpgroup's other warps waited for that warp at the tile barrier
        // (Nsight Compute, 4096x32768x512: 17% of the math warps' samples).
        constexpr u32 STORE_WARP = 3, SFB_LOADERS = STORE_WARP * 32;
        const bool store_thread = wg_thread == STORE_WARP * 32;
        // Two buffers per warpgroup, each [2 scale rows][K blocks]: the next tile's B scales are
        // fetched with cp.async while this tile computes, so no tile starts with a global load.
        float* sfb_base = reinterpret_cast<float*>(smem + Cfg::OFF_SFB) + warpgroup * 4 * num_k_blocks;
        const float* sfb_smem = sfb_base;
        const u32 num_sfb_rows = ceil_div(p.n, 128u);
        auto prefetch_sfb = [&](u32 n_blk, u32 expert, float* dst) {
            const u32 row0 = min(n_blk * BLOCK_N / 128, num_sfb_rows - 1);
            const u32 row1 = min(row0 + 1, num_sfb_rows - 1);
            const float* sfb = p.sfb + static_cast<u64>(expert) * p.sfb_group_stride;
            if (wg_thread >= SFB_LOADERS) return;
            for (u32 i = wg_thread; i < 2 * num_k_blocks; i += SFB_LOADERS) {
                const u32 row = i < num_k_blocks ? row0 : row1;
                const u32 kb = i < num_k_blocks ? i : i - num_k_blocks;
                cp_async_4(smem_u32(dst + i), sfb + static_cast<u64>(row) * p.sfb_ld + kb);
            }
        };

        float acc[M64][NUM_ACC];
        // Temporary accumulators. PIPELINED: two buffers, so the wgmmas of k-block kb+1 run while
        // kb is promoted. Serial: one m64 slice's worth, reused by the slices of a 128-row
        // warpgroup one after the other (issue, wait, promote), which is what lets a 256x128 tile
        // fit the register budget; the other warpgroup's wgmmas fill the tensor cores meanwhile.
        constexpr u32 TMP_SLICES = PIPELINED ? M64 : 1;
        float tmp[PIPELINED ? 2 : 1][TMP_SLICES][NUM_ACC];
        RingPos<STAGES> pos;
        u32 m_block, n_block;

        // Descriptors of stage 0 (this warpgroup's rows of A, and B), built once: a k-block only adds
        // its stage's offset, so the path from the full barrier to the first wgmma stays short.
        const u64 desc_a0 = make_kmajor_sw128_desc(smem + Cfg::OFF_A + warpgroup * Cfg::WG_M * BLOCK_K);
        const u64 desc_b0 = make_kmajor_sw128_desc(smem + Cfg::OFF_B);
        // Issues the wgmmas of slices [FIRST, FIRST + COUNT) of the k-block in stage `s` into
        // tmp[buf] (as one commit group), over its first STEPS 32-wide K steps.
        auto issue = [&](u32 s, auto buf, auto first, auto count, auto steps) {
            constexpr u32 FIRST = decltype(first)::value, COUNT = decltype(count)::value;
            constexpr u32 STEPS = decltype(steps)::value;
            const u64 desc_b = desc_advance(desc_b0, s * Cfg::B_STAGE_BYTES);
            wgmma_fence();
            #pragma unroll
            for (u32 mi = FIRST; mi < FIRST + COUNT; ++mi) {
                const u64 desc_a = desc_advance(desc_a0, s * Cfg::A_STAGE_BYTES + mi * 64 * BLOCK_K);
                float* t = tmp[decltype(buf)::value][mi - FIRST];
                // Serial with two slices: the first wgmma takes the shared temporary as an input
                // it ignores, so the promotion of the previous slice, which reads the same
                // registers, must finish before it (otherwise ptxas renames them to overlap the
                // two, and runs out of registers).
                if constexpr (PIPELINED || M64 == 1) WgmmaFp8<BLOCK_N>::overwrite(desc_a, desc_b, t);
                else WgmmaFp8<BLOCK_N>::mma(desc_a, desc_b, t, false);
                #pragma unroll
                for (u32 kk = 1; kk < STEPS; ++kk)
                    WgmmaFp8<BLOCK_N>::mma(desc_advance(desc_a, kk * 32), desc_advance(desc_b, kk * 32), t, true);
            }
            wgmma_commit();
        };

        // The scales of k-block kb (in stage s) that this thread's promotions use: both B scale
        // blocks the tile may touch, and the A scales of its two rows in every m64 slice.
        struct Scales { float sb0, sb1, sa_lo[M64], sa_hi[M64]; };
        auto read_scales = [&](u32 kb, u32 s) {
            Scales sc;
            sc.sb0 = sfb_smem[kb], sc.sb1 = sfb_smem[num_k_blocks + kb];
            const float* sfa = reinterpret_cast<const float*>(smem + Cfg::OFF_SFA + s * Cfg::SFA_STAGE_BYTES);
            #pragma unroll
            for (u32 mi = 0; mi < M64; ++mi) {
                const u32 row = warpgroup * Cfg::WG_M + mi * 64 + warp * 16 + lane / 4;
                sc.sa_lo[mi] = sfa[row];
                sc.sa_hi[mi] = sfa[row + 8];
            }
            return sc;
        };

        // After the wgmmas of slices [FIRST, FIRST + COUNT) of stage `s` completed into tmp[buf]:
        // release the stage once its last slice is done, and promote: acc += tmp * sa * sb, in FP32.
        // INIT (the tile's first k-block in serial kernels): acc = tmp * sa * sb, so acc needs no
        // zeroing (which ptxas does twice per tile around an unrolled loop: 128 instructions).
        auto finish = [&](const Scales& sc, u32 s, u32 boundary, auto buf, auto first, auto count, auto init) {
            constexpr u32 b = decltype(buf)::value, FIRST = decltype(first)::value, COUNT = decltype(count)::value;
            constexpr bool INIT = decltype(init)::value;
            #pragma unroll
            for (u32 mi = 0; mi < COUNT; ++mi)
                #pragma unroll
                for (u32 i = 0; i < NUM_ACC; ++i) pin_register(tmp[b][mi][i]);
            const float sb0 = sc.sb0, sb1 = sc.sb1;
            const float* sa_lo = sc.sa_lo + FIRST;
            const float* sa_hi = sc.sa_hi + FIRST;
            if constexpr (FIRST + COUNT == M64) {
                __syncwarp();
                if (lane == 0) {
                    if constexpr (Cfg::MULTICAST_CTAS == 1) {
                        mbar_arrive(&empty_bars[s]);
                    } else {
                        #pragma unroll
                        for (u32 r = 0; r < Cfg::MULTICAST_CTAS; ++r) mbar_arrive_cluster(&empty_bars[s], r);
                    }
                }
            }
            // before(j): column group j is before the scale boundary (uses the first B scale).
            auto promote = [&](auto before) {
                #pragma unroll
                for (u32 mi = 0; mi < COUNT; ++mi) {
                    float* a = acc[FIRST + mi];
                    const float* t = tmp[b][mi];
                    const float s_lo0 = sa_lo[mi] * sb0, s_lo1 = sa_lo[mi] * sb1;
                    const float s_hi0 = sa_hi[mi] * sb0, s_hi1 = sa_hi[mi] * sb1;
                    #pragma unroll
                    for (u32 j = 0; j < BLOCK_N / 8; ++j) {
                        const float s_lo = before(j) ? s_lo0 : s_lo1, s_hi = before(j) ? s_hi0 : s_hi1;
                        // elements 0-1 of a column group are in row lane/4, 2-3 in row lane/4 + 8
                        #pragma unroll
                        for (u32 e = 0; e < 4; ++e) {
                            const float v = t[j * 4 + e] * (e < 2 ? s_lo : s_hi);
                            a[j * 4 + e] = INIT ? v : a[j * 4 + e] + v;
                        }
                    }
                }
            };
            // Serial loops resolve the boundary at compile time (one promotion per possible
            // boundary). The pipelined loop cannot: a branch between a wgmma and the wait that
            // retires it makes ptxas serialize every wgmma, so it selects per column group.
            // (Compiling the whole unrolled loop once per boundary instead spilled more.)
            if constexpr (!PIPELINED && ScaleBoundary<BLOCK_N>::CASES <= kMaxBoundaryCases) {
                with_groups_before_boundary<BLOCK_N>(min(boundary, BLOCK_N) / 8, [&](auto groups) {
                    promote([](u32 j) { return j < decltype(groups)::value; });
                });
            } else {
                promote([&](u32 j) { return j * 8 < boundary; });
            }
        };
        auto wait_full = [&](const RingPos<STAGES>& at) { mbar_wait(&full_bars[at.stage], at.phase); };
        using Buf0 = IntConst<0>;
        using AllSlices = IntConst<M64>;
        using FullK = IntConst<Cfg::K_STEPS>;

        u32 buf = 0, expert;   // buf: parity of this CTA's tile count
        Scheduler scheduler(p.m, p.n, p.raster_group, p.grouped_layout, p.num_groups, p.m);
        bool has_tile = scheduler.next(m_block, n_block, expert);
        u32 halves = scheduler.halves;   // the 128-row halves this pass stores (two-expert tiles)
        if (has_tile) prefetch_sfb(n_block, expert, sfb_base);
        while (has_tile) {
            const u32 m0 = m_block * BLOCK_M, n0 = n_block * BLOCK_N;
            // This tile's scales have landed (for every thread), and every thread is past the
            // previous tile, whose buffer the next prefetch overwrites.
            if (warp != STORE_WARP) cp_async_wait_all();
            named_barrier_sync(barrier_id, 128);
            sfb_smem = sfb_base + buf * 2 * num_k_blocks;
            // Columns of the tile at or past `boundary` use the second B scale block.
            const u32 boundary = (n0 / 128 + 1) * 128 - n0;
            // The next tile and the prefetch of its B scales: the scheduler's divisions (and, for
            // the contiguous kind, its global read of the next expert id, which it branches on)
            // cost a few hundred cycles. Serial kernels run them while the tile's first wgmmas
            // are in flight, where the tensor cores would otherwise be waiting for this thread.
            u32 next_m_block, next_n_block, next_expert, next_halves;
            bool has_next;
            auto plan_next_tile = [&]() {
                has_next = scheduler.next(next_m_block, next_n_block, next_expert);
                next_halves = scheduler.halves;
                if (has_next) prefetch_sfb(next_n_block, next_expert, sfb_base + (buf ^ 1) * 2 * num_k_blocks);
            };
            auto nothing = []() {};

            // One k-block of a serial kernel. Both scales are read right after the first slice's
            // wgmmas are issued: their shared-memory latency (long while the tensor cores stream
            // operands) then runs under those wgmmas, off the path from the wait to the promotion.
            // Read before the issue, ptxas put the scale products between the first wgmma and
            // the other three, which then waited for the loads (Nsight Compute, 4096x7168x16384).
            // `meanwhile` runs between the first wgmmas and the wait for them.
            auto serial_k_block = [&](u32 kb, auto init, auto&& meanwhile, auto steps) {
                wait_full(pos);
                issue(pos.stage, Buf0{}, IntConst<0>{}, IntConst<1>{}, steps);
                const Scales sc = read_scales(kb, pos.stage);
                meanwhile();
                wgmma_wait<0>();
                finish(sc, pos.stage, boundary, Buf0{}, IntConst<0>{}, IntConst<1>{}, init);
                if constexpr (M64 == 2) {
                    issue(pos.stage, Buf0{}, IntConst<1>{}, IntConst<1>{}, steps);
                    wgmma_wait<0>();
                    finish(sc, pos.stage, boundary, Buf0{}, IntConst<1>{}, IntConst<1>{}, init);
                }
            };

            u32 kb = k_slice_begin();
            // Only a split-K slice can be empty: the host never launches K = 0. (Tested at run
            // time for every kernel, the zeroing is hoisted above the test and runs anyway.)
            if (PIPELINED || (SPLIT_K > 1 && kb == k_slice_end())) {
                plan_next_tile();
                #pragma unroll
                for (u32 mi = 0; mi < M64; ++mi)
                    #pragma unroll
                    for (u32 i = 0; i < NUM_ACC; ++i) acc[mi][i] = 0.0f;
            } else {
                serial_k_block(kb, IntConst<1>{}, plan_next_tile, FullK{});   // initializes acc
                ++kb, pos.advance();
            }
            if constexpr (PIPELINED) {
                // Groups of four k-blocks alternating two temporary buffers: buffer indices are
                // compile-time constants, there is no run-time branch between a wgmma and the wait
                // that retires it, and none is in flight across the back edge (otherwise ptxas
                // serializes every wgmma). Three of four promotions overlap the next wgmmas.
                #pragma unroll 1
                for (; kb + 4 <= k_full_end(); kb += 4) {
                    wait_full(pos);
                    issue(pos.stage, Buf0{}, IntConst<0>{}, AllSlices{}, FullK{});
                    auto step = [&](auto j) {
                        constexpr u32 J = decltype(j)::value;
                        if constexpr (J < 3) {
                            const RingPos<STAGES> ahead = pos.next();
                            wait_full(ahead);
                            issue(ahead.stage, IntConst<(J + 1) % 2>{}, IntConst<0>{}, AllSlices{}, FullK{});
                            wgmma_wait<1>();
                        } else {
                            wgmma_wait<0>();
                        }
                        finish(read_scales(kb + J, pos.stage), pos.stage, boundary, IntConst<J % 2>{},
                               IntConst<0>{}, AllSlices{}, IntConst<0>{});
                        pos.advance();
                    };
                    step(IntConst<0>{});
                    step(IntConst<1>{});
                    step(IntConst<2>{});
                    step(IntConst<3>{});
                }
            }
            {
                // Serial kernels unroll K_UNROLL k-blocks: in the straight-line code ptxas moves the
                // next k-block's barrier wait, scale loads and descriptors up among the previous
                // promotion's FFMAs, off the path to the next wgmma (256x128: +6% with 4 over a
                // rolled loop). The host picks less where that spills. Pipelined kernels
                // (K_UNROLL 1) only run their tail of at most three full k-blocks here.
                auto k_block = [&](auto steps) {
                    if constexpr (PIPELINED) {   // the tail of the pipelined loop
                        wait_full(pos);
                        issue(pos.stage, Buf0{}, IntConst<0>{}, AllSlices{}, steps);
                        wgmma_wait<0>();
                        finish(read_scales(kb, pos.stage), pos.stage, boundary, Buf0{}, IntConst<0>{},
                               AllSlices{}, IntConst<0>{});
                    } else {
                        serial_k_block(kb, IntConst<0>{}, nothing, steps);
                    }
                };
                #pragma unroll (K_UNROLL)
                for (; kb < k_full_end(); ++kb, pos.advance()) k_block(FullK{});
                // The short last k-block: at K = 576 it holds 64 of 128, and wgmmas over its
                // zero-filled half would cost the tensor cores a tenth of the tile. (When it is
                // also the first k-block of a serial kernel's tile or slice, it ran above, in
                // full: the zero steps add nothing.)
                if constexpr (K_TAIL != 0) {
                    if (kb < k_slice_end()) {
                        k_block(IntConst<K_TAIL>{});
                        ++kb, pos.advance();
                    }
                }
            }

            // ------------------------------------------------------------ epilogue
            const u32 wg_row0 = m0 + warpgroup * Cfg::WG_M;
            // A pass over a two-expert tile stores only the warpgroups whose rows are its expert's.
            if (!Scheduler::kTwoExpertTiles || ((halves >> warpgroup) & 1)) {
                if constexpr (SPLIT_K > 1) {
                    reduce_split_k_tile<Cfg, M64, NUM_ACC>(p, smem, acc, part_ready_bar, part_free_bar, buf,
                                                           m0, n0, expert);
                } else if constexpr (Cfg::TMA_EPILOGUE) {
                    u8* d_smem = smem + Cfg::OFF_D + warpgroup * Cfg::D_WG_BYTES;
                    // The previous tile's store must have finished reading the staging buffer.
                    if (store_thread) tma_store_wait_smem_read();
                    named_barrier_sync(barrier_id, 128);
                    stage_output_tile<Cfg, M64, NUM_ACC>(smem_u32(d_smem), acc, warp, lane);
                    fence_async_shared();
                    named_barrier_sync(barrier_id, 128);
                    if (store_thread) {
                        store_output_tile<Cfg>(p, d_smem, n0, wg_row0, expert);
                        tma_store_commit();
                    }
                } else {
                    store_fragments_direct<Cfg, M64, NUM_ACC>(p, acc, wg_row0, n0, expert, warp, lane);
                }
            }
            buf ^= 1;
            m_block = next_m_block, n_block = next_n_block, expert = next_expert, has_tile = has_next;
            halves = next_halves;
        }
        if constexpr (Cfg::TMA_EPILOGUE) {
            if (store_thread) tma_store_wait_all();
        }
    }

    // A CTA must not exit while its cluster partner may still multicast into its shared memory or
    // arrive on its barriers. (Reconverge first: the cluster barrier is warp-aligned.)
    __syncwarp();
    if constexpr (CLUSTER > 1) cluster_sync();
}

}  // namespace deep_gemm
