"""NVRTC compilation of the FP8 GEMM kernel family for sm_90a on the CPU, with resource and SASS checks
(DESIGN.md sections 3 and 8: no spills, no local memory, QGMMA present), plus the config validity rules.
"""

import dataclasses
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from deep_gemm.heuristics.fp8_gemm import first_without_spills, ranked_configs, stages_that_fit
from deep_gemm.jit import compiler
from deep_gemm.kernels.fp8_gemm import (EPI_DIRECT, EPI_DIRECT_ACCUMULATE, EPI_TMA_REDUCE, EPI_TMA_STORE, MAX_SMEM,
                                        KIND_CONTIGUOUS, KIND_DENSE, KIND_MASKED, PAIR_M, PAIR_N, PAIR_NONE, Fp8GemmConfig,
                                        k_tail_steps, valid_block_n)

K_REF = 7168   # stage counts below are what fits shared memory at this K, i.e. what the heuristic ships


@pytest.fixture(scope="module", autouse=True)
def shared_cache(tmp_path_factory):
    # One cache for the module, so the SASS tests reuse the cubins the resource tests compiled.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DG_JIT_CACHE_DIR", str(tmp_path_factory.mktemp("dg_cache")))
        for var in ("DG_JIT_USE_NVCC", "DG_JIT_DUMP_DIR", "DG_JIT_LINEINFO"):
            mp.delenv(var, raising=False)
        yield


def shipped(block_m, block_n, num_math_wg, pair=PAIR_NONE, out_f32=False, epilogue=EPI_TMA_STORE, pipelined=False,
            split_k=1, kind=KIND_DENSE):
    cfg = Fp8GemmConfig(block_m, block_n, 1, num_math_wg, pair, out_f32, epilogue, pipelined, kind, split_k=split_k)
    return dataclasses.replace(cfg, stages=stages_that_fit(cfg, K_REF))


CONFIGS = [
    # every block_m, with the accumulator-budget edges (1 x 192 and 2 x 96 floats per thread)
    shipped(64, 144, 1),
    shipped(64, 192, 1),
    shipped(64, 16, 1, PAIR_N),                  # what decode shapes get
    shipped(128, 112, 2, PAIR_M),
    shipped(128, 136, 2, PAIR_N),
    shipped(128, 160, 2, PAIR_M),
    shipped(128, 192, 2),
    shipped(256, 88, 2, PAIR_N),                 # block_n not a multiple of 16
    shipped(256, 96, 2, PAIR_M),
    shipped(256, 128, 2),                        # two m64 slices sharing a temporary: 3 x 64 floats
    shipped(256, 128, 2, PAIR_N),
    # FP32 output with each epilogue
    shipped(128, 144, 2, PAIR_NONE, True, EPI_TMA_STORE),
    shipped(128, 144, 2, PAIR_M, True, EPI_TMA_REDUCE),
    shipped(64, 160, 1, PAIR_N, True, EPI_DIRECT),
    shipped(128, 136, 2, PAIR_NONE, True, EPI_DIRECT_ACCUMULATE),
    # BF16 through the direct (unaligned) epilogue
    shipped(64, 136, 1, PAIR_NONE, False, EPI_DIRECT),
    # Pipelined promotion (two temporaries). Not every pipelined config that check() accepts is
    # spill-free (the run-time pick skips those, see test_heuristics); these are ones it ships.
    shipped(64, 128, 1, PAIR_N, pipelined=True),
    shipped(64, 64, 1, PAIR_M, True, EPI_TMA_REDUCE, pipelined=True),
    shipped(128, 64, 2, PAIR_M, pipelined=True),
    shipped(256, 32, 2, PAIR_NONE, True, EPI_DIRECT_ACCUMULATE, pipelined=True),
    # Stage counts a user can force: power-of-two rings once spilled 140+ bytes with this kernel.
    Fp8GemmConfig(128, 112, 2, 2),
    Fp8GemmConfig(128, 112, 4, 2),
    Fp8GemmConfig(128, 64, 4, 2, pipelined=True),
    # Split-K clusters (decode): the reduction epilogue with each output kind, 2 to 8 CTAs, masked too
    shipped(64, 128, 1, pipelined=True, split_k=2),
    shipped(64, 64, 1, pipelined=True, split_k=8),
    shipped(128, 112, 2, pipelined=True, split_k=3),
    shipped(64, 192, 1, split_k=5),
    shipped(128, 144, 2, PAIR_NONE, True, EPI_TMA_REDUCE, split_k=4),
    # (64x120 here spills 24-32 bytes under NVRTC 13.0, which the README's install resolves with
    # torch 2.14; the run-time pick skips it there. 64x112 is spill-free under 13.0 and 13.5.)
    shipped(64, 112, 1, PAIR_NONE, True, EPI_DIRECT_ACCUMULATE, pipelined=True, split_k=6),
    shipped(64, 128, 1, pipelined=True, split_k=4, kind=KIND_MASKED),
    # Contiguous 256-row tiles, which a second pass covers when their halves have two experts
    shipped(256, 128, 2, kind=KIND_CONTIGUOUS),
    shipped(256, 96, 2, PAIR_N, kind=KIND_CONTIGUOUS),
]


