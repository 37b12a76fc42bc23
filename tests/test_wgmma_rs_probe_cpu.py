"""tools/wgmma_rs_probe.py compiles on the CPU: every layout and kind of writes builds for sm_90a
without local memory, with the wgmmas it is meant to time, and fits shared memory."""
import sys
from pathlib import Path

import pytest

from deep_gemm.jit import runtime
from deep_gemm.kernels.fp8_gemm import MAX_SMEM

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from test_fp8_gemm_compile import CUOBJDUMP, sass  # noqa: E402
import wgmma_rs_probe as probe  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def own_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DG_JIT_CACHE_DIR", str(tmp_path_factory.mktemp("dg_cache")))
        yield


# (layout, writes, unroll, suspend hint, ring slots): every layout and kind of writes at least once
VARIANTS = [("ss_m", 1, 4, 0, 3), ("rs_n", 0, 1, 0, 3), ("ss_n", 2, 1, 0, 3), ("rs_once", 5, 1, 0, 6),
            ("ss_m", 3, 4, 10_000_000, 4), ("ss_m", 4, 4, 0, 3), ("ss_m", 1, 4, 0, 4)]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "_".join(map(str, v)))
def test_probe_variant_builds_without_local_memory(variant, tmp_path):
    layout, writes, unroll, hint, slots = variant
    kernel = runtime.build(f"wgmma_rs_probe_test_{'_'.join(map(str, variant))}", probe.SOURCE,
                           probe.kernel_expr(layout, writes, unroll, hint, slots))
    res = kernel.resources
    assert res["spill_stores"] == 0 and res["spill_loads"] == 0 and res["stack_frame"] == 0, res
    assert probe.smem_bytes(writes, slots) <= MAX_SMEM
    if CUOBJDUMP is None:
        pytest.skip("cuobjdump not installed: resources checked, SASS not")
    text = sass(kernel.cubin, tmp_path)
    # two slices of four m64n128k32 wgmmas per k-block, in each unrolled copy of the loop body and
    # in the remainder loop after an unrolled one
    assert text.count("QGMMA.64x128x32") == 8 * unroll + (8 if unroll > 1 else 0), text.count("QGMMA.64x128x32")
    # only the register-A layouts load fragments with ldmatrix
    assert ("LDSM" in text) == (layout in ("rs_n", "rs_once"))
    assert ("NANOSLEEP" in text) == (hint != 0)
