"""Ahead-of-time compilation into the kernel cache, without a GPU.

`python -m deep_gemm precompile` builds every kernel the heuristic would pick for a shape list so a
deployment image ships warm, reports each kernel's resources, and fails if any kernel spills or
uses local memory (the CI check for every configuration we ship).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import time

DEFAULT_NK = [(2112, 7168), (576, 7168), (7168, 576), (24576, 1536), (32768, 512), (7168, 16384), (4096, 7168),
              (7168, 2048)]
DEFAULT_SHAPES = [(m, n, k) for m in (64, 128, 4096) for n, k in DEFAULT_NK]
# MoE grouped problems (kind, rows, N, K, experts): contiguous rows = all experts' 128-aligned rows,
# masked rows = the expected rows per expert.
GROUPED_NK = [(4096, 7168), (7168, 2048), (6144, 7168), (7168, 3072)]
DEFAULT_GROUPED = ([("contiguous", g * -(-rows // 128) * 128, n, k, g) for g, rows in ((4, 8192), (8, 4096), (32, 256),
                                                                                     (256, 16)) for n, k in GROUPED_NK]
                   + [("masked", rows, n, k, g) for g, rows in ((1, 1024), (2, 512), (4, 256), (32, 192), (6, 20),
                                                              (32, 20)) for n, k in GROUPED_NK])


def parse_shapes(text: str) -> list[tuple[int, int, int]]:
    shapes = []
    for item in text.replace(" ", "").split(";"):
        if not item:
            continue
        parts = item.split(",")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise ValueError(f"--shapes: expected 'M,N,K;M,N,K', got item {item!r}")
        shapes.append(tuple(int(p) for p in parts))
    if not shapes:
        raise ValueError("--shapes: no shapes given")
    return shapes


@dataclasses.dataclass
class BuildReport:
    name: str
    registers: int | None
    spill_bytes: int
    stack_frame: int
    smem_bytes: int
    seconds: float
    cached: bool
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and self.spill_bytes == 0 and self.stack_frame == 0


def _build_one(cfg, k: int) -> BuildReport:
    from . import cache
    from .compiler import compiler_identity, include_fingerprint, option_fingerprint
    start = time.perf_counter()
    key = cache.make_key(compiler_identity(), option_fingerprint(), include_fingerprint(), cfg.kernel_expr(),
                         cfg.source())
    cached = cache.load(key) is not None
    try:
        kernel = cfg.build()
    except Exception as exc:  # report every failure, keep building the rest
        return BuildReport(cfg.kernel_name(), None, 0, 0, 0, time.perf_counter() - start, cached, str(exc)[:2000])
    r = kernel.resources
    return BuildReport(cfg.kernel_name(), r.get("registers"), (r.get("spill_stores") or 0) + (r.get("spill_loads") or 0),
                       r.get("stack_frame") or 0, cfg.smem_bytes(k), time.perf_counter() - start, cached)


def configs_for(shapes, num_sms: int, out_f32: bool = False, reports: dict | None = None, grouped=()):
    """(config, K) for each distinct kernel the heuristic picks for `shapes` (dense M, N, K) and
    `grouped` ((kind, rows, N, K, experts)): the same pick the library makes at run time, which
    compiles candidates until one has no spills. When `reports` is given, each kernel compiled on
    the way is recorded there by name."""
    from ..heuristics.fp8_gemm import first_without_spills, ranked_configs
    from ..kernels.fp8_gemm import EPI_TMA_STORE, KIND_CONTIGUOUS, KIND_DENSE, KIND_MASKED, with_tail_boxes

    def build(cfg):
        report = _build_one(cfg, 0)
        if reports is not None and cfg.kernel_name() not in reports:
            reports[cfg.kernel_name()] = report
        if report.error:
            raise RuntimeError(report.error)
        return cfg.build()   # a cache hit now

    problems = [(KIND_DENSE, m, n, k, 1) for m, n, k in shapes]
    kinds = {"contiguous": KIND_CONTIGUOUS, "masked": KIND_MASKED}
    problems += [(kinds[kind], m, n, k, g) for kind, m, n, k, g in grouped]
    seen = {}
    for kind, m, n, k, g in problems:
        picked = first_without_spills(ranked_configs(m, n, k, out_f32, EPI_TMA_STORE, num_sms, kind, g), build)
        # The variant Fp8GemmPlan will launch. A masked call's M_max is the size of the caller's
        # buffer, not the expected rows, so both variants that the expected rows allow.
        variants = [with_tail_boxes(picked, m, n)]
        if kind == KIND_MASKED:
            variants.append(with_tail_boxes(picked, 128 * -(-m // 128), n))
        for cfg in variants:
            name = cfg.kernel_name()
            if name not in seen or k > seen[name][1]:
                seen[name] = (cfg, k)
    return list(seen.values())


def build_all(configs_and_k, jobs: int | None = None) -> list[BuildReport]:
    jobs = jobs or min(len(configs_and_k), os.cpu_count() or 1) or 1
    if jobs == 1:
        return [_build_one(cfg, k) for cfg, k in configs_and_k]
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(_build_one, *zip(*configs_and_k)))


def run(shapes, num_sms: int, jobs: int | None = None, out=print, grouped=()) -> int:
    start = time.perf_counter()
    first_builds: dict[str, BuildReport] = {}
    pairs = configs_for(shapes, num_sms, reports=first_builds, grouped=grouped)
    reports = build_all(pairs, jobs)
    for rep in reports:   # report the compile that actually happened, not the cache hit after it
        first = first_builds.get(rep.name)
        if first is not None and not rep.error:
            rep.seconds, rep.cached = first.seconds, first.cached
    out(f"{'kernel':<44} {'regs':>5} {'spill B':>8} {'stack B':>8} {'smem B':>8} {'seconds':>8}  status")
    for rep in reports:
        status = "ok" if rep.ok else (rep.error.splitlines()[0] if rep.error else "SPILLS / LOCAL MEMORY")
        out(f"{rep.name:<44} {rep.registers if rep.registers is not None else '-':>5} {rep.spill_bytes:>8} "
            f"{rep.stack_frame:>8} {rep.smem_bytes:>8} {rep.seconds:>8.2f}  {'cached' if rep.cached else 'built'}, {status}")
    bad = [r for r in reports if not r.ok]
    out(f"{len(reports)} kernels for {len(shapes) + len(grouped)} problems in {time.perf_counter() - start:.1f} s; "
        f"{len(bad)} failed")
    for rep in bad:
        if rep.error:
            out(f"--- {rep.name}\n{rep.error}")
    return 1 if bad else 0
