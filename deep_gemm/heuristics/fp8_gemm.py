"""Config choice for the FP8 GEMM kernel from an explicit performance model, not a lookup table.

Model (all per SM, in cycles at a nominal clock):
  * A CTA processes its tiles one after another; a tile costs K/128 k-blocks, each bounded by
    the slower of tensor-core work (2*BM*BN*128 / FLOPS_PER_CYCLE) and operand traffic from L2
    (bytes this CTA loads per k-block / L2_BYTES_PER_CYCLE; a 2-CTA cluster halves the shared
    operand), plus a fixed epilogue/pipeline-fill cost per tile.
  * Tiles are dealt round-robin to at most num_sms persistent CTAs, so the kernel takes
    ceil(tiles / CTAs) tile-times: the wave count and the last wave's fill are what the block
    sizes trade against per-tile efficiency.
  * Whatever the tiling, the whole problem must cross HBM once: a floor of unique bytes / HBM rate.
  * A k-block also has a latency floor (barrier round trip, wgmma issue to retire, promotion) that
    matters when tiles are thin: the small-M (decode) shapes are bound by it and by HBM, not by
    the tensor cores.
  * Split-K (problems with fewer tiles than SMs): a cluster of S CTAs shares a tile, each runs
    ceil(kb / S) k-blocks, then they reduce the FP32 partials through distributed shared memory
    (a fixed cost plus BM*BN*4 bytes read per CTA). Clusters larger than 2 must fit in one GPC, so
    fewer of them are resident than SMs / S (CLUSTER_CAPACITY, measured).
The config with the smallest predicted time wins; ties go to fewer bytes moved, then larger tiles.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import math

from ..kernels.fp8_gemm import (BLOCK_K, EPI_TMA_STORE, K_STEPS, KIND_CONTIGUOUS, KIND_DENSE, KIND_MASKED,
                                MAX_ACCUMULATOR_FLOATS, MAX_SMEM, PAIR_M, PAIR_N, PAIR_NONE, Fp8GemmConfig,
                                k_tail_steps, valid_block_n)

FLOPS_PER_CYCLE = 8192          # dense FP8 wgmma per SM per cycle (1979 TFLOP/s / 132 SMs / 1.83 GHz)
L2_BYTES_PER_CYCLE = 48.0       # L2 -> SM operand bandwidth per SM
L2_BYTES = 50 << 20             # L2 capacity of an H100 / H200 SXM
# HBM rate a GEMM's weight stream reaches at decode sizes (H200: torch.amax reads 117 MB at
# 2.7 TB/s, the best decode GEMM 3.0 TB/s; 4.1 TB/s only at 1 GB)
HBM_BYTES_PER_CYCLE = 2.7e12 / 1.83e9
TILE_OVERHEAD_CYCLES = 600      # epilogue staging + pipeline refill per tile (partly overlapped)
# Tensor-core time lost to the per-128-K promotion: pipelined (next k-block's wgmmas in flight),
# serial with one m64 slice per warpgroup (the tensor cores wait for the FFMAs), and serial with two
# slices taking turns (the other warpgroup's wgmmas fill the gap: nothing measurable is lost).
PIPELINED_EFFICIENCY_LOSS = 1.1
SERIAL_EFFICIENCY_LOSS = 1.2
SERIAL_TWO_SLICE_LOSS = 1.0
# A serial main loop left rolled (k_unroll 1: tiles whose unrolled loop spills, such as 128x160) gives
# the scheduler no next k-block to overlap with its promotion. Sessions 9-10's sweeps ran 128x160 at
# 0.89-0.95 of 128x192 (unrolled by 2) on five M=4096 shapes; the model, without this, picked
# 128x160 at M=4097 and 8192x2112x7168, which then ran 11-14% slower (session 16).
ROLLED_SERIAL_LOSS = 1.1
# Shared-memory bandwidth per SM per cycle, which a k-block's traffic competes for: TMA writes the
# A and B tiles once, and every m64 wgmma slice reads its 64 A rows and the whole B tile again. It
# is what makes narrow tiles slow (64x128: 48 KB per 256 tensor cycles) and 256x128 the best tile.
SMEM_BYTES_PER_CYCLE = 120.0
# Tiles whose promotion selects a B scale per column group at run time (Fp8GemmConfig.
# selects_scales_per_column): the selects cost about as much as the FFMAs they feed.
SCALE_SELECT_LOSS = 1.2
# ... and a fixed cost per tile for them (setting up the per-column scale selection, outside the
# k-loop): at K=576 (5 k-blocks) 64x56/64x112 ran 3-5% behind 64x64/64x128 on the HBM floor, while a
# per-k-block cost of more than ~10 cycles flips the K=7168 picks (fitted on the s16 sweeps).
SCALE_SELECT_TILE_CYCLES = 400
# Multicast pairs run their two CTAs in lockstep (a stage is free only when both consumers are done
# with it), which costs more than the halved L2 traffic of the shared operand saves at M=4096.
PAIR_LOCKSTEP_LOSS = 1.02
KBLOCK_LATENCY_CYCLES = 400    # floor per k-block of one CTA, however thin the tile
KBLOCK_LATENCY_PER_COLUMN = 0.5  # ... plus this per output column of a warpgroup (promotion, wgmma length)
PAIR_LATENCY_FACTOR = 1.3      # multicast pairs wait for both CTAs' consumers per stage
SERIAL_LATENCY_FACTOR = 1.3    # serial promotion: the FFMAs are on every k-block's critical path
LAUNCH_CYCLES = 6400           # launch, prologue, first loads and the last store (about 3.5 us)
SPLIT_REDUCE_CYCLES = 1000     # split-K: fence, cluster barrier round trip, partial tile store
# ... and per CTA of the cluster: arrivals, the wait for its slowest CTA (up to 2.5 us in
# tools/phase_probe.py), larger clusters' placement. Refitted in session 16 (1500 -> 3000) to sweeps of
# the current kernels at M = 64..512 (1951 configs over 21 shapes): splits of 3 and 4 lost to splits of
# 2 with thinner tiles (128x2112x7168: 64x112 split 3 12.5 us, 64x64 split 2 11.6 us).
SPLIT_PER_CTA_CYCLES = 3000
DSMEM_BYTES_PER_CYCLE = 32.0   # split-K: partial reads through distributed shared memory, per SM
# Resident clusters of each size on a full H200 (132 SMs), cuOccupancyMaxActiveClusters as
# tools/cluster_capacity.py prints it; other SM counts scale it. The latency and split constants
# above were fitted to the H200 sweeps in benchmarks/results (see benchmarks/NOTES.md).
CLUSTER_CAPACITY = {1: 132, 2: 66, 3: 39, 4: 30, 5: 22, 6: 17, 7: 15, 8: 15}
MAX_SPLIT_K = 8
MAX_STAGES = 8
MIN_STAGES = 3

BLOCK_NS = tuple(n for n in range(16, 257, 8) if valid_block_n(n))


@dataclasses.dataclass(frozen=True)
class Estimate:
    config: Fp8GemmConfig
    cycles: float
    waves: int
    last_wave_fill: float
    bytes_l2: float


def stages_that_fit(cfg: Fp8GemmConfig, k: int) -> int:
    for stages in range(MAX_STAGES, 0, -1):
        if dataclasses.replace(cfg, stages=stages).smem_bytes(k) <= MAX_SMEM:
            return stages
    return 0


def resident_clusters(num_sms: int, cluster: int) -> int:
    """Clusters of `cluster` CTAs (one per SM) that can run at once on `num_sms` SMs."""
    full = CLUSTER_CAPACITY.get(cluster, 132 // cluster)
    return max(1, min(num_sms // cluster, full * num_sms // 132))


def estimate(cfg: Fp8GemmConfig, m: int, n: int, k: int, groups: int = 1, experts: int = 1) -> Estimate:
    """`groups` independent problems of m x n x k (masked grouped GEMM: m = rows per expert).
    `experts`: for the contiguous kind, how many experts share the m rows."""
    bm, bn, split = cfg.block_m, cfg.block_n, cfg.split_k
    mb, nb = math.ceil(m / bm), math.ceil(n / bn)
    if cfg.two_expert_tiles:
        # The host cannot see where experts start (m_indices lives on the device): count the worst
        # case, every boundary between experts inside a 256-row tile, which runs that tile twice.
        mb += min(experts - 1, mb)
    if cfg.pair_axis == PAIR_M:
        mb = 2 * math.ceil(mb / 2)
    elif cfg.pair_axis == PAIR_N:
        nb = 2 * math.ceil(nb / 2)
    tiles = mb * nb * groups
    # One tile per CTA at a time, or per cluster of `split` CTAs.
    slots = resident_clusters(cfg.num_sms, split) if split > 1 else cfg.num_sms
    ctas = min(slots, tiles)
    waves = math.ceil(tiles / ctas)
    kb = math.ceil(k / BLOCK_K)
    kb_per_cta = math.ceil(kb / split)
    a_bytes, b_bytes = bm * BLOCK_K, bn * BLOCK_K
    if cfg.pair_axis == PAIR_M:
        b_bytes /= 2
    elif cfg.pair_axis == PAIR_N:
        a_bytes /= 2
    compute = 2 * bm * bn * BLOCK_K / FLOPS_PER_CYCLE
    # A k-block takes the longer of its tensor-core time (with what the promotion costs) and its
    # shared-memory traffic. Fitted with tools/fit_model.py to the H200 sweeps in benchmarks/results
    # (benchmarks/NOTES.md, session 5: dense M=4096 and M=8192/32768, contiguous 4 and 32 experts):
    # mean regret 0.7%, worst 3%; the M<=128 picks are unchanged from the earlier fits.
    if cfg.pipelined:
        compute *= PIPELINED_EFFICIENCY_LOSS
    else:
        compute *= SERIAL_EFFICIENCY_LOSS if cfg.wg_m == 64 else SERIAL_TWO_SLICE_LOSS
        if cfg.k_unroll == 1:
            compute *= ROLLED_SERIAL_LOSS
    smem = (bm + bn) * BLOCK_K + (bm // 64) * (64 + bn) * BLOCK_K
    compute = max(compute, smem / SMEM_BYTES_PER_CYCLE)
    if cfg.selects_scales_per_column():
        compute *= SCALE_SELECT_LOSS
    if cfg.pair_axis != PAIR_NONE:
        compute *= PAIR_LOCKSTEP_LOSS
    load = (a_bytes + b_bytes + bm * 4) / L2_BYTES_PER_CYCLE
    latency = (KBLOCK_LATENCY_CYCLES + KBLOCK_LATENCY_PER_COLUMN * bn * cfg.wg_m / 64) * \
        (PAIR_LATENCY_FACTOR if cfg.pair_axis != PAIR_NONE else 1.0)
    if not cfg.pipelined:
        latency *= SERIAL_LATENCY_FACTOR   # the promotion is on the critical path of every k-block
    # A short last k-block (k_tail) runs only its steps with data: a fraction of a k-block's
    # tensor work, in the slice that holds it (the first slices are the longest under split-K).
    short = 1 - cfg.k_tail / K_STEPS if cfg.k_tail and split == 1 else 0.0
    tile_cycles = kb_per_cta * max(compute, load, latency) - short * compute + TILE_OVERHEAD_CYCLES
    if cfg.selects_scales_per_column():
        tile_cycles += SCALE_SELECT_TILE_CYCLES
    if split > 1:
        tile_cycles += SPLIT_REDUCE_CYCLES + SPLIT_PER_CTA_CYCLES * split + bm * bn * 4 / DSMEM_BYTES_PER_CYCLE
    unique_bytes = groups * (m * k + n * k + m * n * cfg.out_bytes)
    # The CTAs' own pace and the chip's HBM rate each bound the time; near the knee both cost,
    # so they combine as a smooth maximum (a hard one ties every config under the HBM floor).
    work, floor = waves * tile_cycles, unique_bytes / HBM_BYTES_PER_CYCLE
    cycles = LAUNCH_CYCLES + (work ** 4 + floor ** 4) ** 0.25
    fill = (tiles - (waves - 1) * ctas) / ctas
    return Estimate(cfg, cycles, waves, fill, tiles * kb * (a_bytes + b_bytes))


def raster_group(num_sms: int, block_m: int, block_n: int, n_units: int, k: int) -> int:
    """N units per raster group, which decides how the tiles of one wave (num_sms of them) spread
    over A's row blocks and B's.
    - When a wave's operands are a large part of L2 (long K), the next wave re-reads from HBM what
      L2 could not keep, so the group balances the wave's A rows against its B rows, which makes
      its footprint smallest: G * BN ~ (tiles / G) * BM.
    - When they fit in a quarter of L2 (short K: the two L2 partitions may each hold a copy, and
      the output passes through as well), HBM reuse is not at stake. There each A block and each B
      block is read by about as many CTAs of the wave as the other: G ~ sqrt(tiles). Measured on
      the H200 (benchmarks/NOTES.md, session 15), against the footprint group: +1.8-1.9% at
      K = 576, -0.1..+0.9% at K = 512-2048; at K = 16384 it read 31% more from HBM and was slower.
    """
    footprint = max(1, round(math.sqrt(num_sms * block_m / block_n)))
    wave_bytes = (num_sms / footprint * block_m + footprint * block_n) * k
    g = footprint if wave_bytes > L2_BYTES / 4 else round(math.sqrt(num_sms))
    return max(1, min(g, n_units))


def raster_group_for(cfg: Fp8GemmConfig, n: int, k: int) -> int:
    """raster_group for cfg's tiles over N and K; a pair along N is one unit of two n-blocks."""
    n_units = math.ceil(n / cfg.block_n)
    if cfg.pair_axis == PAIR_N:
        n_units = math.ceil(n_units / 2)
    return raster_group(cfg.num_sms, cfg.block_m, cfg.block_n, n_units, k)


