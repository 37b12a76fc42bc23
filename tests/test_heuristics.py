"""Invariants of the FP8 GEMM config heuristic (pure Python, DESIGN.md sections 3 and 8).

The wave count is recomputed here the way the kernel sees the work (persistent CTAs, or CTA pairs
for a cluster, walking tile units), not with the heuristic's own formula.
"""

import dataclasses
import itertools
import math
import warnings

import pytest

from deep_gemm.api import calls, dense
from deep_gemm.heuristics import fp8_gemm as h
from deep_gemm.jit.compiler import CompiledKernel
from deep_gemm.kernels import fp8_gemm as kernel
from deep_gemm.kernels.fp8_gemm import (EPI_DIRECT, EPI_DIRECT_ACCUMULATE, EPI_TMA_REDUCE, EPI_TMA_STORE,
                                        KIND_CONTIGUOUS, KIND_DENSE, KIND_MASKED, MAX_ACCUMULATOR_FLOATS, MAX_SMEM, PAIR_M,
                                        PAIR_N, PAIR_NONE, Fp8GemmConfig)

DEEPSEEK_NK = [(2112, 7168), (576, 7168), (7168, 576), (24576, 1536), (32768, 512), (7168, 16384), (4096, 7168),
               (7168, 2048)]
DEEPSEEK = [(m, n, k) for m in (64, 128, 4096) for n, k in DEEPSEEK_NK]
ODD = list(itertools.product((1, 7, 65, 300, 4097), (8, 24, 136, 4104), (128, 384, 7168, 7232)))
SHAPES = DEEPSEEK + ODD
SMS = (132, 114, 78, 131)
# Every output kind on an H100's SM count; the two common ones on every SM count (time budget).
CASES = ([(out, epi, 132) for out, epi in ((False, EPI_DIRECT), (True, EPI_TMA_STORE), (True, EPI_DIRECT_ACCUMULATE))]
         + [(out, epi, sms) for out, epi in ((False, EPI_TMA_STORE), (True, EPI_TMA_REDUCE)) for sms in SMS])


