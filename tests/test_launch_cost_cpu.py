"""tools/launch_cost.py's empty kernels compile with their parameter structs, and one of them is the
size of the dense kernel's real parameter block (so the probe keeps measuring what a call pays)."""
import ctypes
import sys
from pathlib import Path

import pytest

from deep_gemm.jit import runtime
from deep_gemm.kernels import fp8_gemm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import launch_cost  # noqa: E402


@pytest.mark.parametrize("size", launch_cost.PARAM_BYTES)
def test_empty_kernels_compile_without_local_memory(tmp_path, monkeypatch, size):
    monkeypatch.setenv("DG_JIT_CACHE_DIR", str(tmp_path))
    kernel = runtime.build(f"test_launch_cost_{size}", launch_cost.empty_kernel_source(size), f"&empty_{size}")
    assert kernel.symbol == f"empty_{size}"
    assert kernel.resources["stack_frame"] == 0 and kernel.resources["spill_stores"] == 0


def test_one_size_is_the_dense_kernels_parameter_block():
    assert ctypes.sizeof(fp8_gemm.Fp8GemmParams) in launch_cost.PARAM_BYTES