def sized(cfg: Fp8GemmConfig, n: int, k: int) -> Fp8GemmConfig | None:
    """cfg with the most pipeline stages that fit K, its short last k-block (k_tail) and the
    raster group for N, or None when fewer than MIN_STAGES fit."""
    stages = stages_that_fit(cfg, k)
    if stages < MIN_STAGES:
        return None
    return dataclasses.replace(cfg, stages=stages, k_tail=k_tail_steps(k), raster_group=raster_group_for(cfg, n, k))


def candidates(m: int, n: int, k: int, out_f32: bool, epilogue: int, num_sms: int, kind: int = KIND_DENSE):
    """Every config the kernel can run for this problem, with the most stages that fit. For the
    grouped kinds, m is the total row count (masked: experts x expected rows per expert); their
    experts are 128-row aligned, so block_m divides 128 (contiguous: or is 256, two 128-row
    warpgroups), and pairs share an expert (N pairs only)."""
    kb = math.ceil(k / BLOCK_K)
    # Split-K runs the dense and masked kinds (masked: m is the expected total, tiles per expert).
    splits = range(1, MAX_SPLIT_K + 1) if kind in (KIND_DENSE, KIND_MASKED) and num_sms >= 2 else (1,)
    for bm in ((64, 128) if kind == KIND_MASKED else (64, 128, 256)):
        wg = 1 if bm == 64 else 2
        for bn in BLOCK_NS:
            for pair in (PAIR_NONE, PAIR_M, PAIR_N):
                if pair == PAIR_M and (bn % 16 or math.ceil(m / bm) < 2 or kind != KIND_DENSE):
                    continue
                if pair == PAIR_N and math.ceil(n / bn) < 2:
                    continue
                if pair != PAIR_NONE and num_sms % 2:
                    continue
                for pipelined, split in itertools.product((True, False), splits if pair == PAIR_NONE else (1,)):
                    cfg = Fp8GemmConfig(bm, bn, 1, wg, pair, out_f32, epilogue, pipelined, kind, split_k=split,
                                        num_sms=num_sms)
                    if cfg.accumulator_floats() > MAX_ACCUMULATOR_FLOATS:
                        continue
                    if split > 1 and (math.ceil(m / bm) * math.ceil(n / bn) >= num_sms or kb < 2 * split):
                        continue   # enough tiles already, or slices of under two k-blocks
                    cfg = sized(cfg, n, k)
                    if cfg is not None:
                        yield cfg


