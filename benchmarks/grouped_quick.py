"""Kernel time of the M-grouped GEMMs on the issue-4 shapes (profiler time, L2 flushed), TFLOP/s on
valid rows only. No peers yet: see benchmarks/NOTES.md."""
import torch

import deep_gemm
from deep_gemm.testing import bench_kineto


def contiguous(groups, rows, n, k):
    m_indices = torch.arange(groups, device="cuda", dtype=torch.int32).repeat_interleave(rows)
    a = deep_gemm.per_token_cast_to_fp8(torch.randn(groups * rows, k, device="cuda", dtype=torch.bfloat16))
    a = (a[0], deep_gemm.get_mn_major_tma_aligned_tensor(a[1]))
    b = deep_gemm.per_block_cast_to_fp8(torch.randn(groups, n, k, device="cuda", dtype=torch.bfloat16))
    d = torch.empty(groups * rows, n, device="cuda", dtype=torch.bfloat16)
    t = bench_kineto(lambda: deep_gemm.m_grouped_fp8_gemm_nt_contiguous(a, b, d, m_indices), "fp8_gemm_kernel")
    return t, 2 * groups * rows * n * k


def masked(groups, rows, n, k, m_max=4096):
    a = deep_gemm.per_token_cast_to_fp8(torch.randn(groups, m_max, k, device="cuda", dtype=torch.bfloat16))
    a = (a[0], deep_gemm.get_mn_major_tma_aligned_tensor(a[1]))
    b = deep_gemm.per_block_cast_to_fp8(torch.randn(groups, n, k, device="cuda", dtype=torch.bfloat16))
    d = torch.empty(groups, m_max, n, device="cuda", dtype=torch.bfloat16)
    masked_m = torch.full((groups,), rows, device="cuda", dtype=torch.int32)
    t = bench_kineto(lambda: deep_gemm.m_grouped_fp8_gemm_nt_masked(a, b, d, masked_m, rows), "fp8_gemm_kernel")
    return t, 2 * groups * rows * n * k


if __name__ == "__main__":
    print(f"card: {torch.cuda.get_device_name()}")
    for name, fn, args in [("contiguous", contiguous, (4, 8192, 4096, 7168)), ("contiguous", contiguous, (32, 256, 4096, 7168)),
                           ("masked", masked, (1, 1024, 4096, 7168)), ("masked", masked, (4, 256, 7168, 2048)),
                           ("masked", masked, (32, 20, 4096, 7168))]:
        t, flops = fn(*args)
        print(f"{name:<10} groups={args[0]:<3} rows={args[1]:<5} N={args[2]} K={args[3]}: {t * 1e6:8.1f} us "
              f"{flops / t / 1e12:7.0f} TFLOP/s", flush=True)
        torch.cuda.empty_cache()
