"""Times the TMA-store epilogue against the direct-store one (whose freed staging buffer buys
another pipeline stage) on the same shapes, interleaved old/new/old/new so clock drift at the
power cap shows as a spread rather than as a difference. Each variant is checked against the
float64 reference first, into a poisoned output whose row padding must stay untouched.

    python3 tools/epilogue_probe.py [--shapes "M,N,K;..."] [--reps 2] [--json out.json]

Variants: "pick" is the library's own choice on a contiguous D (TMA store); "tma:BMxBNxSTAGES" forces
that config on a contiguous D; "direct:BMxBNxSTAGES" forces it on a D whose rows are padded to 8-byte (not
16-byte) multiples, which takes the direct-store epilogue. Either may add ":pm" or ":pn" (a multicast
pair sharing B or A) and ":rG" (a raster group of G N units instead of the heuristic's), for example
"tma:256x128x3:pn:r8" (session 14's pair and raster sweeps).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import torch

import deep_gemm
from deep_gemm import reference
from deep_gemm.jit import precompile
from deep_gemm.heuristics import fp8_gemm as heur
from deep_gemm.kernels.fp8_gemm import EPI_DIRECT, EPI_TMA_STORE, PAIR_M, PAIR_N, PAIR_NONE, Fp8GemmConfig
from deep_gemm.testing import bench_kineto, calc_diff, fp8_gemm_inputs, rel_fro_error

SHAPES = "4096,7168,16384;4096,4096,7168;4096,7168,2048;4096,2112,7168;4096,24576,1536;4096,32768,512;" \
         "4096,7168,576;4096,576,7168"
VARIANTS = ("pick", "tma:256x128x3", "direct:256x128x3", "direct:256x128x4", "tma:128x192x4", "direct:128x192x5")


def parse(variant: str, n: int, k: int, num_sms: int):
    """(kind, forced config or None). Optional suffixes: ":pm" / ":pn" a multicast pair (PAIR_M shares
    B, PAIR_N shares A), ":rG" a raster group of G N units; without one, the heuristic's group."""
    if variant == "pick":
        return "pick", None
    kind, spec, *extra = variant.split(":")
    bm, bn, stages = (int(x) for x in spec.split("x"))
    epilogue = EPI_DIRECT if kind == "direct" else EPI_TMA_STORE
    pair = {"pm": PAIR_M, "pn": PAIR_N}.get(next((e for e in extra if e.startswith("p")), ""), PAIR_NONE)
    cfg = Fp8GemmConfig(bm, bn, stages, 1 if bm == 64 else 2, pair, epilogue=epilogue, num_sms=num_sms)
    forced = [int(e[1:]) for e in extra if e.startswith("r")]
    return kind, dataclasses.replace(cfg, raster_group=forced[0] if forced else heur.raster_group_for(cfg, n, k))


def output(m: int, n: int, kind: str):
    """(D, its padded storage or None), poisoned."""
    if kind != "direct":
        return torch.full((m, n), float("nan"), device="cuda", dtype=torch.bfloat16), None
    storage = torch.full((m, n + 4), float("nan"), device="cuda", dtype=torch.bfloat16)
    return storage[:, :n], storage


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default=SHAPES)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    variants = args.variants.split(",")
    shapes = precompile.parse_shapes(args.shapes)
    num_sms = deep_gemm.get_num_sms()
    # Build every forced kernel up front (in parallel), so timing never waits for a compile.
    builds = {}
    for v in variants:
        for _, n, k in shapes:
            cfg = parse(v, n, k, num_sms)[1]
            if cfg is not None:
                builds[(cfg.kernel_name(), k)] = (cfg, k)
    precompile.build_all(list(builds.values()))
    rows, table = [], []
    for m, n, k in shapes:
        a, b, (qa, sfa), (qb, sfb) = fp8_gemm_inputs(m, n, k, mn_major_sfa=True)
        ref = reference.fp8_gemm_nt(qa, sfa, qb, sfb, out_dtype=torch.float64, compute_dtype=torch.float64)
        unquantized = a.double() @ b.double().T
        line = {}
        for rep in range(args.reps):
            for v in variants:
                kind, cfg = parse(v, n, k, num_sms)
                d, storage = output(m, n, kind)
                fn = lambda: deep_gemm.fp8_gemm_nt((qa, sfa), (qb, sfb), d, config=cfg)  # noqa: E731
                try:
                    fn()
                    torch.cuda.synchronize()
                except Exception as exc:   # a config that does not fit this K must not stop the probe
                    rows.append({"shape": [m, n, k], "variant": v, "error": str(exc)[:300]})
                    continue
                if rep == 0:
                    assert not torch.isnan(d).any(), f"{v} {m}x{n}x{k}: unwritten output"
                    if storage is not None:
                        assert torch.isnan(storage[:, n:]).all(), f"{v} {m}x{n}x{k}: wrote into the row padding"
                    err, diff = rel_fro_error(d.double(), ref), calc_diff(d.double(), unquantized)
                    assert err < 4e-3 and diff < 1e-3, f"{v} {m}x{n}x{k}: error {err:.2e}, calc_diff {diff:.2e}"
                t = bench_kineto(fn, "fp8_gemm_kernel", num_tests=20)
                tflops = 2 * m * n * k / t / 1e12
                rows.append({"shape": [m, n, k], "variant": v, "rep": rep, "us": t * 1e6, "tflops": tflops})
                line.setdefault(v, []).append(tflops)
        table.append(((m, n, k), line))
        print(f"{m}x{n}x{k}: " + "  ".join(f"{v} {'/'.join(f'{x:.0f}' for x in xs)}" for v, xs in line.items()),
              flush=True)
        del a, b, qa, qb, ref, unquantized
        torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"card": torch.cuda.get_device_name(), "rows": rows}, f, indent=1)
    print(f"\n{torch.cuda.get_device_name()}: TFLOP/s, best of {args.reps} interleaved runs")
    print("| shape | " + " | ".join(variants) + " |")
    print("|---" * (len(variants) + 1) + "|")
    for (m, n, k), line in table:
        print(f"| {m}x{n}x{k} | " + " | ".join(f"{max(line[v]):.0f}" if v in line else "-" for v in variants) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
