"""The cubin rewrite of tools/variant_probe.py, on a kernel compiled here: it may touch only the
yield and reuse bits of promotion FFMAs, and it must touch them. And the source patches of
variant_probe.py, phase_probe.py and stall_probe.py still find their anchors and compile."""
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from deep_gemm.kernels.fp8_gemm import PAIR_M, Fp8GemmConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import phase_probe  # noqa: E402
import stall_probe  # noqa: E402
from test_fp8_gemm_compile import needs_cuobjdump, sass  # noqa: E402
import variant_probe  # noqa: E402

SCHEDULING_BITS = variant_probe.YIELD_BIT | variant_probe.REUSE_BITS


@pytest.fixture(scope="module")
def cubin(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DG_JIT_CACHE_DIR", str(tmp_path_factory.mktemp("dg_cache")))
        return Fp8GemmConfig(128, 128, 5, 2, PAIR_M).build().cubin


@pytest.mark.parametrize("may_yield", [True, False])
def test_rewrite_touches_only_ffma_scheduling_bits(cubin, may_yield):
    out = variant_probe.rewrite_ffma_bits(cubin, may_yield)
    assert len(out) == len(cubin)
    changed_words = 0
    for off, size in variant_probe.text_sections(cubin):
        for addr in range(off, off + size, 16):
            lo_old, hi_old = struct.unpack_from("<QQ", cubin, addr)
            lo_new, hi_new = struct.unpack_from("<QQ", out, addr)
            assert lo_new == lo_old, f"instruction word at {addr:#x} changed"
            if hi_new != hi_old:
                assert lo_old & 0xFFF == variant_probe.FFMA_OPCODE, f"non-FFMA at {addr:#x} changed"
                assert (hi_new ^ hi_old) & ~SCHEDULING_BITS == 0, f"bits outside yield/reuse changed at {addr:#x}"
                assert bool(hi_new & variant_probe.YIELD_BIT) != may_yield
                changed_words += 1
    assert changed_words >= 16, "the promotion FFMAs of the main loop were not found"
    text = sorted(variant_probe.text_sections(cubin))
    start = 0
    for off, size in text + [(len(cubin), 0)]:
        assert out[start:off] == cubin[start:off], "bytes outside the .text sections changed"
        start = off + size


@pytest.mark.parametrize("patch", [variant_probe.package_without_promotion,
                                   variant_probe.package_without_mma,
                                   lambda dst: variant_probe.package_with_stagger(dst, 256),
                                   phase_probe.patch, stall_probe.patch],
                         ids=["no_promotion", "no_mma", "stagger256", "phase_stamps", "stall_counters"])
def test_source_variants_still_compile(tmp_path, patch):
    """The source rewrites find their anchors in today's kernel, and the result compiles without
    spilling (in a child process, so the patched package never mixes with the one under test)."""
    assert compile_patched(tmp_path, patch).startswith(b"\x7fELF")


def compile_patched(tmp_path, patch) -> bytes:
    """The 256x128 serial kernel of a patched package copy, compiled in a child process: its cubin."""
    patch(tmp_path)
    header = Path("deep_gemm") / "include" / "deep_gemm" / "fp8_gemm.cuh"
    assert (tmp_path / header).read_text() != (variant_probe.REPO / header).read_text()
    code = ("import deep_gemm, sys; from deep_gemm.kernels.fp8_gemm import Fp8GemmConfig; "
            f"assert deep_gemm.__file__.startswith({str(tmp_path)!r}), deep_gemm.__file__; "
            "k = Fp8GemmConfig(256, 128, 3, 2).build(); "
            "assert 'fp8_gemm_kernel' in k.symbol and not k.resources.get('spill_stores'), k.resources; "
            f"open({str(tmp_path / 'k.cubin')!r}, 'wb').write(k.cubin)")
    env = dict(os.environ, PYTHONPATH=str(tmp_path), DG_JIT_CACHE_DIR=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return (tmp_path / "k.cubin").read_bytes()


@needs_cuobjdump
def test_no_promotion_variant_keeps_the_wgmmas(tmp_path):
    """A variant whose wgmma results are never read loses its wgmmas to ptxas (sessions 3 and 5
    timed such a kernel): no_promotion must leave the QGMMAs in place, and only a few FFMAs."""
    text = sass(compile_patched(tmp_path, variant_probe.package_without_promotion), tmp_path)
    # The first k-block peeled, then unrolled by 4 with a remainder loop: 6 copies of the
    # k-block's 2 slices x 4 wgmmas.
    assert text.count("QGMMA") == 48, "the 256x128 serial loop issues 2 slices x 4 wgmmas per k-block"
    assert text.count("FFMA") < 48