@functools.lru_cache(maxsize=4096)
def ranked_configs(m: int, n: int, k: int, out_f32: bool, epilogue: int, num_sms: int, kind: int = KIND_DENSE,
                   groups: int = 1) -> tuple:
    """Every runnable config, best predicted first (ties: fewer bytes, then larger tiles).
    Masked kind: m is the rows per expert and `groups` the experts (that many independent m x n x k
    problems); the dense and contiguous kinds give all rows in m (contiguous: `groups` experts)."""
    experts = groups if kind == KIND_CONTIGUOUS else 1
    if kind != KIND_MASKED:
        groups = 1
    scored = []
    for cfg in candidates(m * groups, n, k, out_f32, epilogue, num_sms, kind):
        est = estimate(cfg, m, n, k, groups, experts)
        scored.append(((round(est.cycles, -1), est.bytes_l2, -cfg.block_m * cfg.block_n), cfg))
    if not scored:
        raise ValueError(f"no FP8 GEMM config fits shared memory for M={m}, N={n}, K={k}")
    scored.sort(key=lambda item: item[0])
    return tuple(cfg for _, cfg in scored)


def choose_config(m: int, n: int, k: int, out_f32: bool, epilogue: int, num_sms: int) -> Fp8GemmConfig:
    """The model's pick. (The JIT layer skips to the next one if ptxas reports spills for it.)"""
    return ranked_configs(m, n, k, out_f32, epilogue, num_sms)[0]