def test_config_set_covers_the_axes():
    assert {c.block_m for c in CONFIGS} == {64, 128, 256}
    assert {c.pair_axis for c in CONFIGS} == {PAIR_NONE, PAIR_M, PAIR_N}
    assert {c.split_k for c in CONFIGS} >= {1, 2, 8}
    assert {c.epilogue for c in CONFIGS if c.out_f32} == {0, 1, 2, 3}
    assert {112, 136, 144, 160} <= {c.block_n for c in CONFIGS}
    assert {c.pipelined for c in CONFIGS} == {True, False}


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.kernel_name())
def test_compiles_without_spills(cfg):
    cfg.check()
    assert cfg.stages >= 2
    assert cfg.smem_bytes(K_REF) <= MAX_SMEM
    k = cfg.build()   # the generated source static_asserts the host's parameter size and smem model
    assert compiler.kernel_symbols(k.cubin) == [k.symbol]
    assert "fp8_gemm_kernel" in k.symbol
    r = k.resources
    assert isinstance(r["registers"], int) and r["registers"] <= 255
    assert (r["spill_stores"], r["spill_loads"], r["stack_frame"]) == (0, 0, 0), f"{cfg.kernel_name()}: {r}"


@pytest.mark.parametrize("m, n, k, out_f32, epilogue", [
    (64, 2112, 7168, False, EPI_TMA_STORE),            # decode
    (4096, 7168, 2048, False, EPI_TMA_STORE),          # prefill
    (4096, 7168, 2048, True, EPI_TMA_REDUCE),          # D += A B^T into FP32
    (7, 136, 7232, True, EPI_DIRECT_ACCUMULATE),       # odd sizes, unaligned output
])
def test_run_time_pick_has_no_spills(m, n, k, out_f32, epilogue):
    # What fp8_gemm_nt and `precompile` run: the best-ranked config that ptxas compiles cleanly.
    ranked = ranked_configs(m, n, k, out_f32, epilogue, 132)
    pick = first_without_spills(ranked, lambda c: c.build())
    r = pick.build().resources
    assert (r["spill_stores"], r["spill_loads"], r["stack_frame"]) == (0, 0, 0), f"{pick.kernel_name()}: {r}"


# --------------------------------------------------------------------------------------------- SASS

def _cuda_bin_dirs():
    try:
        import nvidia
    except ImportError:
        return []
    dirs = []
    for root in nvidia.__path__:
        dirs += sorted(Path(root).glob("cu*/bin")) + sorted(Path(root).glob("cuda_cuobjdump/bin"))
    return dirs


def _find_cuobjdump():
    for d in _cuda_bin_dirs():
        if (d / "cuobjdump").is_file():
            return d / "cuobjdump"
    found = shutil.which("cuobjdump")
    return Path(found) if found else None


CUOBJDUMP = _find_cuobjdump()
# SASS checks need cuobjdump (and the nvdisasm it runs); CI installs both from PyPI.
needs_cuobjdump = pytest.mark.skipif(CUOBJDUMP is None, reason="cuobjdump not installed (pip install "
                                     "nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)")


