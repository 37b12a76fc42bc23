"""GPU timing: CUDA events or profiler (kineto) kernel time, with the L2 cache flushed between runs.

Everything here depends on torch only, so the benchmark suite can load this file even when the rest
of the package is half-built, and importing it on a machine without a GPU is harmless (only calling
a timer needs CUDA).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import warnings
from collections import Counter
from typing import Callable, Iterable, Sequence

import torch

__all__ = [
    "HOST_LEAD_CYCLES",
    "L2_FLUSH_BYTES",
    "MIN_L2_FLUSH_BYTES",
    "Timer",
    "bench",
    "bench_kineto",
    "bench_kineto_total",
    "effective_l2_flush_bytes",
    "fit_flush_bytes",
    "l2_flush",
    "l2_flush_bytes",
    "summarize",
]

# Before each timed call the L2 is flushed by zeroing a buffer much larger than the 50 MB L2. The
# default size is DeepGEMM's: its harness (the one behind DESIGN.md's DeepGEMM figures) zeroes 8 GB
# before every call, about 2 ms of memory-bound work. On a power-capped H200 that matters for long
# kernels: in one run 4096x7168x16384 measured 1358 TFLOP/s after 8 GB flushes and 1218 after 256 MB
# ones, while kernels under ~0.2 ms did not move (benchmarks/NOTES.md, session 7). Figures compared
# with DeepGEMM's must be timed the same way; DG_BENCH_L2_FLUSH_BYTES=256e6 gives back-to-back ones.
L2_FLUSH_BYTES = int(8e9)
# The least that still evicts every line of a 50 MB L2 several times over.
MIN_L2_FLUSH_BYTES = int(256e6)

_flush_buffers: dict[int, tuple[int, torch.Tensor]] = {}   # device -> (requested bytes, buffer)


def _require_cuda(what: str) -> None:
    if not torch.cuda.is_available():
        raise RuntimeError(f"{what} needs a CUDA device, but torch.cuda.is_available() is False")


def l2_flush_bytes() -> int:
    """Requested flush size: DG_BENCH_L2_FLUSH_BYTES (accepts 8e9-style floats) or L2_FLUSH_BYTES."""
    raw = os.environ.get("DG_BENCH_L2_FLUSH_BYTES", "").strip()
    if not raw:
        return L2_FLUSH_BYTES
    try:
        n = int(float(raw))
    except (ValueError, OverflowError):
        raise ValueError(f"DG_BENCH_L2_FLUSH_BYTES must be a byte count like 8e9 or 268435456, got {raw!r}") from None
    if n < MIN_L2_FLUSH_BYTES:
        raise ValueError(f"DG_BENCH_L2_FLUSH_BYTES={raw} is below {MIN_L2_FLUSH_BYTES} bytes, which would not "
                         "evict a Hopper L2")
    return n


def fit_flush_bytes(requested: int, free_bytes: int) -> int:
    """The flush size to allocate: the request, cut to a quarter of free memory (but at least
    MIN_L2_FLUSH_BYTES) so that timing never starves the GEMM's own tensors. Pure Python."""
    return max(MIN_L2_FLUSH_BYTES, min(int(requested), int(free_bytes) // 4)) // 4 * 4


def _flush_buffer() -> torch.Tensor:
    # One buffer per device, allocated once per requested size (a new size replaces the old buffer):
    # allocating per call would time the caching allocator and, on the first calls, cudaMalloc.
    dev = torch.cuda.current_device()
    requested = l2_flush_bytes()
    cached = _flush_buffers.get(dev)
    if cached is not None and cached[0] == requested:
        return cached[1]
    _flush_buffers.pop(dev, None)
    free, _ = torch.cuda.mem_get_info(dev)
    size = fit_flush_bytes(requested, free)
    if size < requested:
        warnings.warn(f"L2 flush: {requested / 1e9:.2f} GB requested, {size / 1e9:.2f} GB allocated "
                      f"({free / 1e9:.1f} GB free); long kernels may time slower than with the full flush")
    buf = torch.empty(size // 4, dtype=torch.int, device=torch.device("cuda", dev))
    _flush_buffers[dev] = (requested, buf)
    return buf


def effective_l2_flush_bytes() -> int:
    """Bytes each flush zeroes on the current device (allocates the buffer if needed)."""
    return _flush_buffer().numel() * 4


def l2_flush() -> None:
    """Evict the L2 cache of the current device by zeroing the flush buffer (asynchronous)."""
    _require_cuda("l2_flush")
    _flush_buffer().zero_()


def summarize(times_s: Sequence[float]) -> dict:
    """Median/mean/min/max/std of a list of durations in seconds (the median is the headline figure)."""
    times = [float(t) for t in times_s]
    if not times:
        raise ValueError("summarize: no timings")
    return {
        "median": statistics.median(times),
        "mean": statistics.fmean(times),
        "min": min(times),
        "max": max(times),
        "std": statistics.pstdev(times) if len(times) > 1 else 0.0,
        "num_tests": len(times),
        "times": times,
    }


class Timer:
    """Device time of the work enqueued inside a ``with`` block on the current (or given) stream.

    Only two events are recorded; nothing waits for the GPU until ``seconds`` is read, so many
    timers can be opened back to back and read after one synchronization::

        with Timer() as t:
            fn()
        print(t.seconds)
    """

    def __init__(self, stream: "torch.cuda.Stream | None" = None):
        _require_cuda("Timer")
        self._stream = stream
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)
        self._closed = False

    def __enter__(self) -> "Timer":
        self._start.record(self._stream)
        return self

    def __exit__(self, *exc) -> bool:
        self._end.record(self._stream)
        self._closed = True
        return False

    @property
    def seconds(self) -> float:
        if not self._closed:
            raise RuntimeError("Timer.seconds read before the with-block ended")
        self._end.synchronize()
        return self._start.elapsed_time(self._end) * 1e-3


# GPU work queued ahead of each start event (~0.5 ms at Hopper clocks). Without it a call whose host
# side is slower than the flush (cuBLASLt through torch: ~50 us of Python and heuristics) leaves the
# GPU idle between the start event and its kernel, and that idle time is counted as kernel time.
HOST_LEAD_CYCLES = int(1e6)


def _host_lead(cycles: int) -> None:
    sleep = getattr(torch.cuda, "_sleep", None)
    if sleep is not None and cycles > 0:
        sleep(int(cycles))


def bench(
    fn: Callable[[], object],
    num_warmups: int = 5,
    num_tests: int = 30,
    flush_l2: bool = True,
    host_lead_cycles: int = HOST_LEAD_CYCLES,
) -> dict:
    """Time ``fn`` with a pair of CUDA events around each call; returns seconds (median, mean, min, ...).

    The host only records events inside the timed loop and synchronizes once at the end. Before each
    start event the GPU gets an L2 flush and a short sleep kernel, so by the time it reaches the
    event the host has already enqueued fn: the time is the device's, not the launch latency.
    """
    _require_cuda("bench")
    if num_tests < 1:
        raise ValueError(f"bench: num_tests must be >= 1, got {num_tests}")
    for _ in range(num_warmups):
        fn()
    flush = _flush_buffer() if flush_l2 else None
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(num_tests)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(num_tests)]
    torch.cuda.synchronize()
    for start, end in zip(starts, ends):
        if flush is not None:
            flush.zero_()
        _host_lead(host_lead_cycles)
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return summarize([s.elapsed_time(e) * 1e-3 for s, e in zip(starts, ends)])


# --------------------------------------------------------------------------------------------------
# Profiler (kineto) timing


@contextlib.contextmanager
def _quiet(enabled: bool):
    """Silence kineto/CUPTI chatter, which is written by C++ straight to file descriptors 1 and 2."""
    if not enabled:
        yield
        return
    saved: list[int] = []
    devnull = None
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = [os.dup(1), os.dup(2)]
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
    except (OSError, ValueError, AttributeError):
        # No real descriptors (some notebooks, embedded interpreters): run unsilenced.
        for fd in saved:
            os.close(fd)
        saved = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if saved:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except Exception:
                pass
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
        if devnull is not None:
            os.close(devnull)


def _event_duration_us(evt) -> float:
    # Device events carry their device interval in time_range on every torch 2.x; the named
    # properties moved (cuda_time -> device_time) and mean different things on CPU events.
    tr = getattr(evt, "time_range", None)
    if tr is not None:
        return float(tr.end - tr.start)
    for attr in ("device_time", "cuda_time", "device_time_total", "cuda_time_total"):
        v = getattr(evt, attr, None)
        if v:
            return float(v)
    return 0.0


def _event_start_us(evt) -> float:
    tr = getattr(evt, "time_range", None)
    return float(tr.start) if tr is not None else 0.0


def _is_device_kernel(evt) -> bool:
    device_type = getattr(evt, "device_type", None)
    if device_type is None or str(device_type).split(".")[-1] == "CPU":
        return False
    if getattr(evt, "is_user_annotation", False):
        return False
    # GPU-side copies of record_function ranges (the profiler's own step markers) are not kernels.
    return not str(evt.name).startswith("ProfilerStep")


def _collect_kernels(
    fn: Callable[[], object], num_tests: int, flush_l2: bool, quiet: bool, trace_path: "str | None" = None
) -> list[tuple[str, float, float]]:
    """Run fn num_tests times under the profiler; return (name, start_us, duration_us) of every device op."""
    _require_cuda("bench_kineto")
    from torch.profiler import ProfilerActivity, profile, schedule

    flush = _flush_buffer() if flush_l2 else None
    torch.cuda.synchronize()
    with _quiet(quiet):
        # One warm-up round under the profiler (its first recorded launches are slower), then one
        # recorded round: the same schedule DeepGEMM's harness uses.
        prof = profile(activities=[ProfilerActivity.CUDA], schedule=schedule(wait=0, warmup=1, active=1, repeat=1))
        with prof:
            for _ in range(2):
                for _ in range(num_tests):
                    if flush is not None:
                        flush.zero_()
                    fn()
                torch.cuda.synchronize()
                prof.step()
        events = list(prof.events())
        if trace_path:
            prof.export_chrome_trace(str(trace_path))
    kernels = [(str(e.name), _event_start_us(e), _event_duration_us(e)) for e in events if _is_device_kernel(e)]
    kernels.sort(key=lambda k: k[1])
    return kernels


_flush_signature_cache: dict[int, dict[str, int]] = {}


def _flush_signature(quiet: bool) -> dict[str, int]:
    """Names (and per-call counts) of the device ops one l2_flush() launches; learned once per device."""
    dev = torch.cuda.current_device()
    sig = _flush_signature_cache.get(dev)
    if sig is None:
        reps = 4
        kernels = _collect_kernels(lambda: None, reps, flush_l2=True, quiet=quiet)
        counts = Counter(name for name, _, _ in kernels)
        sig = {name: c // reps for name, c in counts.items() if c % reps == 0 and c >= reps}
        if not sig:
            raise RuntimeError(f"bench_kineto: could not identify the L2 flush kernel among {dict(counts)}")
        _flush_signature_cache[dev] = sig
    return sig


def _stat(values: Sequence[float], statistic: str) -> float:
    if statistic == "mean":
        return statistics.fmean(values)
    if statistic == "median":
        return statistics.median(values)
    raise ValueError(f"statistic must be 'mean' or 'median', got {statistic!r}")


def kernel_times_from_events(
    kernels: Iterable[tuple],
    kernel_names: "str | Sequence[str]",
    with_multiple_kernels: bool = False,
    statistic: str = "mean",
) -> "float | tuple[float, ...]":
    """Per-launch time in seconds of the kernels whose name contains each of kernel_names.

    ``kernels`` holds (name, start_us, duration_us) or (name, duration_us) tuples. Pure Python so
    the matching rules are testable without a GPU.
    """
    single = isinstance(kernel_names, str)
    names = (kernel_names,) if single else tuple(kernel_names)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"kernel_names must be a non-empty str or a tuple of them, got {kernel_names!r}")
    rows = [(str(k[0]), float(k[-1])) for k in kernels]
    seen = sorted({n for n, _ in rows})
    out = []
    for name in names:
        matched = [(n, d) for n, d in rows if name in n]
        if not matched:
            listing = "\n  ".join(seen) if seen else "(none: did fn launch anything on the GPU?)"
            raise RuntimeError(f"bench_kineto: no profiled kernel name contains {name!r}; kernels seen:\n  {listing}")
        distinct = sorted({n for n, _ in matched})
        if len(distinct) > 1 and not with_multiple_kernels:
            listing = "\n  ".join(distinct)
            raise RuntimeError(
                f"bench_kineto: {len(distinct)} different kernels contain {name!r} (pass a more specific name, "
                f"or with_multiple_kernels=True to average over all of them):\n  {listing}"
            )
        out.append(_stat([d for _, d in matched], statistic) * 1e-6)
    return out[0] if single else tuple(out)


def bench_kineto(
    fn: Callable[[], object],
    kernel_names: "str | Sequence[str]",
    num_tests: int = 30,
    flush_l2: bool = True,
    suppress_kineto_output: bool = True,
    with_multiple_kernels: bool = False,
    statistic: str = "mean",
    trace_path: "str | None" = None,
) -> "float | tuple[float, ...]":
    """DeepGEMM-compatible profiler timing: seconds per launch of the kernels named (by substring).

    ``kernel_names`` is a str (returns a float) or a tuple of str (returns a tuple). Only the matching
    kernels are timed, so the L2 flush between runs and any other kernels fn launches are left out.
    ``statistic`` is "mean" (DeepGEMM's choice) or "median"; ``trace_path`` saves a Chrome trace.
    """
    fn()  # compile / autotune / allocate outside the profiled region
    kernels = _collect_kernels(fn, num_tests, flush_l2, suppress_kineto_output, trace_path)
    return kernel_times_from_events(kernels, kernel_names, with_multiple_kernels, statistic)


def split_iterations(
    kernels: Sequence[tuple[str, float, float]], flush_sig: dict[str, int], num_tests: int
) -> list[dict[str, float]]:
    """Group a sorted kernel trace into per-call buckets, using the flush ops as separators.

    Returns one {kernel name: summed duration_us} per call, flush ops removed. Pure Python.
    """
    per_call = sum(flush_sig.values())
    flush_rows = [k for k in kernels if k[0] in flush_sig]
    if len(flush_rows) != per_call * num_tests:
        raise RuntimeError(
            f"bench_kineto_total: expected {per_call * num_tests} L2-flush ops, found {len(flush_rows)} "
            "(does fn launch the same kernel as the flush?); time it with kernel names or flush_l2=False"
        )
    # Each call begins with its flush, so every per_call-th flush op opens a new bucket.
    bounds = [flush_rows[i][1] for i in range(0, len(flush_rows), per_call)]
    buckets: list[dict[str, float]] = [dict() for _ in range(num_tests)]
    b = 0
    for name, start, dur in kernels:
        if name in flush_sig:
            continue
        while b + 1 < len(bounds) and start >= bounds[b + 1]:
            b += 1
        buckets[b][name] = buckets[b].get(name, 0.0) + dur
    return buckets


def bench_kineto_total(
    fn: Callable[[], object],
    num_tests: int = 30,
    flush_l2: bool = True,
    suppress_kineto_output: bool = True,
) -> dict:
    """Profiler timing of everything fn launches: per call, the summed device time of its kernels.

    For callers that don't know their kernels' names (cuBLAS, a JIT whose names change). Gaps between
    kernels are not counted, as with bench_kineto. Returns seconds like ``bench`` (median, mean, min,
    ...) plus ``kernels``: {name: launches per call}.
    """
    _require_cuda("bench_kineto_total")
    fn()
    flush_sig = _flush_signature(suppress_kineto_output) if flush_l2 else {}
    kernels = _collect_kernels(fn, num_tests, flush_l2, suppress_kineto_output)
    if flush_l2:
        buckets = split_iterations(kernels, flush_sig, num_tests)
        per_call = [sum(b.values()) * 1e-6 for b in buckets]
        result = summarize(per_call)
    else:
        # Without separators only the total is known: report the mean for every statistic.
        mean = sum(d for _, _, d in kernels) * 1e-6 / num_tests
        result = summarize([mean] * num_tests)
    counts = Counter(name for name, _, _ in kernels if name not in flush_sig)
    result["kernels"] = {name: c / num_tests for name, c in counts.items()}
    if not counts:
        raise RuntimeError("bench_kineto_total: fn launched no GPU work under the profiler")
    return result
