"""How fast can a decode GEMM be on this card? Times, the way the benchmark times deep_gemm
(profiler kernel time, L2 flushed, median of 30), a kernel that only reads A and B once and writes
D once (tools/stream_bound.cuh), for each of issue 5's 14 shapes, next to deep_gemm in the same run.
DeepGEMM's time divided by that floor is the largest speed-up over DeepGEMM any kernel can have here.

    PYTHONPATH=. python3 tools/stream_bound.py [--json out.json]

The floor is the best over a few chunk sizes, stage counts and CTAs per SM. An empty launch of the
same kernel (nothing read or written) is reported too: the fixed cost every kernel pays.

With --tiles it also reads B alone in a split-K GEMM's pattern (TMA boxes of rows x 128 bytes, one
CTA per tile and K slice) for a few shapes, with 1, 2 and 4 k-blocks per box: what the GEMM's own
access pattern costs before any of its machinery.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import math
from pathlib import Path

import torch

from deep_gemm.jit import runtime
from deep_gemm.kernels.common import (TensorMapBytes, current_stream, layout_asserts, params_struct,
                                      set_tensor_map)
from deep_gemm.testing import bench_kineto

HERE = Path(__file__).resolve().parent

# Issue 5's DeepGEMM figures on an H200: (M, N, K) -> TFLOP/s (the microsecond column is rounded).
DEEPGEMM_H200_TFLOPS = {
    (64, 2112, 7168): 180, (64, 4096, 7168): 258, (64, 7168, 576): 113, (64, 7168, 2048): 238,
    (64, 7168, 16384): 388, (64, 24576, 1536): 295, (64, 32768, 512): 243,
    (128, 2112, 7168): 333, (128, 4096, 7168): 458, (128, 7168, 576): 203, (128, 7168, 2048): 412,
    (128, 7168, 16384): 627, (128, 24576, 1536): 546, (128, 32768, 512): 432,
}

# (chunk bytes, stages, CTAs per SM); stages * chunk fits the 227 KB a CTA may have, halved for 2/SM.
# stages 0: every thread loads 16-byte vectors itself (no shared memory).
VARIANTS = ((16384, 12, 1), (32768, 6, 1), (8192, 24, 1), (4096, 32, 1), (16384, 6, 2), (8192, 12, 2),
            (0, 0, 2), (0, 0, 4))

StreamBoundParams = params_struct("StreamBoundParams", [
    ("src", ctypes.c_uint64 * 2), ("src_bytes", ctypes.c_uint64 * 2), ("dst", ctypes.c_uint64),
    ("dst_bytes", ctypes.c_uint64), ("chunk_bytes", ctypes.c_uint32), ("stages", ctypes.c_uint32)], align=8)


StreamTilesParams = params_struct("StreamTilesParams", [("b", TensorMapBytes)] + [
    (f, ctypes.c_uint32) for f in ("rows", "depth", "stages", "box_bytes", "n_tiles", "split",
                                    "k_blocks_per_split", "k_blocks")])

# (M, N, K, rows, split): the decode picks of this session's heuristic, in B's pattern.
TILE_CASES = ((64, 2112, 7168, 72, 4), (64, 4096, 7168, 112, 3), (64, 7168, 16384, 112, 2),
              (128, 7168, 16384, 112, 2), (64, 24576, 1536, 128, 1))


ENTRIES = ("stream_bound_kernel", "stream_tiles_kernel")


def source() -> str:
    return ("#include <deep_gemm/ptx.cuh>\n" + (HERE / "stream_bound.cuh").read_text()
            + layout_asserts("deep_gemm::StreamBoundParams", StreamBoundParams) + "\n"
            + layout_asserts("deep_gemm::StreamTilesParams", StreamTilesParams) + "\n")


def kernel(entry: str = "stream_bound_kernel"):
    return runtime.get_kernel(f"tools_{entry}", source(), f"&deep_gemm::{entry}")


def tiles_us(k, n: int, kk: int, rows: int, split: int, depth: int) -> float:
    device = torch.cuda.current_device()
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    b = torch.empty(n, kk, dtype=torch.uint8, device="cuda")
    k_blocks = kk // 128
    per_split = -(-k_blocks // split)
    per_split = -(-per_split // depth) * depth
    p = StreamTilesParams()
    set_tensor_map(p, StreamTilesParams.b.offset, runtime.tensor_map(
        "u8", b.data_ptr(), (128, n, k_blocks), (kk, 128), (128, rows, depth), swizzle=128))
    p.rows, p.depth, p.box_bytes = rows, depth, rows * 128 * depth
    p.stages = min(32, (200 << 10) // p.box_bytes)
    p.n_tiles, p.split, p.k_blocks_per_split, p.k_blocks = -(-n // rows), split, per_split, k_blocks
    smem = p.stages * p.box_bytes
    grid = min(sms, p.n_tiles * split)
    launch = runtime.Launcher(k.function(device, smem), grid, 128, smem)
    return bench_kineto(lambda: launch(p, current_stream(device)), "stream_tiles", statistic="median") * 1e6


def stream_fn(k, srcs, dst, chunk: int, stages: int, per_sm: int):
    device = torch.cuda.current_device()
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    smem = chunk * stages
    launch = runtime.Launcher(k.function(device, smem), sms * per_sm, 256, smem)
    p = StreamBoundParams()
    for i, t in enumerate(srcs):
        p.src[i], p.src_bytes[i] = t.data_ptr(), t.numel() * t.element_size()
    p.dst = dst.data_ptr() if dst is not None else 0
    p.dst_bytes = dst.numel() * dst.element_size() if dst is not None else 0
    p.chunk_bytes, p.stages = chunk, stages
    return lambda: launch(p, current_stream(device))


def floor_us(k, m: int, n: int, kk: int) -> tuple[float, str, dict]:
    b = torch.empty(n * kk, dtype=torch.uint8, device="cuda")
    a = torch.empty(m * kk, dtype=torch.uint8, device="cuda")
    d = torch.empty(m * n, dtype=torch.bfloat16, device="cuda")
    best, every = (math.inf, ""), {}
    for chunk, stages, per_sm in VARIANTS:
        t = bench_kineto(stream_fn(k, (b, a), d, chunk, stages, per_sm), "stream_bound", statistic="median")
        how = f"{chunk // 1024}K x{stages} {per_sm}/SM" if stages else f"LDG {per_sm}/SM"
        every[how] = t * 1e6
        best = min(best, (t * 1e6, how))
    return best + (every,)


def deep_gemm_us(m: int, n: int, kk: int) -> tuple[float, float]:
    import deep_gemm
    from deep_gemm.testing import calc_diff, fp8_gemm_inputs
    a, b, qa, qb = fp8_gemm_inputs(m, n, kk)
    d = torch.full((m, n), float("nan"), dtype=torch.bfloat16, device="cuda")
    deep_gemm.fp8_gemm_nt(qa, qb, d)
    diff = calc_diff(d.float(), a.float() @ b.float().t())
    t = bench_kineto(lambda: deep_gemm.fp8_gemm_nt(qa, qb, d), "fp8_gemm", statistic="median",
                     with_multiple_kernels=True)
    return t * 1e6, diff


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--tiles", action="store_true", help="also time B alone in split-K GEMM tile patterns")
    args = ap.parse_args()
    tiles = []
    if args.tiles:
        kt = kernel("stream_tiles_kernel")
        for m, n, kk, rows, split in TILE_CASES:
            for depth in (1, 2, 4):
                t = tiles_us(kt, n, kk, rows, split, depth)
                tiles.append(dict(m=m, n=n, k=kk, rows=rows, split=split, depth=depth, us=t,
                                  TBps=n * kk / t / 1e6))
                print(f"B of {m}x{n}x{kk} as {rows}-row tiles, split {split}, {depth} k-block(s) per box: "
                      f"{t:6.2f} us ({n * kk / t / 1e6:.2f} TB/s)", flush=True)
    k = kernel()
    empty = stream_fn(k, (torch.empty(0, device="cuda"),) * 2, None, 16384, 1, 1)
    empty_us = bench_kineto(empty, "stream_bound", statistic="median") * 1e6
    print(f"{torch.cuda.get_device_name()}: empty launch of the streaming kernel {empty_us:.2f} us", flush=True)
    rows = []
    for (m, n, kk), dg_tflops in DEEPGEMM_H200_TFLOPS.items():
        moved = n * kk + m * kk + 2 * m * n
        dg_us = 2 * m * n * kk / dg_tflops / 1e6
        fl_us, how, every = floor_us(k, m, n, kk)
        ours_us, diff = deep_gemm_us(m, n, kk)
        rows.append(dict(m=m, n=n, k=kk, mbytes=moved / 1e6, floor_us=fl_us, floor_how=how,
                         floor_TBps=moved / fl_us / 1e6, floor_variants_us=every, deep_gemm_us=ours_us, deep_gemm_diff=diff,
                         deepgemm_h200_us=dg_us, max_speedup=dg_us / fl_us, speedup=dg_us / ours_us))
        print(f"{m:4d} {n:6d} {kk:6d} {moved / 1e6:7.1f} MB floor {fl_us:6.2f} us ({how}, "
              f"{moved / fl_us / 1e6:.2f} TB/s)  deep_gemm {ours_us:6.2f} us (diff {diff:.1e})  "
              f"DeepGEMM {dg_us:6.2f} us", flush=True)
    geo = lambda key: math.exp(sum(math.log(r[key]) for r in rows) / len(rows))
    print("\n| M | N | K | MB moved | floor us | floor TB/s | deep_gemm us | DeepGEMM H200 us | "
          "DeepGEMM / floor | DeepGEMM / deep_gemm |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['m']} | {r['n']} | {r['k']} | {r['mbytes']:.1f} | {r['floor_us']:.2f} | "
              f"{r['floor_TBps']:.2f} | {r['deep_gemm_us']:.2f} | {r['deepgemm_h200_us']:.2f} | "
              f"{r['max_speedup']:.2f} | {r['speedup']:.2f} |")
    print(f"\nGeometric mean: DeepGEMM / floor {geo('max_speedup'):.3f} (the most any kernel could gain), "
          f"DeepGEMM / deep_gemm {geo('speedup'):.3f}; empty launch {empty_us:.2f} us")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(device=torch.cuda.get_device_name(), empty_us=empty_us,
                                                   rows=rows, tiles=tiles), indent=1))


if __name__ == "__main__":
    main()
