"""The JIT runtime on a Hopper GPU: TMA round trip through the test kernel, compile time, launch cost."""
import time

import pytest
import torch

from conftest import requires_hopper

pytestmark = [pytest.mark.gpu, requires_hopper]


@pytest.mark.parametrize("rows,cols,dtype", [(64, 64, torch.float32), (200, 72, torch.float32),
                                             (1000, 4096, torch.bfloat16), (7, 24, torch.bfloat16),
                                             (513, 129 * 16, torch.uint8)])
def test_tma_copy_round_trip(rows, cols, dtype):
    from deep_gemm.kernels.tma_copy import TmaCopy
    if dtype == torch.uint8:
        src = torch.randint(0, 256, (rows, cols), dtype=dtype, device="cuda")
        dst = torch.full_like(src, 0xAB)
    else:
        src = torch.randn(rows, cols, device="cuda").to(dtype)
        dst = torch.full_like(src, float("nan"))
    TmaCopy()(src, dst)
    torch.cuda.synchronize()
    assert torch.equal(src, dst)


def test_tma_copy_strided_view():
    from deep_gemm.kernels.tma_copy import TmaCopy
    base = torch.randn(300, 256, device="cuda")
    src = base[:, 64:192]           # row stride 256 floats, 16-byte aligned start
    dst = torch.full((300, 128), float("nan"), device="cuda")
    TmaCopy(box_rows=32, box_cols=32)(src, dst)
    torch.cuda.synchronize()
    assert torch.equal(src, dst)


def test_report_compile_and_launch_cost(tmp_path, monkeypatch, record_property):
    """Cold NVRTC compile of the test kernel and host time per launch with the GPU kept busy."""
    from deep_gemm.jit import runtime
    from deep_gemm.kernels import tma_copy
    monkeypatch.setenv("DG_JIT_CACHE_DIR", str(tmp_path))
    start = time.perf_counter()
    compiled = runtime.build("tma_copy_cold", tma_copy.source() + "// cold\n", tma_copy.KERNEL_EXPR)
    cold = time.perf_counter() - start
    copier = tma_copy.TmaCopy()
    src = torch.randn(64, 64, device="cuda")
    dst = torch.empty_like(src)
    copier(src, dst)
    torch.cuda.synchronize()
    # Enqueue cost only: each chunk of launches sits behind a sleep kernel long enough to cover it,
    # and chunks stay far below the driver's launch-queue depth (a full queue blocks the host).
    chunks, per_chunk = 10, 100
    times = []
    for _ in range(chunks):
        torch.cuda._sleep(int(5e7))
        start = time.perf_counter()
        for _ in range(per_chunk):
            copier(src, dst)
        times.append((time.perf_counter() - start) / per_chunk * 1e6)
        torch.cuda.synchronize()
    per_launch_us = sorted(times)[len(times) // 2]
    torch.cuda.synchronize()
    assert torch.equal(src, dst)
    record_property("nvrtc_compile_s", cold)
    record_property("launch_us", per_launch_us)
    print(f"\n[runtime] NVRTC cold compile {cold:.3f} s ({compiled.compiler}); host time per launch {per_launch_us:.2f} us")
    assert cold < 5.0
