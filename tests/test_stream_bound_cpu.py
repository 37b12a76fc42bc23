"""tools/stream_bound.py's kernels still compile for sm_90a against today's ptx.cuh, with the host
mirrors of their parameter structs (the generated source asserts the sizes), and without spills."""
import sys
from pathlib import Path

import pytest

from deep_gemm.jit import runtime

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import stream_bound  # noqa: E402


@pytest.mark.parametrize("entry", stream_bound.ENTRIES)
def test_stream_kernels_compile(tmp_path, monkeypatch, entry):
    monkeypatch.setenv("DG_JIT_CACHE_DIR", str(tmp_path))
    kernel = runtime.build(f"test_{entry}", stream_bound.source(), f"&deep_gemm::{entry}")
    assert entry in kernel.symbol
    assert kernel.resources["spill_stores"] == 0 and kernel.resources["spill_loads"] == 0


def test_deepgemm_table_is_issue_5s_fourteen_shapes():
    shapes = stream_bound.DEEPGEMM_H200_TFLOPS
    assert len(shapes) == 14
    assert {m for m, _, _ in shapes} == {64, 128}
    assert {(n, k) for _, n, k in shapes} == {(2112, 7168), (4096, 7168), (7168, 576), (7168, 2048),
                                               (7168, 16384), (24576, 1536), (32768, 512)}
