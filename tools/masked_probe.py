"""Times forced configs of the masked grouped GEMM (profiler kernel time, L2 flushed):

    python3 tools/masked_probe.py 1,1024,4096,7168 "Fp8GemmConfig(128, 128, 5, 2, PAIR_N, pipelined=True)" ...
(experts, valid rows per expert, N, K; M_max = 4096)."""
from __future__ import annotations

import sys

import torch

import deep_gemm
from deep_gemm.kernels.fp8_gemm import PAIR_M, PAIR_N, PAIR_NONE, Fp8GemmConfig  # noqa: F401 (eval)
from deep_gemm.testing import bench_kineto


def main() -> None:
    g, rows, n, k = (int(x) for x in sys.argv[1].split(","))
    m_max = 4096
    qa = deep_gemm.per_token_cast_to_fp8(torch.randn(g, m_max, k, device="cuda", dtype=torch.bfloat16))
    qa = (qa[0], deep_gemm.get_mn_major_tma_aligned_tensor(qa[1]))
    qb = deep_gemm.per_block_cast_to_fp8(torch.randn(g, n, k, device="cuda", dtype=torch.bfloat16))
    masked_m = torch.full((g,), rows, dtype=torch.int32, device="cuda")
    d = torch.empty(g, m_max, n, device="cuda", dtype=torch.bfloat16)
    for text in [None] + sys.argv[2:]:
        cfg = None if text is None else eval(text)
        fn = lambda: deep_gemm.m_grouped_fp8_gemm_nt_masked(qa, qb, d, masked_m, rows, config=cfg)  # noqa: E731
        try:
            fn()
            t = bench_kineto(fn, "fp8_gemm_kernel", num_tests=30)
        except Exception as exc:   # one bad config must not stop the others
            print(f"{text}: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
            continue
        print(f"masked {g}x{rows} N={n} K={k} {text or 'heuristic':60s} {t * 1e6:7.1f} us "
              f"{2 * g * rows * n * k / t / 1e12:6.0f} TFLOP/s", flush=True)


if __name__ == "__main__":
    main()
