"""tools/epilogue_probe.py's variant names: the forced config they stand for (no GPU needed)."""
import sys
from pathlib import Path

from deep_gemm.heuristics import fp8_gemm as heur
from deep_gemm.kernels.fp8_gemm import EPI_DIRECT, EPI_TMA_STORE, PAIR_M, PAIR_N, PAIR_NONE

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import epilogue_probe  # noqa: E402


def test_pick_forces_nothing():
    assert epilogue_probe.parse("pick", 7168, 16384, 132) == ("pick", None)


def test_plain_variant_gets_the_heuristics_raster_group():
    kind, cfg = epilogue_probe.parse("direct:256x128x4", 7168, 16384, 132)
    assert kind == "direct" and cfg.epilogue == EPI_DIRECT and cfg.pair_axis == PAIR_NONE
    assert (cfg.block_m, cfg.block_n, cfg.stages, cfg.num_math_wg) == (256, 128, 4, 2)
    assert cfg.raster_group == heur.raster_group(132, 256, 128, 56, 16384)


def test_pair_and_raster_suffixes():
    _, pn = epilogue_probe.parse("tma:256x128x3:pn", 7168, 576, 132)
    assert pn.pair_axis == PAIR_N and pn.epilogue == EPI_TMA_STORE
    # a pair along N covers two n-blocks per unit: 28 units for N = 7168
    assert pn.raster_group == heur.raster_group(132, 256, 128, 28, 576)
    _, pm = epilogue_probe.parse("tma:128x64x5:pm:r3", 4096, 7168, 132)
    assert pm.pair_axis == PAIR_M and pm.raster_group == 3 and pm.num_math_wg == 2
