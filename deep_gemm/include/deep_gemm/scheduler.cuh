// Persistent tile scheduler. Each cluster walks "units" (one output tile per CTA of the cluster)
// with a stride of the number of clusters, in grouped order so that the tiles in flight at the same
// time share A rows and B columns in L2. The same walk serves the dense GEMM and the two M-grouped
// MoE layouts; which one is a template argument.
#pragma once
#include <deep_gemm/ptx.cuh>

namespace deep_gemm {

enum GemmKind : u32 {
    kGemmDense = 0,
    // A = [M_sum, K], all experts' rows back to back; grouped_layout[row] = expert of that row, -1 for
    // padding. Experts start at multiples of 128 rows, so each 128-row block has one expert (that
    // of its first row); blocks whose expert is not in [0, num_groups) are skipped. A 256-row tile
    // is two such blocks, one per math warpgroup: when they belong to different experts the tile
    // is walked twice, once per expert, and each pass stores only its own block (`halves`).
    kGemmGroupedContiguous = 1,
    // A = [G, M_max, K]; grouped_layout[g] = valid rows of expert g (read on the device, clamped to
    // [0, M_max]), so the host never synchronizes and CUDA graphs can replay with new counts.
    kGemmGroupedMasked = 2,
};

// kPairAxis says along which axis the two CTAs of a cluster sit: 0 = none (cluster of 1),
// 1 = adjacent M blocks (they share the B tile), 2 = adjacent N blocks (they share the A tile).
// The grouped kinds pair along N only: both CTAs of a pair then always share one expert.
// kSplitK > 1 (no pairing): the cluster's kSplitK CTAs all get the same tile, each computes one
// slice of K, and the cluster reduces the partial tiles through distributed shared memory.
template <u32 kBlockM, u32 kBlockN, u32 kPairAxis, u32 kKind, u32 kSplitK = 1>
struct TileScheduler {
    static_assert(kKind == kGemmDense || kPairAxis != 1, "grouped GEMMs multicast along N only");
    static_assert(kSplitK == 1 || kPairAxis == 0, "a cluster either pairs tiles or splits K, not both");
    static constexpr u32 kClusterSize = kPairAxis != 0 ? 2 : kSplitK;
    // Contiguous 256-row tiles may hold two experts' blocks (see GemmKind).
    static constexpr bool kTwoExpertTiles = kKind == kGemmGroupedContiguous && kBlockM == 256;

    u32 num_m_units, num_n_units, num_units;
    u32 group;        // N units per raster group
    u32 unit;         // current unit index
    u32 stride;       // number of clusters in the grid
    u32 rank;         // this CTA's rank inside its cluster
    const i32* layout;
    u32 num_groups, m_max;
    // masked walk: the expert whose units contain `unit`, and where its units start
    u32 cur_expert, expert_first_unit, expert_units;
    u32 m_rows;
    // Which 128-row halves of the last tile given are to be stored (bit h: half h); always both
    // unless kTwoExpertTiles. A second pass over the same tile, for the expert of its upper half,
    // is pending when second_pass_expert >= 0.
    u32 halves = 0b11;
    i32 second_pass_expert = -1;
    u32 second_pass_m, second_pass_n;

    DG_DEVICE TileScheduler(u32 m, u32 n, u32 raster_group, const i32* grouped_layout, u32 groups, u32 rows_per_group)
        : layout(grouped_layout), num_groups(groups), m_max(rows_per_group), m_rows(m) {
        const u32 n_blocks = ceil_div(n, kBlockN);
        num_n_units = kPairAxis == 2 ? ceil_div(n_blocks, 2u) : n_blocks;
        const u32 m_blocks = ceil_div(m, kBlockM);
        num_m_units = kPairAxis == 1 ? ceil_div(m_blocks, 2u) : m_blocks;
        num_units = num_m_units * num_n_units;
        group = raster_group == 0 ? 1u : raster_group;
        rank = kClusterSize == 1 ? 0u : cluster_cta_rank();
        unit = blockIdx.x / kClusterSize;
        stride = gridDim.x / kClusterSize;
        if constexpr (kKind == kGemmGroupedMasked) {
            cur_expert = 0;
            expert_first_unit = 0;
            expert_units = num_groups > 0 ? units_of_expert(0) : 0;
        }
    }

