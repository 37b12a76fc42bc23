"""Times a few forced FP8 GEMM configs on small-M shapes (profiler kernel time, L2 flushed) and
prints us, TFLOP/s and TB/s (A, B and D counted once): quick experiments on what limits decode.

    python3 tools/decode_probe.py "64,7168,16384" "Fp8GemmConfig(64, 64, 8, 1, pipelined=True)" ...
"""
from __future__ import annotations

import sys

import torch

import deep_gemm
from deep_gemm.kernels.fp8_gemm import PAIR_M, PAIR_N, PAIR_NONE, Fp8GemmConfig  # noqa: F401 (eval)
from deep_gemm.testing import bench_kineto, calc_diff, fp8_gemm_inputs


def main() -> None:
    m, n, k = (int(x) for x in sys.argv[1].split(","))
    a, b, qa, qb = fp8_gemm_inputs(m, n, k, mn_major_sfa=True)
    ref = a.float() @ b.float().T
    d = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
    for text in sys.argv[2:]:
        cfg = eval(text)
        fn = lambda: deep_gemm.fp8_gemm_nt(qa, qb, d, config=cfg)  # noqa: E731
        try:
            fn()
            diff = calc_diff(d.float(), ref)
            t = bench_kineto(fn, "fp8_gemm_kernel", num_tests=30)
        except Exception as exc:   # one bad config must not stop the others
            print(f"{m}x{n}x{k} {text}: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
            continue
        moved = m * k + n * k + 2 * m * n
        print(f"{m}x{n}x{k} {cfg.kernel_name():45s} {t * 1e6:7.1f} us {2 * m * n * k / t / 1e12:6.0f} TFLOP/s "
              f"{moved / t / 1e12:5.2f} TB/s diff {diff:.1e}", flush=True)


if __name__ == "__main__":
    main()
