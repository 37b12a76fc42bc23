"""tools/fit_model.py: kernel names parse back to their configs, and a shape's regret is how much
slower the model's pick ran than the fastest measured config."""
import json
import sys
from pathlib import Path

import pytest

from deep_gemm.heuristics import fp8_gemm as heur
from deep_gemm.kernels.fp8_gemm import (EPI_DIRECT_ACCUMULATE, KIND_CONTIGUOUS, KIND_MASKED, PAIR_M, PAIR_N,
                                        Fp8GemmConfig)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import fit_model  # noqa: E402


@pytest.mark.parametrize("cfg", [
    Fp8GemmConfig(256, 128, 3, 2),
    Fp8GemmConfig(128, 128, 5, 2, PAIR_M, pipelined=True),
    Fp8GemmConfig(128, 144, 4, 2, PAIR_N, True, EPI_DIRECT_ACCUMULATE),
    Fp8GemmConfig(64, 48, 8, 1, pipelined=True, kind=KIND_MASKED, split_k=7),
    Fp8GemmConfig(128, 192, 4, 2, kind=KIND_CONTIGUOUS),
    Fp8GemmConfig(64, 56, 8, 1, pipelined=True, k_tail=2),
    Fp8GemmConfig(256, 128, 3, 2, unroll=2, k_tail=3),
], ids=lambda c: c.kernel_name())
def test_parse_round_trips(cfg):
    assert fit_model.parse(cfg.kernel_name(), cfg.raster_group) == cfg


def test_parse_rejects_other_names():
    with pytest.raises(ValueError):
        fit_model.parse("sm90_xmma_gemm_e4m3", 8)


def test_regret_is_the_picks_slowdown(tmp_path):
    shape = (4096, 4096, 7168)
    ranked = heur.ranked_configs(*shape, False, 0, 132)
    pick, other = ranked[0], ranked[5]
    rows = [{"shape": list(shape), "config": pick.kernel_name(), "raster": pick.raster_group, "us": 100.0},
            {"shape": list(shape), "config": other.kernel_name(), "raster": other.raster_group, "us": 80.0},
            {"shape": list(shape), "config": other.kernel_name(), "raster": other.raster_group, "us": 90.0},
            {"shape": list(shape), "config": "broken", "error": "raised"}]
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"rows": rows}))
    by_shape = fit_model.load([path])
    key = shape + (0, 1)
    assert by_shape[key][other] == 80.0   # a config measured twice keeps its best time
    got_pick, regret = fit_model.regrets(by_shape)[key]
    assert got_pick == pick
    assert regret == pytest.approx(100.0 / 80.0 - 1)


def test_names_without_unroll_are_rolled_loops():
    # Sweeps before session 8 measured rolled main loops, and their names carry no _u suffix.
    old = fit_model.parse("fp8_gemm_m256_n128_s3_wg2_p0_bf16_e0", 16)
    assert old.k_unroll == 1 and old != Fp8GemmConfig(256, 128, 3, 2, raster_group=16)
    assert fit_model.tile(Fp8GemmConfig(256, 128, 3, 2).kernel_name()) == old.kernel_name()


def test_tile_drops_the_unroll_before_a_short_last_block():
    cfg = Fp8GemmConfig(256, 128, 3, 2, unroll=2, k_tail=3)
    assert cfg.kernel_name().endswith("_u2_t3")
    assert fit_model.tile(cfg.kernel_name()) == cfg.kernel_name().replace("_u2", "")
