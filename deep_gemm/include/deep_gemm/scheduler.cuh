// Persistent tile scheduler. Each cluster walks "units" (one output tile per CTA of the cluster)
// with a stride of the number of clusters, in grouped order so that the tiles in flight at the same
// time share A rows and B columns in L2.
#pragma once
#include <deep_gemm/ptx.cuh>

namespace deep_gemm {

// kPairAxis says along which axis the two CTAs of a cluster sit: 0 = none (cluster of 1),
// 1 = adjacent M blocks (they share the B tile), 2 = adjacent N blocks (they share the A tile).
template <u32 kBlockM, u32 kBlockN, u32 kPairAxis>
struct TileScheduler {
    u32 num_m_units, num_n_units, num_units;
    u32 group;        // N units per raster group
    u32 unit;         // current unit index
    u32 stride;       // number of clusters in the grid
    u32 rank;         // this CTA's rank inside its cluster

    DG_DEVICE TileScheduler(u32 m, u32 n, u32 raster_group) {
        const u32 m_blocks = ceil_div(m, kBlockM), n_blocks = ceil_div(n, kBlockN);
        num_m_units = kPairAxis == 1 ? ceil_div(m_blocks, 2u) : m_blocks;
        num_n_units = kPairAxis == 2 ? ceil_div(n_blocks, 2u) : n_blocks;
        num_units = num_m_units * num_n_units;
        group = raster_group == 0 ? 1u : raster_group;
        const u32 cluster_size = kPairAxis == 0 ? 1u : 2u;
        rank = kPairAxis == 0 ? 0u : cluster_cta_rank();
        unit = blockIdx.x / cluster_size;
        stride = gridDim.x / cluster_size;
    }

    // Gives this CTA's next tile as (m_block, n_block); false once the cluster has no units left.
    // Both CTAs of a cluster get the same number of tiles; a tile past the matrix edge is still
    // walked (its loads read zeros, its stores are clipped) so the multicast partners stay in step.
    DG_DEVICE bool next(u32& m_block, u32& n_block) {
        if (unit >= num_units) return false;
        const u32 per_group = group * num_m_units;
        const u32 g = unit / per_group;
        const u32 first_n = g * group;
        const u32 width = min(group, num_n_units - first_n);
        const u32 local = unit - g * per_group;
        const u32 m_unit = local / width, n_unit = first_n + local % width;
        m_block = kPairAxis == 1 ? m_unit * 2 + rank : m_unit;
        n_block = kPairAxis == 2 ? n_unit * 2 + rank : n_unit;
        unit += stride;
        return true;
    }
};

}  // namespace deep_gemm
