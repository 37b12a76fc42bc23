"""Helpers for testing and benchmarking deep_gemm (one import line per submodule)."""

from .bench import Timer, bench, bench_kineto, bench_kineto_total, l2_flush
from .inputs import fp8_gemm_inputs
from .numeric import calc_diff, count_bytes, rel_fro_error

__all__ = ["Timer", "bench", "bench_kineto", "bench_kineto_total", "l2_flush", "calc_diff", "count_bytes", "rel_fro_error", "fp8_gemm_inputs"]