    DG_DEVICE u32 units_of_expert(u32 g) const {
        const i32 rows = __ldg(layout + g);
        const u32 valid = rows <= 0 ? 0u : min(static_cast<u32>(rows), m_max);
        return ceil_div(valid, kBlockM) * num_n_units;
    }

    // Grouped rasterization of a local unit index over an m_units x n_units grid.
    DG_DEVICE void raster(u32 local, u32 m_units, u32& m_unit, u32& n_unit) const {
        const u32 per_group = group * m_units;
        const u32 g = local / per_group;
        const u32 first_n = g * group;
        const u32 width = min(group, num_n_units - first_n);
        const u32 in_group = local - g * per_group;
        m_unit = in_group / width;
        n_unit = first_n + in_group % width;
    }

    // Gives this CTA's next tile as (m_block, n_block, expert); false once the cluster has no units
    // left. Both CTAs of a cluster get the same sequence of units; a tile past the matrix edge is
    // still walked (its loads read zeros, its stores are clipped) so multicast partners stay in step.
    // For the masked kind m_block counts within the expert's rows.
    DG_DEVICE bool valid_expert(i32 id) const { return id >= 0 && static_cast<u32>(id) < num_groups; }

    DG_DEVICE bool next(u32& m_block, u32& n_block, u32& expert) {
        if constexpr (kTwoExpertTiles) {
            if (second_pass_expert >= 0) {
                m_block = second_pass_m, n_block = second_pass_n, expert = static_cast<u32>(second_pass_expert);
                halves = 0b10;
                second_pass_expert = -1;
                return true;
            }
        }
        while (true) {
            u32 m_unit, n_unit;
            if constexpr (kKind == kGemmGroupedMasked) {
                while (unit >= expert_first_unit + expert_units) {
                    expert_first_unit += expert_units;
                    if (++cur_expert >= num_groups) return false;
                    expert_units = units_of_expert(cur_expert);
                }
                raster(unit - expert_first_unit, expert_units / num_n_units, m_unit, n_unit);
                expert = cur_expert;
            } else {
                if (unit >= num_units) return false;
                raster(unit, num_m_units, m_unit, n_unit);
                expert = 0;
            }
            m_block = kPairAxis == 1 ? m_unit * 2 + rank : m_unit;
            n_block = kPairAxis == 2 ? n_unit * 2 + rank : n_unit;
            unit += stride;
            if constexpr (kTwoExpertTiles) {
                const u32 upper_row = m_block * kBlockM + 128;
                const i32 lo = __ldg(layout + m_block * kBlockM);
                const i32 hi = upper_row < m_rows ? __ldg(layout + upper_row) : -1;
                const bool lo_ok = valid_expert(lo), hi_ok = valid_expert(hi);
                if (!lo_ok && !hi_ok) continue;   // padding: skip the tile
                halves = (lo_ok ? 0b01u : 0u) | (hi_ok ? 0b10u : 0u);
                expert = static_cast<u32>(lo_ok ? lo : hi);
                if (lo_ok && hi_ok && lo != hi) {
                    halves = 0b01;
                    second_pass_expert = hi, second_pass_m = m_block, second_pass_n = n_block;
                }
            } else if constexpr (kKind == kGemmGroupedContiguous) {
                const i32 id = __ldg(layout + m_block * kBlockM);
                if (!valid_expert(id)) continue;   // padding: skip the tile
                expert = static_cast<u32>(id);
            }
            return true;
        }
    }
};

}  // namespace deep_gemm
