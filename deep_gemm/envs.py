"""Environment switches, read at call time so tests and users can flip them without re-importing.

| variable | effect |
|---|---|
| DG_JIT_CACHE_DIR | kernel cache directory (default ~/.cache/deep_gemm) |
| DG_JIT_USE_NVCC | compile with nvcc instead of NVRTC (DG_JIT_NVCC_PATH picks the binary) |
| DG_JIT_DEBUG | print compile commands, compile times and resource usage |
| DG_JIT_PTXAS_VERBOSE | print the full ptxas report of each compiled kernel |
| DG_JIT_DUMP_DIR | write the generated .cu and .ptx of each compiled kernel there |
| DG_JIT_LINEINFO | compile with -lineinfo (for profilers) |
| DG_PRINT_CONFIGS | print the config the heuristic chose for each new shape |
| DG_DISABLE_CPU_FALLBACK | raise instead of running the reference path when no Hopper GPU is usable |
| DG_BENCH_L2_FLUSH_BYTES | bytes the benchmark timers zero before each call to flush L2 (default 8e9, as DeepGEMM's harness) |
"""
import os


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() not in ("", "0", "false", "no", "off")


def jit_cache_dir() -> str:
    return os.environ.get("DG_JIT_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "deep_gemm")


def jit_use_nvcc() -> bool:
    return _flag("DG_JIT_USE_NVCC")


def jit_debug() -> bool:
    return _flag("DG_JIT_DEBUG")


def jit_ptxas_verbose() -> bool:
    return _flag("DG_JIT_PTXAS_VERBOSE")


def jit_dump_dir() -> str:
    return os.environ.get("DG_JIT_DUMP_DIR", "")


def jit_lineinfo() -> bool:
    return _flag("DG_JIT_LINEINFO")


def print_configs() -> bool:
    return _flag("DG_PRINT_CONFIGS")


def disable_cpu_fallback() -> bool:
    return _flag("DG_DISABLE_CPU_FALLBACK")