def uses_local_memory(resources: dict) -> bool:
    """Whether a compiled kernel (its ptxas resource report) spills or has a stack frame."""
    return bool(resources.get("spill_stores") or resources.get("spill_loads") or resources.get("stack_frame"))


def first_without_spills(configs, build) -> Fp8GemmConfig:
    """The first config whose compiled kernel uses no local memory; `build(cfg)` -> CompiledKernel.
    Register allocation near the 192-accumulator limit differs between ptxas versions, so the
    model's choice is checked against the real compiler rather than a fixed rule."""
    # An unrolled serial main loop may spill where the same config rolled does not: that is tried
    # next, before the model's next choice. At most 8 compiles in all.
    attempts = (cfg for candidate in configs
                for cfg in ((candidate, dataclasses.replace(candidate, unroll=1)) if candidate.k_unroll > 1
                            else (candidate,)))
    first = None
    for cfg in itertools.islice(attempts, 8):
        resources = build(cfg).resources
        if first is None:
            first = cfg
        if not uses_local_memory(resources):
            return cfg
    return first


def describe(cfg: Fp8GemmConfig, m: int, n: int, k: int) -> str:
    est = estimate(cfg, m, n, k)
    pair = {PAIR_NONE: "none", PAIR_M: "B shared by M pairs", PAIR_N: "A shared by N pairs"}[cfg.pair_axis]
    return (f"M={m} N={n} K={k}: block {cfg.block_m}x{cfg.block_n}, {cfg.stages} stages, {cfg.num_math_wg} math WG, "
            f"{'pipelined' if cfg.pipelined else 'serial'} promotion, "
            f"multicast {pair}, split-K {cfg.split_k}, raster group {cfg.raster_group}, "
            f"{f'short last k-block ({cfg.k_tail} of {K_STEPS} wgmma steps), ' if cfg.k_tail else ''}"
            f"{est.waves} waves (last {est.last_wave_fill:.0%} full), "
            f"predicted {est.cycles / 1.83e3:.1f} us")


__all__ = ["choose_config", "ranked_configs", "sized", "first_without_spills", "uses_local_memory", "estimate", "describe", "raster_group", "BLOCK_NS", "EPI_TMA_STORE"]
