"""tools/deepgemm_peer.py on the CPU: the configs it builds for DeepGEMM's kernel fit its shared
memory, and the instantiation names every template argument of the kernel's signature."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import deepgemm_peer as dp  # noqa: E402


@pytest.mark.parametrize("shape", dp.SHAPES)
def test_candidates_fit_shared_memory_with_the_most_stages(shape):
    m, n, k = shape
    cands = dp.candidates(m, n)
    assert dp.DeepGemmConfig(256, 128) in cands
    for cfg in cands:
        stages = cfg.stages(k)
        assert cfg.smem_bytes(k, stages) <= dp.SMEM_LIMIT < cfg.smem_bytes(k, stages + 1)
        assert cfg.num_sms(m, n) % cfg.multicast == 0 and cfg.num_sms(m, n) <= dp.NUM_SMS


def test_source_and_labels():
    cfg = dp.DeepGemmConfig(256, 128, multicast=2, multicast_on_a=True)
    src = cfg.source(4096, 7168, 2048)
    args = src.split(f"{dp.KERNEL}<")[1].split(">);")[0].split(", ")
    # kMajorSFB, SHAPE_M/N/K, groups, BLOCK_M/N/K, swizzles A/B/D, stages, last stages, TMA and
    # math threads, multicast count and side, SMs, GEMM type, epilogue, overlap
    assert len(args) == 21 and args[1:4] == ["0", "7168", "2048"] and args[16] == "true"
    meta = dict(block_m=256, block_n=128, multicast=2, multicast_on_a=True)
    assert dp.label(meta) == "256x128 mc2A" and dp.label(dict(meta, multicast=1)) == "256x128"
    assert dp.DeepGemmConfig(128, 112).swizzle_d == 32 and dp.DeepGemmConfig(128, 160).swizzle_d == 64