def kernel_waves(cfg: Fp8GemmConfig, m: int, n: int, k: int) -> int:
    """Rounds of tile units the persistent grid walks: units are tiles, or pairs of neighbouring
    tiles along the paired axis; the grid has min(SMs / cluster, units) CTAs (or pairs)."""
    mb, nb = math.ceil(m / cfg.block_m), math.ceil(n / cfg.block_n)
    if cfg.pair_axis == PAIR_M:
        mb = math.ceil(mb / 2)
    elif cfg.pair_axis == PAIR_N:
        nb = math.ceil(nb / 2)
    units = mb * nb
    slots = min(cfg.num_sms // cfg.cluster, units)
    if cfg.cluster > 2:
        # Clusters above 2 CTAs must fit in one GPC: the plan asks the driver how many can be
        # resident; the model's table of that answer stands in for the driver here.
        slots = min(slots, max(1, h.CLUSTER_CAPACITY[cfg.cluster] * cfg.num_sms // 132))
    return math.ceil(units / slots)


def check_invariants(cfg: Fp8GemmConfig, m, n, k, out_f32, epilogue, num_sms):
    where = f"M={m} N={n} K={k} out_f32={out_f32} epi={epilogue} sms={num_sms}: {cfg}"
    cfg.check()
    assert (cfg.out_f32, cfg.epilogue, cfg.num_sms) == (out_f32, epilogue, num_sms), where
    assert h.MIN_STAGES <= cfg.stages <= h.MAX_STAGES, where
    assert cfg.smem_bytes(k) <= MAX_SMEM, where
    # The largest stage count that fits is used: one more would not fit (or is past the cap).
    assert cfg.stages == h.MAX_STAGES or \
        dataclasses.replace(cfg, stages=cfg.stages + 1).smem_bytes(k) > MAX_SMEM, where
    # Per thread, BLOCK_N/2 floats for each m64 slice of the warpgroup's rows, plus temporaries: two
    # per slice when pipelined, one slice's worth shared by the slices when serial. Counted here,
    # not with the config's own method.
    m64_per_wg = cfg.block_m // cfg.num_math_wg // 64
    slices = 3 * m64_per_wg if cfg.pipelined else m64_per_wg + 1
    assert slices * cfg.block_n // 2 <= MAX_ACCUMULATOR_FLOATS, where
    assert (cfg.block_m == 64) == (cfg.num_math_wg == 1), where
    if num_sms % 2:
        assert cfg.pair_axis == PAIR_NONE, where
    if cfg.pair_axis == PAIR_M:
        assert math.ceil(m / cfg.block_m) >= 2, where
    if cfg.pair_axis == PAIR_N:
        assert math.ceil(n / cfg.block_n) >= 2, where

    if cfg.split_k > 1:
        # split-K only where the tiles alone cannot fill the SMs, with at least two k-blocks a slice
        assert cfg.pair_axis == PAIR_NONE, where
        assert math.ceil(m / cfg.block_m) * math.ceil(n / cfg.block_n) < num_sms, where
        assert math.ceil(k / 128) >= 2 * cfg.split_k, where

    est = h.estimate(cfg, m, n, k)
    assert est.waves == kernel_waves(cfg, m, n, k), where
    assert 0 < est.last_wave_fill <= 1, where
    assert est.cycles > 0 and est.bytes_l2 > 0, where

    n_units = math.ceil(n / cfg.block_n)
    if cfg.pair_axis == PAIR_N:
        n_units = math.ceil(n_units / 2)
    assert 1 <= cfg.raster_group <= n_units, where


@pytest.mark.parametrize("out_f32, epilogue, num_sms", CASES)
def test_choose_config_invariants(out_f32, epilogue, num_sms):
    for m, n, k in SHAPES:
        cfg = h.choose_config(m, n, k, out_f32, epilogue, num_sms)
        check_invariants(cfg, m, n, k, out_f32, epilogue, num_sms)


@pytest.mark.parametrize("m, n, k", [(1, 8, 128), (4097, 4104, 7232), (64, 32768, 512), (16384, 18432, 7168),
                                     (1, 7168, 65536), (8192, 8, 16384)])
def test_extremes(m, n, k):
    cfg = h.choose_config(m, n, k, False, EPI_TMA_STORE, 132)
    check_invariants(cfg, m, n, k, False, EPI_TMA_STORE, 132)


def test_odd_sm_count_never_pairs():
    picks = {h.choose_config(m, n, k, False, EPI_TMA_STORE, 131).pair_axis for m, n, k in SHAPES}
    assert picks == {PAIR_NONE}


def test_pairs_are_chosen_when_l2_bound(monkeypatch):
    # Multicast halves the L2 traffic of the shared operand but runs the pair in lockstep. On the
    # H200 the lockstep costs more than the traffic saves at these shapes (benchmarks/NOTES.md,
    # session 4), so the model rarely pairs; on a part with a third of the L2 bandwidth it must.
    unpaired = {h.choose_config(m, n, k, False, EPI_TMA_STORE, 132).pair_axis for m, n, k in DEEPSEEK if m == 4096}
    monkeypatch.setattr(h, "L2_BYTES_PER_CYCLE", h.L2_BYTES_PER_CYCLE / 3)
    h.ranked_configs.cache_clear()
    try:
        paired = {h.choose_config(m, n, k, False, EPI_TMA_STORE, 132).pair_axis for m, n, k in DEEPSEEK if m == 4096}
    finally:
        h.ranked_configs.cache_clear()
    assert unpaired == {PAIR_NONE}
    assert paired & {PAIR_M, PAIR_N}


def test_big_shapes_fill_the_machine():
    # With plenty of tiles, wave quantization should cost little: the SM-time the waves offer is
    # mostly used (a partly empty last wave matters less the more waves there are). Not all of it:
    # on 4096x2112x7168 the 128x192 tile uses 89% and ran 11% faster on an H200 than the 256x88
    # tile that uses 97% (benchmarks/results/2026-11-28_H200_s4_sweep_wide.json).
    for m, n, k in DEEPSEEK:
        if m == 4096:
            cfg = h.choose_config(m, n, k, False, EPI_TMA_STORE, 132)
            est = h.estimate(cfg, m, n, k)
            used = (est.waves - 1 + est.last_wave_fill) / est.waves
            assert used >= 0.85, (m, n, k, cfg, est)


def test_contiguous_two_expert_tiles_cost_a_pass_per_expert_boundary():
    # A 256-row tile whose halves have two experts runs twice; the host cannot see where experts
    # start, so the model charges every boundary. With many small experts that doubles the work.
    tile = h.sized(Fp8GemmConfig(256, 128, 1, 2, kind=KIND_CONTIGUOUS), 4096, 7168)
    assert tile.two_expert_tiles
    base = h.estimate(tile, 32768, 4096, 7168, experts=1)
    few = h.estimate(tile, 32768, 4096, 7168, experts=4)
    many = h.estimate(tile, 32768, 4096, 7168, experts=256)
    assert base.cycles <= few.cycles < 1.05 * base.cycles and few.bytes_l2 > base.bytes_l2
    assert many.cycles > 1.9 * base.cycles
    picks = h.ranked_configs(32768, 4096, 7168, False, EPI_TMA_STORE, 132, KIND_CONTIGUOUS, 256)
    assert picks[0].block_m <= 128
    # the dense kind has no experts, and the masked kind never takes 256-row tiles
    assert h.estimate(dataclasses.replace(tile, kind=KIND_DENSE), 32768, 4096, 7168, experts=256).cycles == base.cycles
    assert all(c.block_m <= 128 for c in h.ranked_configs(256, 4096, 7168, False, EPI_TMA_STORE, 132, KIND_MASKED, 8))


def test_choose_config_is_deterministic():
    a = h.choose_config(4096, 7168, 2048, False, EPI_TMA_STORE, 132)
    h.ranked_configs.cache_clear()
    assert h.choose_config(4096, 7168, 2048, False, EPI_TMA_STORE, 132) == a


@pytest.mark.parametrize("m, n, k, num_sms", [(4096, 7168, 2048, 132), (65, 4104, 7232, 131), (1, 8, 128, 78)])
def test_ranked_configs(m, n, k, num_sms):
    ranked = h.ranked_configs(m, n, k, False, EPI_TMA_STORE, num_sms)
    assert ranked[0] == h.choose_config(m, n, k, False, EPI_TMA_STORE, num_sms)
    assert len(set(ranked)) == len(ranked) > 1
    cycles = [round(h.estimate(c, m, n, k).cycles, -1) for c in ranked]
    assert cycles == sorted(cycles), "ranked best predicted first"
    for cfg in ranked:       # every fallback is as runnable as the first choice
        check_invariants(cfg, m, n, k, False, EPI_TMA_STORE, num_sms)
    assert {c.pipelined for c in ranked} == {True, False}


def _fake_kernel(cfg, spills: bool) -> CompiledKernel:
    r = {"registers": 168, "stack_frame": 16 if spills else 0, "spill_stores": 8 if spills else 0,
         "spill_loads": 8 if spills else 0, "static_smem": None}
    return CompiledKernel(cfg.kernel_name(), "sym", b"", "", r, 0.0, "fake")


def _attempts(cfg):
    """What first_without_spills compiles for one ranked config: an unrolled serial kernel, then
    the same config rolled."""
    return [cfg, dataclasses.replace(cfg, unroll=1)] if cfg.k_unroll > 1 else [cfg]


def test_first_without_spills_skips_spilling_configs():
    ranked = h.ranked_configs(4096, 7168, 2048, False, EPI_TMA_STORE, 132)
    attempts = [a for cfg in ranked[:3] for a in _attempts(cfg)]
    assert len(attempts) > 3, "the test wants at least one unrolled candidate in the first three"
    built = []

    def build(cfg):
        built.append(cfg)
        return _fake_kernel(cfg, spills=len(built) <= 2)

    assert h.first_without_spills(ranked, build) == attempts[2]
    assert built == attempts[:3], "stops at the first clean kernel"


def test_first_without_spills_rolls_the_loop_before_moving_on():
    # 256x128 serial is unrolled by default; when ptxas spills on that, the same tile rolled is
    # next, ahead of the model's second choice.
    cfg = h.ranked_configs(4096, 4096, 7168, False, EPI_TMA_STORE, 132)[0]
    assert (cfg.block_m, cfg.block_n, cfg.pipelined, cfg.k_unroll) == (256, 128, False, 4)
    built = []

    def build(c):
        built.append(c)
        return _fake_kernel(c, spills=c.k_unroll > 1)

    pick = h.first_without_spills([cfg], build)
    assert pick == dataclasses.replace(cfg, unroll=1) and pick.k_unroll == 1
    assert pick.kernel_name() != cfg.kernel_name()


def test_first_without_spills_when_everything_spills():
    ranked = h.ranked_configs(4096, 7168, 2048, False, EPI_TMA_STORE, 132)
    built = []

    def build(cfg):
        built.append(cfg)
        return _fake_kernel(cfg, spills=True)

    # Falls back to the model's choice after a bounded number of compiles.
    assert h.first_without_spills(ranked, build) == ranked[0]
    assert 1 <= len(built) <= 8


@pytest.mark.parametrize("m, n, k", [(64, 2112, 7168), (4096, 7168, 2048), (7, 136, 7232), (4096, 7168, 576)])
def test_describe(m, n, k):
    cfg = h.choose_config(m, n, k, False, EPI_TMA_STORE, 132)
    text = h.describe(cfg, m, n, k)
    assert isinstance(text, str)
    assert f"M={m} N={n} K={k}" in text
    assert f"{cfg.block_m}x{cfg.block_n}" in text and "waves" in text
    assert ("short last k-block" in text) == (k % 128 != 0 and k > 128 and k % 128 <= 96)


def test_raster_group_bounds():
    # set_num_sms may leave a single SM, where the footprint group of 64x256 rounds to zero
    for num_sms, bm, bn, units, k in itertools.product(SMS + (1, 2), (64, 128, 256), (16, 112, 256), (1, 2, 7, 100),
                                                       (128, 2048, 16384)):
        g = h.raster_group(num_sms, bm, bn, units, k)
        assert 1 <= g <= units


def test_raster_group_follows_the_waves_footprint_in_l2():
    # 256x128 on 132 SMs: a wave of the footprint group (16) holds (132/16 * 256 + 16 * 128) * K
    # bytes of operands; up to a quarter of L2 the group that shares A and B blocks alike wins.
    edge = h.L2_BYTES // 4 // (132 / 16 * 256 + 16 * 128)
    assert 2048 < edge < 7168
    assert h.raster_group(132, 256, 128, 56, 16384) == h.raster_group(132, 256, 128, 56, 7168) == 16
    assert h.raster_group(132, 256, 128, 56, int(edge) + 128) == 16
    assert h.raster_group(132, 256, 128, 56, 576) == h.raster_group(132, 256, 128, 56, 2048) == 11
    assert h.raster_group(132, 256, 128, 6, 576) == 6   # no more than the N units there are
    cfg = h.choose_config(4096, 7168, 576, False, EPI_TMA_STORE, 132)
    assert (cfg.block_m, cfg.block_n, cfg.raster_group) == (256, 128, 11)
    assert h.choose_config(64, 2112, 7168, False, EPI_TMA_STORE, 1).raster_group >= 1   # one SM left


def test_stages_that_fit():
    cfg = Fp8GemmConfig(128, 128, 1, 2)
    s = h.stages_that_fit(cfg, 7168)
    assert 1 <= s <= h.MAX_STAGES
    assert Fp8GemmConfig(128, 128, s, 2).smem_bytes(7168) <= MAX_SMEM
    if s < h.MAX_STAGES:
        assert Fp8GemmConfig(128, 128, s + 1, 2).smem_bytes(7168) > MAX_SMEM


def test_block_ns_are_valid_and_include_non_powers_of_two():
    for bn in (112, 136, 144, 160):
        assert bn in h.BLOCK_NS


# --------------------------------------------------------------------------------------------- plan construction

@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    # _make_plan compiles candidates into the disk cache; keep that out of ~/.cache.
    monkeypatch.setenv("DG_JIT_CACHE_DIR", str(tmp_path / "dg_cache"))


class _FakePlan:
    """Stands in for Fp8GemmPlan, which loads the kernel on a GPU."""

    def __init__(self, config, m, n, k, device):
        self.config, self.shape, self.device = config, (m, n, k), device


def test_make_plan_prints_config_when_asked(monkeypatch, capsys):
    monkeypatch.setattr(dense.kernel, "Fp8GemmPlan", _FakePlan)
    monkeypatch.setenv("DG_PRINT_CONFIGS", "1")
    # The run-time pick compiles candidates (no GPU needed) to skip any that spill.
    plan = dense._make_plan(4096, 7168, 2048, False, EPI_TMA_STORE, 0, 132, None)
    out = capsys.readouterr().out
    assert "M=4096 N=7168 K=2048" in out and plan.config.kernel_name().split("_")[2][1:] in out
    assert plan.config in h.ranked_configs(4096, 7168, 2048, False, EPI_TMA_STORE, 132)
    r = plan.config.build().resources
    assert (r["spill_stores"], r["spill_loads"], r["stack_frame"]) == (0, 0, 0)

    monkeypatch.setenv("DG_PRINT_CONFIGS", "0")
    dense._make_plan(64, 2112, 7168, False, EPI_TMA_STORE, 0, 132, None)
    assert capsys.readouterr().out == ""


def test_make_plan_forced_config(monkeypatch):
    monkeypatch.setattr(dense.kernel, "Fp8GemmPlan", _FakePlan)
    forced = Fp8GemmConfig(128, 144, 5, 2, PAIR_M, num_sms=132)
    plan = dense._make_plan(4096, 7168, 2048, True, EPI_TMA_REDUCE, 0, 114, forced)
    # Output type and epilogue follow the tensors; the SM count never exceeds the device's.
    assert plan.config == dataclasses.replace(forced, out_f32=True, epilogue=EPI_TMA_REDUCE, num_sms=114)
    with pytest.raises(TypeError, match="config"):
        dense._make_plan(64, 64, 128, False, EPI_TMA_STORE, 0, 132, "128x128")
    # ... and so does the short last k-block of K = 576 (64 columns: two 32-wide steps)
    assert dense._make_plan(4096, 7168, 576, False, EPI_TMA_STORE, 0, 132, forced).config.k_tail == 2


@pytest.mark.parametrize("k,k_tail", [(576, 2), (512, 0), (7232, 2), (96, 0)])
def test_ranked_configs_carry_the_short_last_k_block(k, k_tail):
    ranked = h.ranked_configs(4096, 7168, k, False, EPI_TMA_STORE, 132)
    assert {c.k_tail for c in ranked} == {k_tail}
    if k_tail:
        # the model charges the short block only its steps' tensor work
        full = dataclasses.replace(ranked[0], k_tail=0)
        assert h.estimate(ranked[0], 4096, 7168, k).cycles < h.estimate(full, 4096, 7168, k).cycles


@pytest.mark.parametrize("units,max_clusters,expected", [
    (512, 132, 128),    # 4 rounds either way: 4 tiles on each of 128 CTAs
    (896, 132, 128),    # 7 rounds: 896 / 7
    (1024, 66, 64),     # pairs: 16 rounds on 64 clusters
    (132, 132, 132), (133, 132, 67), (17, 132, 17), (0, 132, 1), (1, 1, 1),
])
def test_balanced_clusters(units, max_clusters, expected):
    got = kernel.balanced_clusters(units, max_clusters)
    assert got == expected
    assert 1 <= got <= max(1, max_clusters)
    if units:   # the same number of rounds as the full grid, and no fewer clusters could do it
        rounds = -(-units // min(units, max_clusters))
        assert -(-units // got) == rounds
        assert got == 1 or -(-units // (got - 1)) > rounds


@pytest.mark.parametrize("unroll, expected", [(None, 1), (4, 4)])
def test_forced_config_rolls_its_loop_only_if_left_open(monkeypatch, unroll, expected):
    # A forced config whose unroll the user left open falls back to the rolled loop when the
    # unrolled one spills; an unroll the user set is kept (and warned about).
    monkeypatch.setattr(kernel.Fp8GemmConfig, "build", lambda c: _fake_kernel(c, spills=c.k_unroll > 1))
    forced = kernel.Fp8GemmConfig(256, 128, 3, 2, unroll=unroll)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = calls.resolve_config(lambda: (), forced, 132, "test", out_f32=False, epilogue=EPI_TMA_STORE)
    assert cfg.k_unroll == expected
    assert bool(caught) == (expected > 1), [str(w.message) for w in caught]


def test_a_rolled_serial_loop_costs_more_than_the_same_tile_unrolled():
    """Session 16: 128x160 (its serial loop left rolled) lost 11-14% to 128x192 unrolled by 2 at
    M=4097 and 8192x2112x7168, where the model without the rolled-loop loss picked it."""
    rolled = h.sized(Fp8GemmConfig(128, 160, 1, 2, num_sms=132), 4096, 7168)
    assert rolled.k_unroll == 1 and not rolled.pipelined
    unrolled = dataclasses.replace(rolled, unroll=2)
    ratio = h.estimate(rolled, 4096, 4096, 7168).cycles / h.estimate(unrolled, 4096, 4096, 7168).cycles
    assert ratio == pytest.approx(h.ROLLED_SERIAL_LOSS, rel=0.05) and ratio > 1.05
    for m, n, k in ((4097, 4096, 7168), (8192, 2112, 7168)):
        pick = h.choose_config(m, n, k, False, 0, 132)
        assert pick.pipelined or pick.k_unroll > 1, pick.kernel_name()


def test_decode_splits_stay_small_where_thin_tiles_fill_the_machine():
    """Session 16's sweep at M <= 128: splits of 3-4 with wide tiles lost to splits of 2 with thin
    ones (128x2112x7168: 64x112 split 3 ran 12.5 us, 64x64 split 2 11.6 us)."""
    for m, n, k in ((128, 2112, 7168), (64, 4096, 7168), (128, 4096, 7168)):
        pick = h.choose_config(m, n, k, False, 0, 132)
        assert pick.split_k <= 2 and pick.block_n <= 128, pick.kernel_name()


def test_decode_tiles_at_short_k_avoid_selecting_scales_per_column():
    """Session 17's A/B (H200): at K = 576, 64x64 and 64x128 ran 6-7% faster than 64x56 and 64x112,
    whose promotion selects a B scale per column group; the per-tile cost of that selection decides
    the order where a tile is only a few k-blocks deep."""
    for m, n, k in ((64, 7168, 576), (128, 7168, 576), (64, 7168, 2048)):
        pick = h.choose_config(m, n, k, False, 0, 132)
        assert not pick.selects_scales_per_column(), pick.kernel_name()
    selecting = h.sized(Fp8GemmConfig(64, 56, 1, 1, pipelined=True, num_sms=132), 7168, 576)
    plain = h.sized(Fp8GemmConfig(64, 64, 1, 1, pipelined=True, num_sms=132), 7168, 576)
    assert selecting.selects_scales_per_column() and not plain.selects_scales_per_column()
    assert h.estimate(selecting, 64, 7168, 576).cycles > h.estimate(plain, 64, 7168, 576).cycles


@pytest.mark.parametrize("m,n,config,expected", [
    (1, 2112, Fp8GemmConfig(64, 56, 8, 1), (8, 40)),            # 2112 = 37 * 56 + 40
    (65, 4096, Fp8GemmConfig(64, 64, 8, 1), (8, 0)),            # N divides: no B tail
    (4096, 7168, Fp8GemmConfig(256, 128, 3, 2), (0, 0)),        # both divide
    (100, 100, Fp8GemmConfig(128, 112, 4, 2), (104, 104)),
    (4097, 1000, Fp8GemmConfig(128, 192, 4, 2), (8, 40)),
    (60, 1000, Fp8GemmConfig(64, 128, 4, 1), (0, 104)),         # 64 rows would be the whole box anyway
    (1, 1000, Fp8GemmConfig(128, 128, 4, 2, PAIR_N), (0, 104)),  # A halves are multicast: whole boxes
    (1, 1000, Fp8GemmConfig(128, 128, 4, 2, PAIR_M), (8, 0)),    # B halves are multicast: whole boxes
    (300, 1000, Fp8GemmConfig(128, 128, 4, 2, kind=KIND_MASKED), (48, 0)),      # B rows past N: next expert
    (300, 1000, Fp8GemmConfig(128, 128, 4, 2, kind=KIND_CONTIGUOUS), (0, 0)),
])
def test_tail_boxes_load_only_rows_that_exist(m, n, config, expected):
    assert kernel.tail_box_rows(config, m, n) == expected


def test_tail_boxes_are_a_compiled_variant_only_where_needed():
    """Choosing the maps per tile cost 2% at 4096x32768x512 (session 17), so only problems with a
    tail compile it: other kernels keep their names (and code)."""
    base = Fp8GemmConfig(256, 128, 3, 2)
    assert kernel.with_tail_boxes(base, 4096, 32768) is base
    assert not base.kernel_name().endswith("_tb")
    tailed = kernel.with_tail_boxes(base, 4097, 32768)
    assert tailed.tail_boxes and tailed.kernel_name() == base.kernel_name() + "_tb"
    assert "true>" in tailed.kernel_expr() and "false>" in base.kernel_expr()
    assert kernel.with_tail_boxes(tailed, 4096, 32768) == base


def test_resolve_config_builds_only_the_variant_the_plan_launches(monkeypatch):
    """A cold call with a tail compiles the _tb kernel once, not the plain one first for the spill
    check (session 17)."""
    built = []
    monkeypatch.setattr(kernel.Fp8GemmConfig, "build", lambda c: built.append(c.kernel_name()) or _fake_kernel(c, False))
    ranked = lambda: h.ranked_configs(1, 2112, 7168, False, EPI_TMA_STORE, 132)  # noqa: E731
    cfg = calls.resolve_config(ranked, None, 132, "test", mn=(1, 2112), out_f32=False, epilogue=EPI_TMA_STORE)
    assert cfg.tail_boxes and set(built) == {cfg.kernel_name()}
    built.clear()
    forced = calls.resolve_config(ranked, Fp8GemmConfig(64, 64, 8, 1, pipelined=True), 132, "test", mn=(1, 2112),
                                  out_f32=False, epilogue=EPI_TMA_STORE)
    assert forced.tail_boxes and forced == kernel.with_tail_boxes(forced, 1, 2112)
    assert all(name.endswith("_tb") for name in built)


def test_plan_encodes_tail_maps_with_boxes_of_the_rows_that_exist(monkeypatch):
    """M = 1 on 64x56 tiles at N = 2112: the main maps keep whole boxes, the A/sfa tail maps hold 8
    rows and the B tail map 40 (2112 = 37 * 56 + 40); no tail, no tail maps."""
    from unittest import mock

    from deep_gemm.jit import runtime
    encoded = []
    monkeypatch.setattr(runtime, "tensor_map", lambda *a, **kw: encoded.append(a) or bytes(128))
    monkeypatch.setattr(runtime, "get_kernel", mock.MagicMock())
    monkeypatch.setattr(runtime, "Launcher", mock.MagicMock(**{"return_value.max_active_clusters.return_value": 39}))
    cfg = Fp8GemmConfig(64, 56, 8, 1, pipelined=True, split_k=3)
    plan = kernel.Fp8GemmPlan(cfg, 1, 2112, 7168, 0)
    assert plan.config.tail_boxes
    p = plan.make_params(1 << 20, 7168, 2 << 20, 7168, 3 << 20, 4, 4 << 20, 56, 5 << 20, 2112)
    boxes = [(dtype, box) for dtype, _, _, _, box, *_ in encoded]
    assert boxes == [("e4m3", (128, 64)), ("f32", (64, 1)), ("e4m3", (128, 56)),
                     ("e4m3", (128, 8)), ("f32", (8, 1)), ("e4m3", (128, 40))] + boxes[6:]
    assert (p.a_tail_rows, p.b_tail_rows) == (8, 40)
    encoded.clear()
    plan = kernel.Fp8GemmPlan(cfg, 64, 2128, 7168, 0)   # 2128 = 38 * 56
    p = plan.make_params(1 << 20, 7168, 2 << 20, 7168, 3 << 20, 64, 4 << 20, 56, 5 << 20, 2128)
    assert not plan.config.tail_boxes and (p.a_tail_rows, p.b_tail_rows) == (0, 0)
    assert [a[4] for a in encoded[:3]] == [(128, 64), (64, 1), (128, 56)]   # then D's, no tails
    assert not any(a[4] in ((128, 8), (8, 1)) for a in encoded)
