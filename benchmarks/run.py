"""Benchmark deep_gemm's FP8 GEMM against its peers on DeepSeek-V3 shapes, on the card at hand.

    python -m benchmarks.run                      # 24 shapes x 5 peers, a few minutes at most
    python -m benchmarks.run --quick              # 6 shapes, fewer repetitions
    python -m benchmarks.run --shapes "64,2112,7168;4096,7168,2048" --peers deep_gemm,scaled_mm_block
    python -m deep_gemm bench [same options]      # calls main(argv)

Writes results/<date>_<card>.json, .md and .png (the plot needs matplotlib) and prints the Markdown
table last. A peer that fails on a shape is recorded with its error and the run goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import importlib
import importlib.util
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Iterable, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: make `benchmarks` and `deep_gemm` importable
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from benchmarks import peers as peers_mod  # noqa: E402

PEAK_FP8_TFLOPS = 1979.0  # H100/H200 SXM dense FP8, datasheet
DSV3_NK: tuple[tuple[int, int], ...] = (
    (2112, 7168),
    (576, 7168),
    (7168, 576),
    (24576, 1536),
    (32768, 512),
    (7168, 16384),
    (4096, 7168),
    (7168, 2048),
)
DSV3_M: tuple[int, ...] = (64, 128, 4096)
QUICK_M: tuple[int, ...] = (64, 4096)
QUICK_NK: tuple[tuple[int, int], ...] = ((2112, 7168), (24576, 1536), (7168, 2048))
MEMORY_BOUND_MAX_M = 128  # up to here a GEMM is judged by bytes/s against the copy bandwidth
DEFAULT_RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"


# --------------------------------------------------------------------------------------------------
# Shapes and accounting (pure, tested on CPU)


def default_shapes() -> list[tuple[int, int, int]]:
    return [(m, n, k) for m in DSV3_M for n, k in DSV3_NK]


def quick_shapes() -> list[tuple[int, int, int]]:
    return [(m, n, k) for m in QUICK_M for n, k in QUICK_NK]


def parse_shapes(text: str) -> list[tuple[int, int, int]]:
    """"M,N,K;M,N,K" (x also separates) -> [(M, N, K), ...]."""
    shapes = []
    for part in re.split(r"[;\n]", text):
        part = part.strip()
        if not part:
            continue
        fields = [f for f in re.split(r"[,x\s]+", part.lower()) if f]
        if len(fields) != 3:
            raise ValueError(f"shape {part!r}: expected three integers M,N,K")
        try:
            m, n, k = (int(f) for f in fields)
        except ValueError:
            raise ValueError(f"shape {part!r}: M, N and K must be integers") from None
        if min(m, n, k) <= 0:
            raise ValueError(f"shape {part!r}: M, N and K must be positive")
        shapes.append((m, n, k))
    if not shapes:
        raise ValueError(f"no shapes in {text!r}")
    return shapes


def parse_peers(text: "str | None", known: Iterable[str] = None) -> list[str]:
    known = list(known if known is not None else peers_mod.PEERS)
    if not text:
        return [p for p in peers_mod.DEFAULT_PEERS if p in known]
    if text.strip() == "all":
        return known
    names = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in names if p not in known]
    if unknown:
        raise ValueError(f"unknown peer(s) {unknown}; known: {', '.join(known)}")
    return list(dict.fromkeys(names))


def gemm_flops(m: int, n: int, k: int) -> int:
    return 2 * m * n * k


def gemm_bytes(m: int, n: int, k: int, elem_bytes: float = 1, out_bytes: float = 2) -> float:
    """Bytes a GEMM must move at least once: A and B in their own dtype, D in bf16. Scales left out
    (1/32 of A's bytes at most)."""
    return (m * k + n * k) * elem_bytes + m * n * out_bytes


def roofline_tflops(m: int, n: int, k: int, copy_bw_Bps: "float | None", peak_tflops: float = PEAK_FP8_TFLOPS) -> float:
    """min(FP8 peak, arithmetic intensity x measured copy bandwidth), with FP8 inputs and bf16 output."""
    if not copy_bw_Bps:
        return peak_tflops
    ai = gemm_flops(m, n, k) / gemm_bytes(m, n, k, 1, 2)
    return min(peak_tflops, ai * copy_bw_Bps / 1e12)


def card_short_name(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'H100'; falls back to a filename-safe form of the whole name."""
    for token in re.split(r"[\s_-]+", name or ""):
        if re.fullmatch(r"[A-Za-z]{1,3}\d{2,4}[A-Za-z]?", token) and not re.fullmatch(r"\d+GB", token, re.I):
            return token.upper()
    safe = re.sub(r"[^A-Za-z0-9]+", "-", name or "").strip("-")
    return safe or "unknown-gpu"


def cell_metrics(m: int, n: int, k: int, time_s: float, elem_bytes: float, copy_bw_Bps: "float | None") -> dict:
    out = {
        "time_us": time_s * 1e6,
        "tflops": gemm_flops(m, n, k) / time_s / 1e12,
        "gbps": gemm_bytes(m, n, k, elem_bytes, 2) / time_s / 1e9,
    }
    if m <= MEMORY_BOUND_MAX_M and copy_bw_Bps:
        out["copy_bw_frac"] = out["gbps"] * 1e9 / copy_bw_Bps
    return out


def speedups(cells: dict, ours: str = "deep_gemm") -> dict:
    """peer time / our time for every peer that ran (> 1: ours is faster)."""
    mine = cells.get(ours, {})
    if mine.get("status") != "ok":
        return {}
    return {
        p: c["time_us"] / mine["time_us"]
        for p, c in cells.items()
        if p != ours and c.get("status") == "ok" and c.get("time_us")
    }


# --------------------------------------------------------------------------------------------------
# Writers (pure, tested on CPU)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if x is None or isinstance(x, (bool, int, str)):
        return x
    return str(x)


def write_json(result: dict, path: "str | Path") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(result), indent=1) + "\n")
    return path


def _fmt(x: "float | None", digits: int = 0) -> str:
    if x is None:
        return "—"
    if digits == 0 and abs(x) < 100:
        return f"{x:.1f}"
    return f"{x:.{digits}f}"


def _cell_text(cell: "dict | None", key: str, digits: int = 0) -> str:
    if not cell:
        return "—"
    status = cell.get("status")
    if status == "ok":
        return _fmt(cell.get(key), digits)
    return {"unavailable": "n/a", "failed": "WRONG", "error": "error"}.get(status, "—")


def render_markdown(result: dict) -> str:
    card = result.get("card", {})
    peers = result.get("peers", [])
    labels = {p: result.get("peer_labels", {}).get(p, peers_mod.label(p)) for p in peers}
    shapes = result.get("shapes", [])
    sysm = result.get("system", {})
    timer = result.get("timer", {})
    lines = [f"# deep_gemm FP8 GEMM benchmark on {card.get('name', 'unknown GPU')}", ""]
    meta = [
        f"{result.get('date', '?')}",
        f"torch {result.get('versions', {}).get('torch', '?')}",
        f"CUDA {result.get('versions', {}).get('cuda', '?')}",
        f"driver {card.get('driver') or '?'}",
        f"{card.get('sm_count', '?')} SMs",
        f"serial {card.get('serial') or '?'}",
    ]
    lines.append(" · ".join(meta))
    per_peer = timer.get("per_peer", {})
    methods = ", ".join(f"{labels.get(p, p)}: {per_peer.get(p, '?')}" for p in peers)
    lines.append(
        f"Timing: median of {result.get('settings', {}).get('num_tests', '?')} runs, L2 flushed before each "
        f"by {flush_text(timer.get('l2_flush_bytes'))} ({methods}; events = CUDA events around the call, "
        "kineto = profiler kernel time)."
    )
    copy = sysm.get("copy_bw_GBps")
    mm = sysm.get("bf16_matmul_tflops")
    lines.append(
        f"Measured copy bandwidth {_fmt(copy / 1e3, 2) + ' TB/s' if copy else 'n/a'} (read + write) · "
        f"BF16 matmul 8192³ {_fmt(mm) + ' TFLOP/s' if mm else 'n/a'} · FP8 dense peak "
        f"{result.get('peak_fp8_tflops', PEAK_FP8_TFLOPS):.0f} TFLOP/s (datasheet)"
    )
    lines.append("Cells: n/a = peer not available here · WRONG = ran but failed the check against the float32 "
                 "reference, so not timed · error = raised (see the end).")
    lines += ["", "## TFLOP/s", ""]
    lines.append("| M | N | K | roofline | " + " | ".join(labels[p] for p in peers) + " |")
    lines.append("|---|---|---|---|" + "---|" * len(peers))
    for s in shapes:
        cells = s.get("cells", {})
        row = [str(s["M"]), str(s["N"]), str(s["K"]), _fmt(s.get("roofline_tflops"))]
        row += [_cell_text(cells.get(p), "tflops") for p in peers]
        lines.append("| " + " | ".join(row) + " |")

    lines += ["", "## Time (µs)", ""]
    lines.append("| M | N | K | " + " | ".join(labels[p] for p in peers) + " |")
    lines.append("|---|---|---|" + "---|" * len(peers))
    for s in shapes:
        cells = s.get("cells", {})
        row = [str(s["M"]), str(s["N"]), str(s["K"])] + [_cell_text(cells.get(p), "time_us", 1) for p in peers]
        lines.append("| " + " | ".join(row) + " |")

    small = [s for s in shapes if s["M"] <= MEMORY_BOUND_MAX_M]
    if small:
        lines += ["", f"## Memory-bound shapes (M ≤ {MEMORY_BOUND_MAX_M}): GB/s (fraction of copy bandwidth)", ""]
        lines.append("| M | N | K | " + " | ".join(labels[p] for p in peers) + " |")
        lines.append("|---|---|---|" + "---|" * len(peers))
        for s in small:
            cells = s.get("cells", {})
            row = [str(s["M"]), str(s["N"]), str(s["K"])]
            for p in peers:
                c = cells.get(p)
                text = _cell_text(c, "gbps")
                if c and c.get("status") == "ok" and c.get("copy_bw_frac") is not None:
                    text += f" ({c['copy_bw_frac'] * 100:.0f}%)"
                row.append(text)
            lines.append("| " + " | ".join(row) + " |")

    others = [p for p in peers if p != "deep_gemm"]
    if "deep_gemm" in peers and others and any(s.get("deep_gemm_speedup") for s in shapes):
        lines += ["", "## deep_gemm speedup (peer time / deep_gemm time; > 1 = deep_gemm faster)", ""]
        lines.append("| M | N | K | " + " | ".join(labels[p] for p in others) + " |")
        lines.append("|---|---|---|" + "---|" * len(others))
        for s in shapes:
            sp = s.get("deep_gemm_speedup", {})
            row = [str(s["M"]), str(s["N"]), str(s["K"])] + [f"{sp[p]:.2f}" if p in sp else "—" for p in others]
            lines.append("| " + " | ".join(row) + " |")

    ho = result.get("host_overhead", {})
    if ho.get("peers"):
        shape = ho.get("shape")
        lines += ["", f"## Host overhead per call (µs, GPU kept busy, shape {'x'.join(map(str, shape or []))})", ""]
        lines.append("| peer | median | mean | min |")
        lines.append("|---|---|---|---|")
        for p, h in ho["peers"].items():
            if h.get("error"):
                lines.append(f"| {labels.get(p, p)} | error | | |")
            else:
                lines.append(
                    f"| {labels.get(p, p)} | {h['median_us']:.1f} | {h['mean_us']:.1f} | {h['min_us']:.1f} |"
                )

    firsts = {
        p: max(
            (s["cells"][p].get("first_call_s") or 0.0)
            for s in shapes
            if s.get("cells", {}).get(p, {}).get("status") == "ok"
        )
        for p in peers
        if any(s.get("cells", {}).get(p, {}).get("status") == "ok" for s in shapes)
    }
    if firsts:
        lines += ["", "First call per shape, slowest (includes JIT compile / autotune): " + ", ".join(
            f"{labels.get(p, p)} {t:.2f} s" for p, t in firsts.items()
        )]

    # Group identical failures so "not built yet" does not print 24 times.
    problems: dict[tuple[str, str, str], list[str]] = {}
    for s in shapes:
        for p, c in s.get("cells", {}).items():
            if c.get("status") not in (None, "ok"):
                key = (p, c.get("status"), (c.get("error") or "")[:300])
                problems.setdefault(key, []).append(f"{s['M']}x{s['N']}x{s['K']}")
    if problems:
        lines += ["", "## Not measured", ""]
        for (p, status, err), where in problems.items():
            where_txt = "all shapes" if len(where) == len(shapes) else ", ".join(where)
            lines.append(f"- {labels.get(p, p)} ({status}, {where_txt}): {err.replace('|', '/').replace(chr(10), ' ')}")
    return "\n".join(lines) + "\n"


def write_markdown(result: dict, path: "str | Path", render=None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((render or render_markdown)(result))
    return path


def save_report(result: dict, stem: Path, tag: str, render=None) -> Path:
    """Writes <stem>.json and <stem>.md (rendered by `render`, default this benchmark's) and says so."""
    json_path = write_json(result, stem.with_suffix(".json"))
    md_path = write_markdown(result, stem.with_suffix(".md"), render)
    print(f"[{tag}] wrote {json_path} and {md_path} ({result['settings']['wall_s']} s)")
    return stem


def plot_results(result: dict, path: "str | Path") -> "tuple[Path | None, str]":
    """Bar chart of TFLOP/s per shape and peer with the roofline marked; (None, why) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:
        return None, f"plot skipped: matplotlib unavailable ({type(exc).__name__}: {exc})"
    shapes = result.get("shapes", [])
    peers = result.get("peers", [])
    if not shapes or not peers:
        return None, "plot skipped: no results"
    labels = {p: result.get("peer_labels", {}).get(p, peers_mod.label(p)) for p in peers}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(max(10.0, 0.75 * len(shapes) + 2), 5.5))
    width = 0.8 / len(peers)
    for i, p in enumerate(peers):
        xs, ys = [], []
        for j, s in enumerate(shapes):
            c = s.get("cells", {}).get(p, {})
            if c.get("status") == "ok" and c.get("tflops"):
                xs.append(j + (i - (len(peers) - 1) / 2) * width)
                ys.append(c["tflops"])
        if xs:
            ax.bar(xs, ys, width, label=labels[p])
    for j, s in enumerate(shapes):
        roof = s.get("roofline_tflops")
        if roof:
            ax.hlines(roof, j - 0.45, j + 0.45, colors="black", linestyles="--", linewidth=1.2,
                      label="roofline min(FP8 peak, AI x copy BW)" if j == 0 else None)
    ax.set_yscale("log")
    ax.set_ylabel("TFLOP/s")
    ax.set_xticks(range(len(shapes)))
    ax.set_xticklabels([f"{s['M']}x{s['N']}x{s['K']}" for s in shapes], rotation=60, ha="right", fontsize=8)
    ax.set_title(f"FP8 GEMM, {result.get('card', {}).get('name', 'GPU')} ({result.get('date', '')})")
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path, f"plot written to {path}"


def output_stem(out_dir: "str | Path", date: str, short: str) -> Path:
    """results/<date>_<card>, with -2, -3, ... when a run of the same day already wrote there."""
    out_dir = Path(out_dir)
    stem = out_dir / f"{date}_{short}"
    n = 2
    while stem.with_suffix(".json").exists() or stem.with_suffix(".md").exists():
        stem = out_dir / f"{date}_{short}-{n}"
        n += 1
    return stem


# --------------------------------------------------------------------------------------------------
# GPU measurements


def _load_bench():
    """deep_gemm.testing.bench, or the same file loaded by path if the package fails to import
    (the benchmark must run even while other parts of the package are broken)."""
    try:
        # import_module, not `from deep_gemm.testing import bench`: the package re-exports the
        # function bench under that name, which shadows the submodule.
        mod = importlib.import_module("deep_gemm.testing.bench")
        if hasattr(mod, "bench_kineto_total"):
            return mod
    except Exception:
        pass
    if "_deep_gemm_bench_standalone" in sys.modules:   # one copy: it holds the flush buffer
        return sys.modules["_deep_gemm_bench_standalone"]
    path = REPO_ROOT / "deep_gemm" / "testing" / "bench.py"
    spec = importlib.util.spec_from_file_location("_deep_gemm_bench_standalone", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _err_str(exc: BaseException, limit: int = 800) -> str:
    s = f"{type(exc).__name__}: {exc}".strip().replace("\n", " ")
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _where(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    return f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        try:
            torch.cuda.synchronize()
        except Exception:
            pass
        torch.cuda.empty_cache()


def _busy_gpu(cycles: int) -> None:
    sleep = getattr(torch.cuda, "_sleep", None)
    if sleep is not None:
        sleep(int(cycles))
        return
    x = torch.empty(4096, 4096, device="cuda", dtype=torch.bfloat16)
    for _ in range(max(1, int(cycles) // 200_000_000)):  # ~0.1 ms of tensor-core work each
        torch.matmul(x, x)


def host_overhead(fn: Callable[[], object], n: int = 2000, chunk: int = 200, sleep_cycles: int = int(1e8)) -> dict:
    """Host time to enqueue one call of fn, in µs, measured while the GPU is kept busy.

    A sleep kernel holds the GPU so fn's work queues up behind it and perf_counter sees only the
    host side. Calls go in chunks with a fresh sleep each: thousands of launches behind one sleep
    would fill the launch queue and the host would then wait for the GPU. A chunk whose sleep ran
    out before the host finished is redone with a longer sleep.
    """
    if not torch.cuda.is_available():
        raise RuntimeError("host_overhead needs a CUDA device")
    fn()
    torch.cuda.synchronize()
    per_call: list[float] = []
    remaining, cycles, retries, kept_busy = n, int(sleep_cycles), 0, True
    while remaining > 0:
        c = min(chunk, remaining)
        _busy_gpu(cycles)
        marker = torch.cuda.Event()
        marker.record()
        t0 = time.perf_counter()
        for _ in range(c):
            fn()
        t1 = time.perf_counter()
        drained = marker.query()
        torch.cuda.synchronize()
        if drained:
            if retries < 4:
                cycles *= 4
                retries += 1
                continue
            kept_busy = False
        per_call.append((t1 - t0) / c)
        remaining -= c
    us = [t * 1e6 for t in per_call]
    return {
        "n": n,
        "chunk": chunk,
        "median_us": statistics.median(us),
        "mean_us": statistics.fmean(us),
        "min_us": min(us),
        "gpu_kept_busy": kept_busy,
    }


def measure_copy_bandwidth(nbytes: int = 2 << 30, num_tests: int = 10) -> dict:
    """Device-to-device copy rate, bytes read + written per second (the memory roofline's slope)."""
    bench = _load_bench()
    src = torch.ones(nbytes // 4, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    try:
        s = bench.bench(lambda: dst.copy_(src), num_warmups=3, num_tests=num_tests, flush_l2=False)
    finally:
        del src, dst
        _free_memory()
    return {"bytes_copied": nbytes, "time_us": s["median"] * 1e6, "copy_bw_GBps": 2 * nbytes / s["median"] / 1e9}


def measure_bf16_matmul(n: int = 8192, num_tests: int = 10) -> dict:
    bench = _load_bench()
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    c = torch.empty(n, n, device="cuda", dtype=torch.bfloat16)
    try:
        s = bench.bench(lambda: torch.matmul(a, b, out=c), num_warmups=3, num_tests=num_tests, flush_l2=False)
    finally:
        del a, b, c
        _free_memory()
    return {"n": n, "time_us": s["median"] * 1e6, "bf16_matmul_tflops": 2 * n**3 / s["median"] / 1e12}


def _nvidia_smi(field: str, device: int) -> "str | None":
    """One --query-gpu field of the card that torch calls `device` (found by its UUID), or None."""
    try:
        uuid = str(torch.cuda.get_device_properties(device).uuid)
        r = subprocess.run(
            ["nvidia-smi", f"--id=GPU-{uuid}", f"--query-gpu={field}", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=15,
        )
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip().splitlines()[0].strip()
    except Exception:
        pass
    return None


def _driver_version(device: int = 0) -> "str | None":
    v = _nvidia_smi("driver_version", device)
    if v:
        return v
    try:
        import pynvml

        pynvml.nvmlInit()
        v = pynvml.nvmlSystemGetDriverVersion()
        return v.decode() if isinstance(v, bytes) else str(v)
    except Exception:
        return None


def _pkg_version(name: str) -> "str | None":
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


def card_info(device: int = 0) -> dict:
    props = torch.cuda.get_device_properties(device)
    name = torch.cuda.get_device_name(device)
    return {
        "name": name,
        "short_name": card_short_name(name),
        "capability": "%d.%d" % torch.cuda.get_device_capability(device),
        "sm_count": props.multi_processor_count,
        "memory_GiB": round(props.total_memory / 2**30, 1),
        "driver": _driver_version(device),
        # Cards of one model differ by a few % at the power cap, and a lent machine may be another
        # card each time: the serial says which one a result came from.
        "serial": _nvidia_smi("serial", device),
    }


def _versions() -> dict:
    dg = None
    try:
        import deep_gemm

        dg = getattr(deep_gemm, "__version__", None)
    except Exception:
        pass
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": _pkg_version("triton"),
        "deep_gemm": dg or _pkg_version("deep_gemm"),
        "python": platform.python_version(),
    }


def timer_for(peer: str, mode: str) -> str:
    if mode == "auto":
        return "kineto" if peer == "deep_gemm" else "events"
    return mode


def time_fn(fn, method: str, num_warmups: int, num_tests: int, kernel_name: "str | None" = None) -> dict:
    bench = _load_bench()
    if method == "events":
        return bench.bench(fn, num_warmups=num_warmups, num_tests=num_tests, flush_l2=True)
    if method != "kineto":
        raise ValueError(f"unknown timer {method!r}")
    for _ in range(num_warmups):
        fn()
    if kernel_name:
        t = bench.bench_kineto(fn, kernel_name, num_tests=num_tests, with_multiple_kernels=True, statistic="median")
        return {"median": t, "mean": t, "min": t, "kernels": {kernel_name: 1}}
    return bench.bench_kineto_total(fn, num_tests=num_tests, flush_l2=True)


@contextlib.contextmanager
def filing_errors(cell: dict):
    """Records a failing measurement in its cell instead of raising: unavailable (this torch lacks
    the peer), failed (it ran but disagreed with the reference), error (anything else, with where).
    KeyboardInterrupt still stops the run."""
    try:
        yield
    except peers_mod.PeerUnavailable as exc:
        cell["status"], cell["error"] = "unavailable", _err_str(exc)
    except peers_mod.PeerCheckFailed as exc:
        cell["status"], cell["error"] = "failed", _err_str(exc)
    except Exception as exc:
        cell["status"], cell["error"] = "error", _err_str(exc)
        cell["where"] = _where(exc)


def run_cell(peer: str, m: int, n: int, k: int, *, method: str, num_warmups: int, num_tests: int,
             copy_bw_Bps: "float | None", kernel_name: "str | None" = None, keep_fn: bool = False):
    """One (shape, peer) measurement; never raises (except KeyboardInterrupt). Returns (cell, fn|None)."""
    cell: dict = {"status": None, "method": method, "error": None}
    fn = None
    with filing_errors(cell):
        fn, info = peers_mod.PEERS[peer](m, n, k, "cuda")
        cell["info"] = info
        cell["first_call_s"] = info.get("first_call_s")
        stats = time_fn(fn, method, num_warmups, num_tests, kernel_name if peer == "deep_gemm" else None)
        cell["time_us_mean"] = stats["mean"] * 1e6
        cell["time_us_min"] = stats["min"] * 1e6
        if stats.get("kernels"):
            cell["kernels"] = {name[:160]: c for name, c in stats["kernels"].items()}
        cell.update(cell_metrics(m, n, k, stats["median"], info.get("elem_bytes", 1), copy_bw_Bps))
        cell["status"] = "ok"
    if cell["status"] != "ok" or not keep_fn:
        fn = None
    return cell, fn


def run_benchmark(shapes: Sequence[tuple[int, int, int]], peers: Sequence[str], *, timer: str = "auto",
                  num_warmups: int = 5, num_tests: int = 30, copy_bytes: int = 2 << 30,
                  host_overhead_mode: str = "all", host_overhead_n: int = 2000,
                  deep_gemm_kernel: "str | None" = None, log=print) -> dict:
    now = _dt.datetime.now()
    result: dict = {
        "schema": "deep_gemm.bench/1",
        "date": now.strftime("%Y-%m-%d"),
        "timestamp": now.isoformat(timespec="seconds"),
        "card": card_info(),
        "versions": _versions(),
        "peers": list(peers),
        "peer_labels": {p: peers_mod.label(p) for p in peers},
        "timer": {"requested": timer, "per_peer": {p: timer_for(p, timer) for p in peers},
                  "statistic": "median", "l2_flush_bytes": recorded_flush_bytes(),
                  "deep_gemm_kernel_filter": deep_gemm_kernel},
        "settings": {"num_warmups": num_warmups, "num_tests": num_tests},
        "peak_fp8_tflops": PEAK_FP8_TFLOPS,
        "system": {},
        "shapes": [],
    }
    sysm = result["system"]
    try:
        sysm.update(measure_copy_bandwidth(copy_bytes))
    except Exception as exc:
        sysm["copy_bw_error"] = _err_str(exc)
    try:
        sysm.update(measure_bf16_matmul())
    except Exception as exc:
        sysm["bf16_matmul_error"] = _err_str(exc)
    copy_bw = sysm.get("copy_bw_GBps", 0) * 1e9 or None
    log(f"[bench] {result['card']['name']}: copy {sysm.get('copy_bw_GBps', float('nan')):.0f} GB/s, "
        f"BF16 8192^3 {sysm.get('bf16_matmul_tflops', float('nan')):.0f} TFLOP/s")

    ho_shape = next((s for s in shapes if s[0] <= MEMORY_BOUND_MAX_M), shapes[0]) if shapes else None
    ho_peers = {"none": [], "deep_gemm": [p for p in peers if p == "deep_gemm"], "all": list(peers)}[host_overhead_mode]
    result["host_overhead"] = {"shape": list(ho_shape) if ho_shape else None, "n": host_overhead_n, "peers": {}}

    for m, n, k in shapes:
        t0 = time.perf_counter()
        rec = {"M": m, "N": n, "K": k, "flops": gemm_flops(m, n, k), "bytes_fp8": gemm_bytes(m, n, k, 1, 2),
               "roofline_tflops": roofline_tflops(m, n, k, copy_bw), "cells": {}}
        for p in peers:
            want_ho = (m, n, k) == ho_shape and p in ho_peers
            cell, fn = run_cell(p, m, n, k, method=timer_for(p, timer), num_warmups=num_warmups,
                                num_tests=num_tests, copy_bw_Bps=copy_bw, kernel_name=deep_gemm_kernel,
                                keep_fn=want_ho)
            if fn is not None:
                try:
                    result["host_overhead"]["peers"][p] = host_overhead(fn, n=host_overhead_n)
                except Exception as exc:
                    result["host_overhead"]["peers"][p] = {"error": _err_str(exc)}
            elif want_ho:
                result["host_overhead"]["peers"][p] = {"error": f"peer {cell['status']}"}
            fn = None
            rec["cells"][p] = cell
            _free_memory()
        rec["deep_gemm_speedup"] = speedups(rec["cells"])
        result["shapes"].append(rec)
        summary = "  ".join(
            f"{p}={c['tflops']:.0f}" if c["status"] == "ok" else f"{p}={c['status']}" for p, c in rec["cells"].items()
        )
        log(f"[bench] {m}x{n}x{k} ({time.perf_counter() - t0:.1f} s) TFLOP/s: {summary}")
    return result


# --------------------------------------------------------------------------------------------------
# CLI


def apply_flush_bytes(value: "str | None") -> None:
    """--l2-flush-bytes: checked here, then handed to the timer through its environment switch."""
    if value is None:
        return
    old = os.environ.get("DG_BENCH_L2_FLUSH_BYTES")
    os.environ["DG_BENCH_L2_FLUSH_BYTES"] = value
    try:
        _load_bench().l2_flush_bytes()
    except ValueError as exc:
        if old is None:
            os.environ.pop("DG_BENCH_L2_FLUSH_BYTES")
        else:
            os.environ["DG_BENCH_L2_FLUSH_BYTES"] = old
        raise ValueError(str(exc).replace("DG_BENCH_L2_FLUSH_BYTES", "--l2-flush-bytes")) from None


def recorded_flush_bytes() -> int:
    """The flush size the timers use here: what they allocate on a GPU, else what is requested."""
    bench = _load_bench()
    return bench.effective_l2_flush_bytes() if torch.cuda.is_available() else bench.l2_flush_bytes()


def flush_text(nbytes: "int | None") -> str:
    if not nbytes:
        return "zeroing a buffer of unrecorded size"
    return f"zeroing {nbytes / 1e9:.2f} GB" if nbytes >= 1e9 else f"zeroing {nbytes / 1e6:.0f} MB"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", help='"M,N,K;M,N,K" (default: DeepSeek-V3, M in 64/128/4096, 24 shapes)')
    ap.add_argument("--peers", help=f"comma-separated, or 'all' (default: {','.join(peers_mod.DEFAULT_PEERS)}; "
                                    f"known: {','.join(peers_mod.PEERS)})")
    ap.add_argument("--timer", choices=("auto", "events", "kineto"), default="auto",
                    help="auto (default): kineto for deep_gemm, CUDA events for the peers")
    ap.add_argument("--out", default=str(DEFAULT_RESULTS_DIR), help="results folder (default benchmarks/results)")
    ap.add_argument("--quick", action="store_true", help="6 shapes, fewer repetitions, smaller copy test")
    ap.add_argument("--num-tests", type=int, help="timed runs per cell (default 30, quick 10)")
    ap.add_argument("--num-warmups", type=int, help="untimed runs before timing (default 5, quick 2)")
    ap.add_argument("--host-overhead", choices=("none", "deep_gemm", "all"), default="all",
                    help="measure host enqueue time per call on the first M<=128 shape (default: all peers)")
    ap.add_argument("--deep-gemm-kernel", help="with kineto, time only deep_gemm kernels whose name contains this "
                                               "(default: all kernels it launches)")
    ap.add_argument("--l2-flush-bytes", help="bytes zeroed before each timed call (default 8e9, what DeepGEMM's "
                                             "harness zeroes; 256e6 gives back-to-back, power-capped figures)")
    ap.add_argument("--no-plot", action="store_true")
    return ap


def main(argv: "Sequence[str] | None" = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        apply_flush_bytes(args.l2_flush_bytes)
        shapes = parse_shapes(args.shapes) if args.shapes else (quick_shapes() if args.quick else default_shapes())
        peers = parse_peers(args.peers)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("error: the benchmark needs a CUDA GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    num_tests = args.num_tests or (10 if args.quick else 30)
    num_warmups = args.num_warmups if args.num_warmups is not None else (2 if args.quick else 5)
    t0 = time.perf_counter()
    result = run_benchmark(
        shapes, peers, timer=args.timer, num_warmups=num_warmups, num_tests=num_tests,
        copy_bytes=(512 << 20) if args.quick else (2 << 30),
        host_overhead_mode=args.host_overhead, host_overhead_n=400 if args.quick else 2000,
        deep_gemm_kernel=args.deep_gemm_kernel,
    )
    result["settings"]["wall_s"] = round(time.perf_counter() - t0, 1)
    result["settings"]["quick"] = bool(args.quick)
    stem = output_stem(args.out, result["date"], result["card"]["short_name"])
    save_report(result, stem, "bench")
    if not args.no_plot:
        try:
            _, msg = plot_results(result, stem.with_suffix(".png"))
        except Exception as exc:
            msg = f"plot failed: {_err_str(exc)}"
        print(f"[bench] {msg}")
    print()
    print(render_markdown(result), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