def sass(cubin: bytes, tmp_path: Path) -> str:
    path = tmp_path / "kernel.cubin"
    path.write_bytes(cubin)
    # cuobjdump -sass runs nvdisasm, which ships in the same bin folder as the wheels install it.
    env = dict(os.environ, PATH=os.pathsep.join([str(CUOBJDUMP.parent), os.environ.get("PATH", "")]))
    proc = subprocess.run([str(CUOBJDUMP), "-sass", str(path)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@needs_cuobjdump
@pytest.mark.parametrize("cfg", [shipped(64, 144, 1), shipped(128, 144, 2, PAIR_M, True, EPI_TMA_REDUCE),
                                 shipped(128, 64, 2, PAIR_M, pipelined=True),
                                 shipped(64, 128, 1, pipelined=True, split_k=4)],
                         ids=lambda c: c.kernel_name())
def test_sass_uses_fp8_wgmma_and_no_local_memory(cfg, tmp_path):
    text = sass(cfg.build().cubin, tmp_path)
    assert "sm_90a" in text
    assert f"QGMMA.64x{cfg.block_n}x32.F32.E4M3.E4M3" in text, "expected FP8 wgmma of the tile's width"
    local = sorted(set(re.findall(r"\b(?:LDL|STL)(?:\.\w+)*\b", text)))
    assert not local, f"local memory traffic in {cfg.kernel_name()}: {local}"
    assert "USETMAXREG.DEALLOC" in text and "USETMAXREG.TRY_ALLOC" in text, "setmaxnreg missing"


@needs_cuobjdump
def test_main_loop_has_no_per_tile_zeroing_or_special_register_reads(tmp_path):
    # Session 8 (benchmarks/NOTES.md, changes 25-26): a volatile cvta put two S2UR reads on every
    # k-block's path to its wgmma, and ptxas zeroed the 128 accumulators twice per tile (CS2R).
    # Between the first and the last wgmma of the 256x128 kernel there must be neither.
    cfg = shipped(256, 128, 2)
    assert cfg.k_unroll == 4
    lines = sass(cfg.build().cubin, tmp_path).splitlines()
    mma = [i for i, line in enumerate(lines) if "QGMMA" in line]
    assert len(mma) == 48, "first k-block peeled, then 4 unrolled and a remainder: 6 x 8 wgmmas"
    inside = [line.strip() for line in lines[mma[0]:mma[-1]] if re.search(r"\b(S2UR|CS2R)\b", line)]
    assert not inside, inside


@needs_cuobjdump
@pytest.mark.parametrize("cfg", [shipped(256, 128, 2, epilogue=EPI_DIRECT), shipped(64, 136, 1, epilogue=EPI_DIRECT),
                                 shipped(128, 136, 2, PAIR_NONE, True, EPI_DIRECT_ACCUMULATE)],
                         ids=lambda c: c.kernel_name())
def test_direct_store_epilogue_has_a_vector_path(cfg, tmp_path):
    # Session 11 (benchmarks/NOTES.md, change 32): 8-byte stores where D's rows allow, 1.7-2.5x
    # faster than one store per element; BF16 gets there through one lane swap per two column groups.
    text = sass(cfg.build().cubin, tmp_path)
    assert re.search(r"\bSTG\.E\.64\b", text), "no 8-byte global stores"
    if not cfg.out_f32:
        assert "SHFL.BFLY" in text, "BF16 lanes do not swap column pairs"


@needs_cuobjdump
@pytest.mark.parametrize("cfg", [shipped(256, 128, 2), shipped(128, 144, 2, PAIR_M, True, EPI_TMA_REDUCE),
                                 shipped(128, 128, 2, kind=KIND_MASKED)], ids=lambda c: c.kernel_name())
def test_output_stores_carry_an_l2_policy(cfg, tmp_path):
    # Change 33: the output's TMA stores are evict-first, so a large output does not push the
    # operand tiles out of L2. The policy shows as a descriptor operand of each store.
    stores = [line for line in sass(cfg.build().cubin, tmp_path).splitlines() if re.search(r"\bUTMA(STG|REDG)\b", line)]
    assert stores, "no TMA stores"
    assert all("desc[" in line for line in stores), stores


@needs_cuobjdump
@pytest.mark.parametrize("cfg", [shipped(256, 128, 2), shipped(128, 144, 2, PAIR_M, True, EPI_TMA_REDUCE),
                                 shipped(128, 128, 2, PAIR_N, kind=KIND_MASKED)], ids=lambda c: c.kernel_name())
def test_tma_loads_take_uniform_operands(cfg, tmp_path):
    # Session 12: issued by one thread, each TMA load sat in a loop over the lanes' distinct operands
    # (R2UR, ELECT, BRA.U.ANY: ~30 instructions per k-block on a math sub-partition); the whole
    # producer warp now computes them in uniform registers (+0.6-2.2% at M=4096).
    instructions = [line for line in sass(cfg.build().cubin, tmp_path).splitlines() if re.search(r"/\*[0-9a-f]{4}\*/", line)]
    loads = [i for i, line in enumerate(instructions) if re.search(r"\bUTMALDG\b", line)]
    assert loads, "no TMA loads"
    looped = [instructions[i].strip() for i in loads if any("BRA.U.ANY" in line for line in instructions[i:i + 5])]
    assert not looped, looped


@needs_cuobjdump
@pytest.mark.parametrize("cfg", [shipped(256, 128, 2), shipped(128, 192, 2), shipped(128, 144, 2, PAIR_M, True, EPI_TMA_REDUCE),
                                 shipped(128, 128, 2, PAIR_N, kind=KIND_MASKED), shipped(128, 64, 2, PAIR_M, pipelined=True),
                                 shipped(256, 128, 2, kind=KIND_CONTIGUOUS)], ids=lambda c: c.kernel_name())
def test_barrier_waits_take_uniform_addresses(cfg, tmp_path):
    # Session 14 (tools/wgmma_rs_probe.py): the same ring of full/free barriers cost 12% more cycles
    # per k-block when ptxas addressed its waits from vector registers ([R+URZ]) than from uniform
    # ones ([UR]), with otherwise the same instructions. Every wait of these kernels is uniform.
    # (Serial split-K kernels' are not, as their slice bounds come from the cluster rank; making
    # them uniform measured -3%..+3% on their shapes, so it was not kept. NOTES, session 14.)
    waits = [line.split("*/")[1].strip() for line in sass(cfg.build().cubin, tmp_path).splitlines()
             if "SYNCS.PHASECHK" in line]
    assert waits, "no barrier waits"
    vector = [w for w in waits if not re.search(r"\[UR\d+", w)]
    assert not vector, vector


@pytest.mark.skipif(shutil.which("nvcc") is None and not os.environ.get("DG_JIT_NVCC_PATH"), reason="no nvcc")
@pytest.mark.parametrize("cfg", [shipped(256, 128, 2), shipped(128, 64, 2, PAIR_M, pipelined=True)],
                         ids=lambda c: c.kernel_name())
def test_nvcc_path_builds_the_same_kernel(cfg, monkeypatch, tmp_path):
    # DG_JIT_USE_NVCC is documented; it once failed on every serial kernel (nvcc, unlike NVRTC's
    # -default-device, rejects constexpr host helpers called from device code).
    rtc = cfg.build()
    monkeypatch.setenv("DG_JIT_USE_NVCC", "1")
    monkeypatch.setenv("DG_JIT_CACHE_DIR", str(tmp_path))
    compiler.compiler_identity.cache_clear()
    try:
        built = cfg.build()
    finally:
        compiler.compiler_identity.cache_clear()
    assert built.compiler.startswith("nvcc") and rtc.compiler.startswith("nvrtc")
    assert built.symbol == rtc.symbol
    assert built.resources["spill_stores"] == 0 and built.resources["stack_frame"] == 0, built.resources
    assert built.resources["registers"] == rtc.resources["registers"]


# --------------------------------------------------------------------------------------------- validity rules

GOOD = Fp8GemmConfig(128, 128, 4, 2)


@pytest.mark.parametrize("changes, fragment", [
    (dict(block_m=96), "block_m=96"),
    (dict(block_n=152), "block_n=152"),
    (dict(block_n=200), "block_n=200"),
    (dict(block_n=260), "block_n=260"),
    (dict(block_n=12), "block_n=12"),
    (dict(block_n=24, pair_axis=PAIR_M), "multiple of 16"),
    (dict(epilogue=EPI_TMA_REDUCE), "FP32 output"),
    (dict(epilogue=EPI_DIRECT_ACCUMULATE), "FP32 output"),
    (dict(num_sms=131, pair_axis=PAIR_M), "num_sms=131"),
    (dict(num_sms=131, pair_axis=PAIR_N), "num_sms=131"),
    (dict(num_sms=0), "num_sms=0"),
    (dict(stages=0), "stages"),
    (dict(block_m=64, num_math_wg=2), "num_math_wg=2"),
    (dict(num_math_wg=3), "num_math_wg=3"),
    (dict(block_n=256), "accumulator registers"),                        # 256 floats per thread
    (dict(block_m=256, block_n=136), "accumulator registers"),           # 3 x 136 / 2 (two slices + one temporary)
    (dict(block_n=136, pipelined=True), "accumulator registers"),        # 3 x 136 / 2
    (dict(pipelined=True, stages=2, block_n=64), "stages must be >= 3"),
    (dict(split_k=9), "split_k=9"),
    (dict(k_tail=4), "k_tail=4"),
    (dict(split_k=0), "split_k=0"),
    (dict(split_k=2, pair_axis=PAIR_M), "without multicast pairs"),
    (dict(split_k=2, kind=KIND_CONTIGUOUS), "without multicast pairs"),
    (dict(block_m=256, block_n=96, kind=KIND_MASKED), "block_m dividing 128"),
    (dict(block_m=256, block_n=96, pair_axis=PAIR_M, kind=KIND_CONTIGUOUS), "no M pairing"),
    (dict(split_k=8, num_sms=4), "num_sms=4"),
])
def test_check_rejects_invalid_configs(changes, fragment):
    cfg = dataclasses.replace(GOOD, **changes)
    with pytest.raises(ValueError, match=re.escape(fragment)):
        cfg.check()
    with pytest.raises(ValueError):
        cfg.build()     # build validates before compiling


@pytest.mark.parametrize("cfg", [
    GOOD,
    Fp8GemmConfig(64, 8, 3, 1),
    Fp8GemmConfig(256, 96, 3, 2, PAIR_M),
    Fp8GemmConfig(128, 24, 3, 2, PAIR_N),
    Fp8GemmConfig(128, 128, 3, 2, PAIR_NONE, True, EPI_TMA_REDUCE),
    Fp8GemmConfig(128, 128, 3, 2, PAIR_NONE, num_sms=131),
    Fp8GemmConfig(128, 128, 3, 2, PAIR_M, num_sms=78),
    Fp8GemmConfig(128, 192, 3, 2),
    Fp8GemmConfig(256, 96, 3, 2),
    Fp8GemmConfig(64, 128, 3, 1, pipelined=True),
    Fp8GemmConfig(64, 128, 3, 1, pipelined=True, split_k=7, num_sms=131),   # clusters need not divide the SMs
    Fp8GemmConfig(128, 128, 3, 2, kind=KIND_MASKED, split_k=2),
    Fp8GemmConfig(256, 128, 3, 2, kind=KIND_CONTIGUOUS),
])
def test_check_accepts_valid_configs(cfg):
    cfg.check()


def _touches_at_most_two_scale_blocks(block_n: int, max_n: int = 1 << 16) -> bool:
    for start in range(0, max_n, block_n):
        first, last = start // 128, (start + block_n - 1) // 128
        if last - first + 1 > 2:
            return False
    return True


def test_valid_block_n_matches_brute_force():
    for block_n in range(0, 400):
        expected = (block_n % 8 == 0 and 8 <= block_n <= 256 and _touches_at_most_two_scale_blocks(block_n))
        assert valid_block_n(block_n) == expected, block_n
    # The dense set the design promises is really there.
    assert all(valid_block_n(n) for n in (112, 136, 144, 160, 192, 256))


def test_plan_refuses_k_zero():
    # Serial kernels run a tile's first k-block unconditionally: K = 0 must never reach a launch
    # (the API writes zeros instead).
    from deep_gemm.kernels.fp8_gemm import Fp8GemmPlan
    with pytest.raises(ValueError, match="K=0"):
        Fp8GemmPlan(Fp8GemmConfig(256, 128, 3, 2), 256, 128, 0, device=0)


@pytest.mark.parametrize("k,steps", [(64, 0), (128, 0), (144, 1), (160, 1), (176, 2), (576, 2), (592, 3), (608, 3),
                                     (624, 0), (640, 0), (7168, 0), (7232, 2)])
def test_k_tail_steps(k, steps):
    # the 32-wide steps that hold data in a short last k-block; a full or only k-block runs all four
    assert k_tail_steps(k) == steps


@needs_cuobjdump
@pytest.mark.parametrize("k_tail", [1, 2, 3])
def test_short_last_k_block_runs_only_its_steps(k_tail, tmp_path):
    # 256x128 issues 8 wgmmas per k-block (two m64 slices x four k32 steps) in 48 QGMMAs; the
    # short k-block adds its own two slices of k_tail steps, and the full-K kernel is unchanged.
    cfg = dataclasses.replace(shipped(256, 128, 2), k_tail=k_tail)
    k = cfg.build()
    assert cfg.kernel_name().endswith(f"_t{k_tail}") and cfg.kernel_name() != shipped(256, 128, 2).kernel_name()
    assert (k.resources["spill_stores"], k.resources["spill_loads"], k.resources["stack_frame"]) == (0, 0, 0)
    assert sass(k.cubin, tmp_path).count("QGMMA.64x128x32") == 48 + 2 * k_tail


def test_plan_refuses_a_k_tail_that_does_not_match_k():
    # A kernel compiled for a shorter last k-block would drop the data of this K's last columns.
    from deep_gemm.kernels.fp8_gemm import Fp8GemmPlan
    with pytest.raises(ValueError, match="k_tail=0"):
        Fp8GemmPlan(Fp8GemmConfig(256, 128, 3, 2, k_tail=2), 256, 128, 512, device=0)
    with pytest.raises(ValueError, match="k_tail=3"):
        Fp8GemmPlan(Fp8GemmConfig(256, 128, 3, 2, k_tail=2), 256, 128, 592, device=0)
