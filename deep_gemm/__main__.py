"""Command line: python -m deep_gemm {info,demo,bench,cache,precompile}."""
from __future__ import annotations

import argparse
import sys
import time


def cmd_info(args) -> int:
    import platform

    import torch

    from . import __version__
    from .api.device import get_num_sms
    from .jit import cache
    print(f"deep_gemm {__version__} (python {platform.python_version()}, torch {torch.__version__})")
    if torch.cuda.is_available():
        idx = torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(idx)
        hopper = (major, minor) == (9, 0)
        print(f"GPU: {torch.cuda.get_device_name(idx)}, compute capability {major}.{minor}, {get_num_sms()} SMs"
              f"{'' if hopper else ' (not sm_90: calls run the reference path)'}")
        try:
            from .jit.runtime import check, driver
            ver = check(driver().cuDriverGetVersion(), "cuDriverGetVersion")
            print(f"CUDA driver API version: {ver // 1000}.{ver % 1000 // 10}; torch CUDA {torch.version.cuda}")
        except Exception as exc:  # info must work on broken installs too
            print(f"CUDA driver: unavailable ({exc})")
    else:
        print("GPU: none visible (calls run the PyTorch reference path)")
    try:
        from .jit.compiler import compiler_identity
        print(f"compiler: {compiler_identity()}")
    except Exception as exc:
        print(f"compiler: unavailable ({exc})")
    try:
        import cuda.bindings
        print(f"cuda-bindings: {cuda.bindings.__version__}")
    except Exception as exc:
        print(f"cuda-bindings: unavailable ({exc})")
    n = len(cache.entries())
    print(f"kernel cache: {cache.cache_dir()} ({n} kernels, {cache.total_bytes() / 1e6:.1f} MB)")
    return 0


def cmd_cache(args) -> int:
    from .jit import cache
    if args.action == "clear":
        print(f"removed {cache.clear()} files from {cache.kernel_dir()}")
        return 0
    rows = cache.entries()
    for path, kernel in rows:
        if kernel is None:
            print(f"{path.name}: CORRUPT (will be rebuilt on next use)")
        else:
            r = kernel.resources
            print(f"{kernel.name:<44} regs={r.get('registers')} spills={r.get('spill_stores')}/{r.get('spill_loads')} "
                  f"{len(kernel.cubin)} B cubin, {kernel.compiler}, compiled in {kernel.compile_seconds:.2f} s")
    print(f"{len(rows)} entries in {cache.kernel_dir()}")
    return 0


def cmd_precompile(args) -> int:
    from .api.device import get_num_sms
    from .jit import precompile
    try:
        shapes = precompile.parse_shapes(args.shapes) if args.shapes else precompile.DEFAULT_SHAPES
    except ValueError as exc:
        print(f"python -m deep_gemm precompile: {exc}", file=sys.stderr)
        return 2
    # The default set also covers the MoE grouped kernels of the benchmark shapes.
    grouped = () if args.shapes else precompile.DEFAULT_GROUPED
    return precompile.run(shapes, args.num_sms or get_num_sms(), args.jobs, grouped=grouped)


def cmd_demo(args) -> int:
    import torch

    import deep_gemm
    from . import reference
    from .testing import calc_diff, fp8_gemm_inputs, rel_fro_error

    on_gpu = torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)
    if on_gpu:
        shapes = [(m, n, k) for m in (128, 4096) for n, k in ((2112, 7168), (7168, 2048), (4096, 7168))]
        dev = "cuda"
        print(f"Running FP8 GEMMs on {torch.cuda.get_device_name()} (DeepSeek-V3 shapes)")
    else:
        shapes = [(64, 256, 512), (33, 136, 384)]
        dev = "cpu"
        print("No Hopper GPU here: running the PyTorch reference path at small sizes (correct, not fast).")
    print(f"{'M':>6} {'N':>6} {'K':>6} {'rel err vs fp64':>16} {'calc_diff vs bf16':>18} {'time us':>9} {'TFLOP/s':>8}")
    ok = True
    for m, n, k in shapes:
        a, b, qa, qb = fp8_gemm_inputs(m, n, k, device=dev)
        d = torch.full((m, n), float("nan"), device=dev, dtype=torch.bfloat16)
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            deep_gemm.fp8_gemm_nt(qa, qb, d)
            ref = reference.fp8_gemm_nt(*qa, *qb, out_dtype=torch.float64, compute_dtype=torch.float64)
            err = rel_fro_error(d.double(), ref)
            diff = calc_diff(d.float(), a.float() @ b.float().T)
            if on_gpu:
                from .testing import bench_kineto
                sfa = deep_gemm.get_mn_major_tma_aligned_tensor(qa[1])
                t = bench_kineto(lambda: deep_gemm.fp8_gemm_nt((qa[0], sfa), qb, d), "fp8_gemm_kernel")
            else:
                start = time.perf_counter()
                deep_gemm.fp8_gemm_nt(qa, qb, d)
                t = time.perf_counter() - start
        good = err < 4e-3 and diff < 1e-3 and not torch.isnan(d).any()
        ok &= bool(good)
        print(f"{m:>6} {n:>6} {k:>6} {err:>16.2e} {diff:>18.2e} {t * 1e6:>9.1f} {2 * m * n * k / t / 1e12:>8.1f}"
              f"{'' if good else '  FAILED'}")
    print("all results match the reference" if ok else "MISMATCH against the reference")
    return 0 if ok else 1


def cmd_bench(args) -> int:
    try:
        from benchmarks.run import main as bench_main
    except ImportError:
        print("the benchmark suite lives in the repository's benchmarks/ folder: run from a checkout")
        return 2
    return bench_main(args.rest)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deep_gemm", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info", help="GPU, capability, driver/NVRTC/torch versions, kernel cache")
    sub.add_parser("demo", help="FP8 GEMMs on DeepSeek-V3 shapes checked against the reference")
    p = sub.add_parser("bench", help="benchmark against the peers (arguments go to benchmarks/run.py)")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p = sub.add_parser("cache", help="list or clear the kernel cache")
    p.add_argument("action", choices=("list", "clear"))
    p = sub.add_parser("precompile", help="compile the kernels a shape list needs into the cache (no GPU needed)")
    p.add_argument("--shapes", help="'M,N,K;M,N,K' (default: the DeepSeek-V3 benchmark set)")
    p.add_argument("--num-sms", type=int, help="plan for this many SMs (default: this GPU's, else 132)")
    p.add_argument("--jobs", type=int, help="parallel compiler processes (default: CPU count)")
    args = ap.parse_args(argv)
    return {"info": cmd_info, "demo": cmd_demo, "bench": cmd_bench, "cache": cmd_cache,
            "precompile": cmd_precompile}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
