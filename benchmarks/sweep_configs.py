"""Times many forced FP8 GEMM configs per shape next to the heuristic's pick, to check and
calibrate the performance model in deep_gemm/heuristics/fp8_gemm.py.

    python -m benchmarks.sweep_configs [--shapes "M,N,K;..."] [--grid decode] [--out results.json]

--grid decode adds, for M <= 512, a fixed grid of tile widths x split-K factors (the model's own
ranking cannot be trusted to include the configs that would show it wrong); --grid wide adds, for
M > 128, 256-row tiles of every width the registers allow, with each multicast choice.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys

import torch

import deep_gemm
from deep_gemm.heuristics import fp8_gemm as heur
from deep_gemm.jit import precompile
from deep_gemm.kernels import fp8_gemm as kernel
from deep_gemm.testing import bench_kineto, fp8_gemm_inputs

DEFAULT = "4096,7168,16384;4096,4096,7168;4096,7168,2048;4096,2112,7168;4096,24576,1536;4096,32768,512;" \
          "128,7168,16384;64,2112,7168"


def candidates(m, n, k, num_sms):
    """The 24 configs the model likes best (the heuristic's pick among them)."""
    out = sorted(heur.candidates(m, n, k, False, 0, num_sms), key=lambda c: heur.estimate(c, m, n, k).cycles)
    return out[:24]


DECODE_SHAPES = ";".join(f"{m},{n},{k}" for m in (64, 128) for n, k in (
    (2112, 7168), (4096, 7168), (7168, 576), (7168, 2048), (7168, 16384), (24576, 1536), (32768, 512)))


def decode_grid(m, n, k, num_sms):
    """Tile widths x split factors for small M, each with the most stages that fit."""
    out = []
    for bm in ((64,) if m <= 64 else (64, 128)):
        wg = 1 if bm == 64 else 2
        for bn, split in itertools.product((32, 48, 64, 80, 96, 112, 128, 160, 192), (1, 2, 3, 4, 6, 8)):
            if split > 1 and -(-k // 128) < 2 * split:
                continue
            for pipelined in (True, False):
                cfg = kernel.Fp8GemmConfig(bm, bn, 1, wg, pipelined=pipelined, split_k=split, num_sms=num_sms)
                if cfg.accumulator_floats() <= kernel.MAX_ACCUMULATOR_FLOATS:
                    break
            else:
                continue
            cfg = heur.sized(cfg, n, k)
            if cfg is not None:
                out.append(cfg)
    return out


def wide_grid(m, n, k, num_sms):
    """256-row tiles (two 128-row warpgroups, serial promotion) x widths x multicast choices."""
    out = []
    for bn, pair in itertools.product((96, 112, 120, 128, 136), (kernel.PAIR_NONE, kernel.PAIR_M, kernel.PAIR_N)):
        cfg = kernel.Fp8GemmConfig(256, bn, 1, 2, pair, num_sms=num_sms)
        if cfg.accumulator_floats() > kernel.MAX_ACCUMULATOR_FLOATS or (pair == kernel.PAIR_M and bn % 16):
            continue
        cfg = heur.sized(cfg, n, k)
        if cfg is not None:
            out.append(cfg)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default=DEFAULT)
    ap.add_argument("--out")
    ap.add_argument("--grid", choices=("model", "decode", "wide"), default="model")
    ap.add_argument("--top", type=int, default=24, help="how many of the model's best to time")
    args = ap.parse_args(argv)
    if args.grid == "decode" and args.shapes == DEFAULT:
        args.shapes = DECODE_SHAPES
    num_sms = deep_gemm.get_num_sms()
    shapes = precompile.parse_shapes(args.shapes)
    plan = {}
    for m, n, k in shapes:
        chosen = heur.choose_config(m, n, k, False, 0, num_sms)
        cands = candidates(m, n, k, num_sms)[:args.top]
        if args.grid == "decode" and m <= 512:
            cands += [c for c in decode_grid(m, n, k, num_sms) if c not in cands]
        if args.grid == "wide" and m > 128:
            cands += [c for c in wide_grid(m, n, k, num_sms) if c not in cands]
        if chosen not in cands:
            cands.append(chosen)
        plan[(m, n, k)] = (chosen, cands)
    builds = {c.kernel_name(): (c, k) for (m, n, k), (_, cs) in plan.items() for c in cs}
    reports = precompile.build_all(list(builds.values()))
    bad = {r.name for r in reports if r.error}
    rows = []
    for (m, n, k), (chosen, cands) in plan.items():
        a, b, (qa, sfa), (qb, sfb) = fp8_gemm_inputs(m, n, k, mn_major_sfa=True)
        d = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
        ref = (a.float() @ b.float().T)
        best = None
        for cfg in cands:
            if cfg.kernel_name() in bad:
                continue
            fn = lambda: deep_gemm.fp8_gemm_nt((qa, sfa), (qb, sfb), d, config=cfg)  # noqa: E731
            try:
                fn()
                diff = deep_gemm.calc_diff(d.float(), ref)
                t = bench_kineto(fn, "fp8_gemm_kernel", num_tests=20)
            except Exception as exc:  # a broken config must not stop the sweep
                rows.append({"shape": [m, n, k], "config": cfg.kernel_name(), "error": str(exc)[:300]})
                continue
            tflops = 2 * m * n * k / t / 1e12
            row = {"shape": [m, n, k], "config": cfg.kernel_name(), "raster": cfg.raster_group, "us": t * 1e6,
                   "tflops": tflops, "tbps": (m * k + n * k + 2 * m * n) / t / 1e12,
                   "predicted_us": heur.estimate(cfg, m, n, k).cycles / 1.83e3, "chosen": cfg == chosen, "diff": diff}
            rows.append(row)
            if best is None or t < best[0]:
                best = (t, cfg)
        ours = [r for r in rows if r.get("chosen") and r["shape"] == [m, n, k]]
        bytes_moved = m * k + n * k + 2 * m * n
        print(f"{m}x{n}x{k}: best {best[1].kernel_name()} r{best[1].raster_group} {best[0] * 1e6:.1f} us "
              f"{2*m*n*k/best[0]/1e12:.0f} TFLOP/s {bytes_moved / best[0] / 1e12:.2f} TB/s; heuristic "
              f"{chosen.kernel_name()} {ours[0]['us'] if ours else float('nan'):.1f} us", flush=True)
        del a, b, qa, qb, d, ref
        torch.cuda.empty_cache()
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"card": torch.cuda.get_device_name(), "rows": rows}, f, indent=1)
    for r in rows:
        if "error" in r:
            print("ERROR", r["shape"], r["config"], r["error"][:200])
    return 0


if __name__ == "__main__":
    sys.exit(main())
