"""Times a few forced FP8 GEMM configs on small-M shapes (profiler kernel time, L2 flushed) and
prints us, TFLOP/s and TB/s (A, B and D counted once): quick experiments on what limits decode.

    python3 tools/decode_probe.py "64,7168,16384" "Fp8GemmConfig(64, 64, 8, 1, pipelined=True)" ...

With DG_PROBE_SUSTAIN_S=<seconds> it also runs each config back to back for that long while
nvidia-smi samples the SM clock and board power every 50 ms, and prints the work done per clock
(TFLOP/s per MHz: what the kernel does with the cycles it gets, apart from the power cap). The
samples are only right for such back-to-back loops: between flushed single launches nvidia-smi
mostly sees the memset and the gaps, so time one launch's clock with tools/stall_probe.py instead.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

import torch

import deep_gemm
from deep_gemm.kernels.fp8_gemm import PAIR_M, PAIR_N, PAIR_NONE, Fp8GemmConfig  # noqa: F401 (eval)
from deep_gemm.testing import bench_kineto, calc_diff, fp8_gemm_inputs


def sustained(fn, seconds: float):
    """Seconds per call, median SM MHz, median watts, median temperature and the clock-limit
    reasons seen (nvidia-smi's bitmask: 0x4 power cap, 0x8 hardware slowdown, 0x20/0x40 thermal,
    0x80 power brake) over a back-to-back loop."""
    smi = subprocess.Popen(["nvidia-smi", "--query-gpu=clocks.sm,power.draw,temperature.gpu,clocks_throttle_reasons.active",
                            "--format=csv,noheader,nounits",
                            "-lms", "50"], stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, calls = time.perf_counter(), 0
    begin = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    begin.record()
    while time.perf_counter() - start < seconds:
        for _ in range(20):
            fn()
        calls += 20
        torch.cuda.synchronize()
    end.record()
    torch.cuda.synchronize()
    smi.terminate()
    samples = [line.split(",") for line in smi.communicate()[0].splitlines() if "," in line]
    samples = samples[len(samples) // 4:]   # the clock settles during the first part of the loop
    med = lambda i: statistics.median(float(s[i]) for s in samples) if samples else float("nan")  # noqa: E731
    reasons = sorted({s[3].strip() for s in samples})
    return begin.elapsed_time(end) / 1e3 / calls, med(0), med(1), med(2), reasons


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
        if float(os.environ.get("DG_PROBE_SUSTAIN_S", "0")) > 0:
            ts, mhz, watts, temp, reasons = sustained(fn, float(os.environ["DG_PROBE_SUSTAIN_S"]))
            tf = 2 * m * n * k / ts / 1e12
            print(f"    sustained {tf:6.0f} TFLOP/s at {mhz:.0f} MHz {watts:.0f} W {temp:.0f} C: "
                  f"{tf / mhz:.3f} TFLOP/s per MHz; clock limits {' '.join(reasons)}", flush=True)


if __name__ == "__main__":
    main()
