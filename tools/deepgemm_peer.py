"""DeepGEMM's own SM90 FP8 kernel, timed against ours in the same run on the same card.

DESIGN.md's DeepGEMM column was measured on another day and machine. To tell whether a gap to it is
this card (its clock under the power cap) or our code, this tool builds DeepGEMM's released kernel
(`sm90_fp8_gemm_1d2d_impl`, from its headers; nothing of it is in this repository) and times it
with our benchmark harness next to `deep_gemm.fp8_gemm_nt`.

Two steps, because the GPU machine has no network and compiling DeepGEMM needs its headers and
CUTLASS's (the sgl-kernel wheel ships both under deep_gemm/include):

    # here: compile every candidate config for the shapes into cubins (nvcc, DeepGEMM's flags)
    python tools/deepgemm_peer.py build --include /path/to/deep_gemm/include --out .peer_cubins
    # on the GPU: load them, check each against the float32 oracle, time them and ours
    PYTHONPATH=. python3 tools/deepgemm_peer.py run --cubins .peer_cubins

DeepGEMM picks one config per shape with its heuristic; here every candidate is timed and the
fastest correct one is reported, which can only flatter DeepGEMM. Like DeepGEMM's JIT, N and K are
compile-time constants and M is not. The template arguments follow the kernel's signature in the
headers the tool was pointed at (DeepGEMM as vendored by sgl-kernel 0.3.21).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import ctypes
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.append(str(REPO))   # after PYTHONPATH, so a variant copy of the package can stand in

SHAPES = [(4096, 2112, 7168), (4096, 576, 7168), (4096, 7168, 576), (4096, 24576, 1536), (4096, 32768, 512),
          (4096, 7168, 16384), (4096, 4096, 7168), (4096, 7168, 2048)]
NUM_SMS = 132
SMEM_LIMIT = 232448
KERNEL = "sm90_fp8_gemm_1d2d_impl"
NVCC_FLAGS = ["-std=c++20", "-O3", "--expt-relaxed-constexpr", "--expt-extended-lambda",
              "--diag-suppress=39,161,174,177,186,940", "--ptxas-options=--register-usage-level=10,--verbose",
              "-gencode=arch=compute_90a,code=sm_90a", "-cubin"]


@dataclasses.dataclass(frozen=True)
class DeepGemmConfig:
    block_m: int
    block_n: int
    multicast: int = 1
    multicast_on_a: bool = False

    @property
    def math_threads(self) -> int:
        return 128 if self.block_m <= 64 else 256

    @property
    def swizzle_d(self) -> int:
        """The widest output swizzle whose atom divides a tile row (DeepGEMM's rule)."""
        row_bytes = self.block_n * 2
        return next(s for s in (128, 64, 32, 0) if s == 0 or row_bytes % s == 0)

    def smem_bytes(self, k: int, stages: int) -> int:
        """The kernel's shared-memory layout: D staging, A/B/sfa per stage, B scales, barriers."""
        align = lambda x, a: -(-x // a) * a
        d = align(self.block_m * self.block_n * 2, 1024)
        per_stage = self.block_m * 128 + self.block_n * 128 + align(self.block_m * 4, 128)
        sfb = align(-(-k // 128) * (1 if 128 % self.block_n == 0 else 2) * 4, 8)
        return d + stages * per_stage + sfb + stages * 2 * 8

    def stages(self, k: int) -> int:
        return max(s for s in range(1, 33) if self.smem_bytes(k, s) <= SMEM_LIMIT)

    def num_sms(self, m: int, n: int) -> int:
        """Fewest SMs for the same number of waves, even for clusters (DeepGEMM's rule)."""
        blocks = -(-m // self.block_m) * -(-n // self.block_n)
        waves = -(-blocks // NUM_SMS)
        sms = -(-blocks // waves)
        return min(NUM_SMS, -(-sms // self.multicast) * self.multicast)

    def name(self, m: int, n: int, k: int) -> str:
        mc = f"_mc{self.multicast}{'a' if self.multicast_on_a else 'b'}" if self.multicast > 1 else ""
        return f"dg_{n}x{k}_m{self.block_m}_n{self.block_n}{mc}_sms{self.num_sms(m, n)}"

    def source(self, m: int, n: int, k: int) -> str:
        args = ["cute::UMMA::Major::K", 0, n, k, 1, self.block_m, self.block_n, 128, 128, 128, self.swizzle_d,
                self.stages(k), 0, 128, self.math_threads, self.multicast, "true" if self.multicast_on_a else "false",
                self.num_sms(m, n), "GemmType::Normal", "EpilogueIdentity", "false"]
        return (f"#include <deep_gemm/impls/sm90_fp8_gemm_1d2d.cuh>\nusing namespace deep_gemm;\n"
                f"static const void* instantiate = reinterpret_cast<const void*>(&{KERNEL}<"
                f"{', '.join(str(a) for a in args)}>);\n")


def candidates(m: int, n: int) -> list[DeepGemmConfig]:
    """256x128 and 128-row tiles of the widths DeepGEMM's heuristic draws from, with and without
    2-CTA multicast (on A when the pair shares rows, on B when it shares columns)."""
    out = [DeepGemmConfig(256, 128)]
    for bn in (112, 128, 144, 160, 192):
        if -(-n // bn) * bn - n >= bn // 2 and bn != 128:
            continue   # more than half a tile of waste on the last column
        out.append(DeepGemmConfig(128, bn))
    more = []
    for cfg in out:
        for on_a in (True, False):
            blocks_along = -(-n // cfg.block_n) if on_a else -(-m // cfg.block_m)
            if blocks_along % 2 == 0:
                more.append(dataclasses.replace(cfg, multicast=2, multicast_on_a=on_a))
    return out + more


# ------------------------------------------------------------------------------------------------ build
def build(include: Path, out: Path, shapes, jobs: int) -> int:
    nvcc = os.environ.get("DG_JIT_NVCC_PATH") or shutil.which("nvcc")
    if not nvcc:
        print("no nvcc (set DG_JIT_NVCC_PATH)", file=sys.stderr)
        return 2
    from deep_gemm.jit.compiler import kernel_symbols, parse_ptxas_resources
    out.mkdir(parents=True, exist_ok=True)
    work = [(cfg, m, n, k) for m, n, k in shapes for cfg in candidates(m, n)]

    def one(item):
        cfg, m, n, k = item
        name = cfg.name(m, n, k)
        with tempfile.TemporaryDirectory() as tmp:
            src, cubin = Path(tmp) / f"{name}.cu", Path(tmp) / f"{name}.cubin"
            src.write_text(cfg.source(m, n, k))
            proc = subprocess.run([nvcc, *NVCC_FLAGS, f"-I{include}", "-o", str(cubin), str(src)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                return name, f"FAILED\n{proc.stdout}{proc.stderr}"
            data = cubin.read_bytes()
        (out / f"{name}.cubin").write_bytes(data)
        res = parse_ptxas_resources(proc.stdout + proc.stderr)
        meta = dict(dataclasses.asdict(cfg), name=name, m=m, n=n, k=k, stages=cfg.stages(k), num_sms=cfg.num_sms(m, n),
                    swizzle_d=cfg.swizzle_d, smem=cfg.smem_bytes(k, cfg.stages(k)), symbol=kernel_symbols(data)[0],
                    resources=res)
        (out / f"{name}.json").write_text(json.dumps(meta))
        return name, f"regs {res.get('registers')} spill {res.get('spill_stores')} stages {meta['stages']}"

    failed = 0
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        for name, msg in pool.map(one, work):
            failed += msg.startswith("FAILED")
            print(f"{name:48s} {msg}", flush=True)
    print(f"{len(work) - failed} built, {failed} failed, in {out}")
    return 1 if failed else 0


# ------------------------------------------------------------------------------------------------ run
def load_metas(cubins: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(cubins.glob("*.json"))]


def label(meta: dict) -> str:
    """A built config as the tables and --only/--config name it, e.g. '256x128 mc2A'."""
    mc = f" mc2{'A' if meta['multicast_on_a'] else 'B'}" if meta["multicast"] > 1 else ""
    return f"{meta['block_m']}x{meta['block_n']}{mc}"


def problem(m: int, n: int, k: int):
    """The benchmark's random block-scaled inputs, with sfa also in the MN-major layout both
    kernels read: (a, sfa, b, sfb, sfa_mn)."""
    import deep_gemm
    from benchmarks import peers
    a, sfa, b, sfb = peers._block_fp8_inputs(m, n, k, "cuda")
    return a, sfa, b, sfb, deep_gemm.get_mn_major_tma_aligned_tensor(sfa)


class DeepGemmLaunch:
    """One prebuilt DeepGEMM kernel bound to one problem's tensors."""

    def __init__(self, cubins: Path, meta: dict, a, sfa_mn, b, sfb, d):
        from deep_gemm.jit import runtime
        from deep_gemm.jit.compiler import CompiledKernel
        self.meta = meta
        cubin = (cubins / f"{meta['name']}.cubin").read_bytes()
        m, n, k = meta["m"], meta["n"], meta["k"]
        bm, bn = meta["block_m"], meta["block_n"]
        compiled = CompiledKernel(name=meta["symbol"], symbol=meta["symbol"], cubin=cubin, log="",
                                  resources=meta["resources"], compile_seconds=0.0, compiler="nvcc")
        device = a.device.index or 0
        func = runtime.LoadedKernel(compiled).function(device, meta["smem"])
        self.launcher = runtime.Launcher(func, meta["num_sms"], 128 + (128 if bm <= 64 else 256), meta["smem"],
                                         meta["multicast"])
        kb = -(-k // 128)
        swz = meta["swizzle_d"]
        d_box_n = bn if swz == 0 else swz // 2
        maps = [runtime.tensor_map("e4m3", a.data_ptr(), (k, m), (a.stride(0),), (128, bm), 128),
                runtime.tensor_map("e4m3", b.data_ptr(), (k, n), (b.stride(0),), (128, bn), 128),
                runtime.tensor_map("bf16", d.data_ptr(), (n, m), (d.stride(0) * 2,), (d_box_n, bm), swz),
                runtime.tensor_map("f32", sfa_mn.data_ptr(), (m, kb), (sfa_mn.stride(1) * 4,), (bm, 1), 0)]
        # Arguments in the kernel's order: sfb, grouped_layout, signal, m, n, k, then the four maps.
        self.values = [ctypes.c_uint64(sfb.data_ptr()), ctypes.c_uint64(0), ctypes.c_uint64(0),
                       ctypes.c_uint32(m), ctypes.c_uint32(n), ctypes.c_uint32(k)]
        self.values += [ctypes.create_string_buffer(x, 128) for x in maps]
        self.pointers = (ctypes.c_void_p * len(self.values))(*[ctypes.addressof(v) for v in self.values])
        self.tensors = (a, sfa_mn, b, sfb, d)   # keep them alive

    def __call__(self):
        import torch
        self.launcher.launch(ctypes.addressof(self.pointers), torch.cuda.current_stream().cuda_stream)


def run(cubins: Path, shapes, num_tests: int, out_json: Path | None, only: set[str] | None = None) -> int:
    import torch
    import deep_gemm
    from benchmarks import peers
    from deep_gemm.testing.bench import bench_kineto, effective_l2_flush_bytes
    metas = load_metas(cubins)
    rows = []
    for m, n, k in shapes:
        a, sfa, b, sfb, sfa_mn = problem(m, n, k)
        ref = peers.reference_block_fp8(a, sfa, b, sfb)
        flops = 2 * m * n * k
        ours_out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
        ours = lambda: deep_gemm.fp8_gemm_nt((a, sfa_mn), (b, sfb), ours_out)
        ours()
        ours_err = peers.rel_fro_error(ours_out, ref)
        results = []
        for meta in [x for x in metas if (x["m"], x["n"], x["k"]) == (m, n, k)]:
            d = torch.full((m, n), float("nan"), device="cuda", dtype=torch.bfloat16)   # poisoned
            try:
                fn = DeepGemmLaunch(cubins, meta, a, sfa_mn, b, sfb, d)
                fn()
                torch.cuda.synchronize()
                err = peers.rel_fro_error(d, ref)
            except Exception as exc:   # a config the kernel rejects at run time is reported, not fatal
                print(f"{m}x{n}x{k} {meta}: {exc}", flush=True)
                continue
            name = label(meta)
            if only and name not in only:
                continue
            if not err < peers.CHECK_TOL:
                print(f"{m}x{n}x{k} DeepGEMM {name}: WRONG (rel err {err:.3g})", flush=True)
                continue
            t = bench_kineto(fn, KERNEL, num_tests=num_tests, with_multiple_kernels=True, statistic="median")
            results.append(dict(config=name, stages=meta["stages"], sms=meta["num_sms"], tflops=flops / t / 1e12,
                                rel_err=err))
            print(f"{m}x{n}x{k} DeepGEMM {name:12s} {flops / t / 1e12:7.1f} TFLOP/s  err {err:.2e}", flush=True)
        # Ours twice, around DeepGEMM's candidates' last timing, so drift between them shows.
        t_ours = [bench_kineto(ours, "fp8_gemm", num_tests=num_tests, with_multiple_kernels=True,
                                     statistic="median") for _ in range(2)]
        best = max(results, key=lambda r: r["tflops"]) if results else None
        row = dict(m=m, n=n, k=k, ours_tflops=[flops / t / 1e12 for t in t_ours], ours_rel_err=ours_err,
                   deepgemm=results, deepgemm_best=best)
        rows.append(row)
        print(f"{m}x{n}x{k} ours {row['ours_tflops'][0]:.1f} / {row['ours_tflops'][1]:.1f}  err {ours_err:.2e}",
              flush=True)
    card = torch.cuda.get_device_name()
    print(f"\n{card}, L2 flush {effective_l2_flush_bytes() / 2**30:.1f} GiB, median of {num_tests}")
    print(f"{'shape':>20s} {'ours':>7s} {'DeepGEMM best':>14s} {'config':>12s} {'ours/DG':>8s}")
    ratios = []
    for r in rows:
        ours = max(r["ours_tflops"])
        best = r["deepgemm_best"]
        if best is None:
            print(f"{r['m']}x{r['n']}x{r['k']:>6} {ours:7.1f} {'-':>14s}")
            continue
        ratios.append(ours / best["tflops"])
        print(f"{r['m']}x{r['n']}x{r['k']:>6} {ours:7.1f} {best['tflops']:14.1f} {best['config']:>12s} "
              f"{ours / best['tflops']:8.3f}")
    if ratios:
        print(f"geometric mean ours/DeepGEMM: {math.exp(sum(map(math.log, ratios)) / len(ratios)):.3f}")
    if out_json:
        out_json.write_text(json.dumps(dict(card=card, l2_flush_bytes=effective_l2_flush_bytes(),
                                            num_tests=num_tests, rows=rows), indent=1))
    return 0


def profile(cubins: Path, shape, config: str) -> int:
    """One warm launch each of ours and DeepGEMM's `label` config inside cudaProfilerStart/Stop,
    for `ncu --profile-from-start off` (use --clock-control none to see the clock they run at)."""
    import torch
    import deep_gemm
    m, n, k = shape
    meta = next(x for x in load_metas(cubins) if (x["m"], x["n"], x["k"]) == shape and label(x) == config)
    a, _, b, sfb, sfa_mn = problem(m, n, k)
    d_ours, d_dg = (torch.empty(m, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    theirs = DeepGemmLaunch(cubins, meta, a, sfa_mn, b, sfb, d_dg)
    ours = lambda: deep_gemm.fp8_gemm_nt((a, sfa_mn), (b, sfb), d_ours)
    for fn in (ours, theirs):
        fn()
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStart()
    for fn in (ours, theirs):
        fn()
        torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStop()
    print(f"profiled ours and DeepGEMM {config} at {m}x{n}x{k}")
    return 0


def parse_shapes(text: str | None):
    if not text:
        return SHAPES
    return [tuple(int(x) for x in s.split(",")) for s in text.split(";") if s]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--include", type=Path, required=True, help="folder holding deep_gemm/, cute/ and cutlass/")
    b.add_argument("--out", type=Path, default=REPO / ".peer_cubins")
    b.add_argument("--shapes", help="M,N,K;M,N,K (default: the M=4096 benchmark shapes)")
    b.add_argument("--jobs", type=int, default=os.cpu_count())
    r = sub.add_parser("run")
    r.add_argument("--cubins", type=Path, default=REPO / ".peer_cubins")
    r.add_argument("--shapes")
    r.add_argument("--num-tests", type=int, default=30)
    r.add_argument("--json", type=Path)
    r.add_argument("--only", help="DeepGEMM configs to time, e.g. '256x128;128x128 mc2A' (default: all)")
    f = sub.add_parser("profile")
    f.add_argument("--cubins", type=Path, default=REPO / ".peer_cubins")
    f.add_argument("--shape", default="4096,4096,7168")
    f.add_argument("--config", default="256x128")
    args = ap.parse_args()
    if args.cmd == "profile":
        return profile(args.cubins, tuple(int(x) for x in args.shape.split(",")), args.config)
    if args.cmd == "build":
        return build(args.include, args.out, parse_shapes(args.shapes), args.jobs)
    only = set(args.only.split(";")) if args.only else None
    return run(args.cubins, parse_shapes(args.shapes), args.num_tests, args.json, only)


if __name__ == "__main__":
    sys.exit(main())
