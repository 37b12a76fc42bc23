"""CUDA C++ -> cubin for sm_90a, through NVRTC (default) or NVCC (DG_JIT_USE_NVCC=1).

Both paths produce a `CompiledKernel`: the cubin, the mangled symbol of the one kernel the source
instantiates, the compiler log and the resource usage that ptxas reported.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from .. import envs

INCLUDE_DIR = Path(__file__).resolve().parent.parent / "include"
ARCH = "sm_90a"


class CompileError(RuntimeError):
    """The device compiler rejected a kernel; the message carries the kernel name and the full log."""


@dataclasses.dataclass(frozen=True)
class CompiledKernel:
    name: str              # human-readable kernel name (family + config)
    symbol: str            # mangled entry point inside the cubin
    cubin: bytes
    log: str
    resources: dict        # registers, spill_stores, spill_loads, stack_frame, smem (from ptxas -v)
    compile_seconds: float
    compiler: str


def _base_options() -> list[str]:
    opts = [f"--gpu-architecture={ARCH}", "-std=c++17", f"--include-path={INCLUDE_DIR}",
            "--ptxas-options=--verbose", "-DNDEBUG",
            "-default-device"]   # NVRTC 13.0 treats unannotated lambdas as host code otherwise
    if envs.jit_lineinfo():
        opts.append("-lineinfo")
    return opts


@functools.lru_cache(maxsize=None)
def compiler_identity() -> str:
    """Names the compiler and its version; part of every cache key."""
    if envs.jit_use_nvcc():
        out = subprocess.run([_nvcc_path(), "--version"], capture_output=True, text=True, check=True).stdout
        return "nvcc " + out.strip().splitlines()[-1]
    from cuda.bindings import nvrtc
    major, minor = _nvrtc_check(nvrtc.nvrtcVersion(), "nvrtcVersion")
    return f"nvrtc {major}.{minor}"


def option_fingerprint() -> str:
    return " ".join(_base_options())


@functools.lru_cache(maxsize=None)
def include_fingerprint() -> str:
    """Hash of every header the kernels may include, so editing a .cuh invalidates the cache."""
    h = hashlib.sha256()
    for path in sorted(INCLUDE_DIR.rglob("*.cuh")):
        h.update(str(path.relative_to(INCLUDE_DIR)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def compile_kernel(name: str, source: str, kernel_expr: str) -> CompiledKernel:
    """Compiles `source`, which must instantiate exactly the kernel named by `kernel_expr`
    (a C++ expression such as `&deep_gemm::tma_copy_kernel`)."""
    start = time.perf_counter()
    if envs.jit_use_nvcc():
        cubin, log, symbol = _compile_nvcc(name, source, kernel_expr)
    else:
        cubin, log, symbol = _compile_nvrtc(name, source, kernel_expr)
    seconds = time.perf_counter() - start
    kernel = CompiledKernel(name=name, symbol=symbol, cubin=cubin, log=log, resources=parse_ptxas_resources(log),
                            compile_seconds=seconds, compiler=compiler_identity())
    if envs.jit_debug():
        print(f"[deep_gemm] compiled {name} in {seconds:.2f} s with {kernel.compiler}: {kernel.resources}")
    if envs.jit_ptxas_verbose():
        print(log)
    return kernel


# --------------------------------------------------------------------------------------------- NVRTC
def _nvrtc_check(result, what: str, log: str = ""):
    from cuda.bindings import nvrtc
    err, *values = result
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise CompileError(f"{what} failed: {err}\n{log}")
    return values[0] if len(values) == 1 else tuple(values)


def _compile_nvrtc(name: str, source: str, kernel_expr: str) -> tuple[bytes, str, str]:
    from cuda.bindings import nvrtc
    options = _base_options()
    if envs.jit_debug():
        print(f"[deep_gemm] NVRTC {name}: {' '.join(options)}")
    prog = _nvrtc_check(nvrtc.nvrtcCreateProgram(source.encode(), f"{name}.cu".encode(), 0, [], []),
                        "nvrtcCreateProgram")
    try:
        _nvrtc_check(nvrtc.nvrtcAddNameExpression(prog, kernel_expr.encode()), "nvrtcAddNameExpression")
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(options), [o.encode() for o in options])
        log_size = _nvrtc_check(nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
        log_buf = b" " * log_size
        _nvrtc_check(nvrtc.nvrtcGetProgramLog(prog, log_buf), "nvrtcGetProgramLog")
        log = log_buf.rstrip(b"\x00 ").decode(errors="replace")
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise CompileError(f"NVRTC failed to compile kernel {name} ({err}).\nOptions: {' '.join(options)}\n"
                               f"Log:\n{log}")
        symbol = _nvrtc_check(nvrtc.nvrtcGetLoweredName(prog, kernel_expr.encode()), "nvrtcGetLoweredName")
        size = _nvrtc_check(nvrtc.nvrtcGetCUBINSize(prog), "nvrtcGetCUBINSize")
        cubin = b" " * size
        _nvrtc_check(nvrtc.nvrtcGetCUBIN(prog, cubin), "nvrtcGetCUBIN")
        _maybe_dump(name, source, prog)
        return bytes(cubin), log, symbol.decode() if isinstance(symbol, bytes) else symbol
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def _maybe_dump(name: str, source: str, prog) -> None:
    dump_dir = envs.jit_dump_dir()
    if not dump_dir:
        return
    from cuda.bindings import nvrtc
    out = Path(dump_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.cu").write_text(source)
    size = _nvrtc_check(nvrtc.nvrtcGetPTXSize(prog), "nvrtcGetPTXSize")
    ptx = b" " * size
    _nvrtc_check(nvrtc.nvrtcGetPTX(prog, ptx), "nvrtcGetPTX")
    (out / f"{name}.ptx").write_bytes(ptx.rstrip(b"\x00"))


# --------------------------------------------------------------------------------------------- NVCC
def _nvcc_path() -> str:
    path = os.environ.get("DG_JIT_NVCC_PATH") or shutil.which("nvcc")
    if not path:
        raise CompileError("DG_JIT_USE_NVCC is set but no nvcc was found (set DG_JIT_NVCC_PATH)")
    return path


def _compile_nvcc(name: str, source: str, kernel_expr: str) -> tuple[bytes, str, str]:
    with tempfile.TemporaryDirectory(prefix="deep_gemm_") as tmp:
        src, out = Path(tmp) / f"{name}.cu", Path(tmp) / f"{name}.cubin"
        # NVCC has no name expressions: take the address of the kernel so it is instantiated.
        src.write_text(source + f"\nstatic const void* __dg_instantiate = (const void*)({kernel_expr});\n")
        cmd = [_nvcc_path(), "-cubin", "-gencode=arch=compute_90a,code=sm_90a", "-std=c++17", f"-I{INCLUDE_DIR}",
               "-Xptxas", "-v", "-DNDEBUG", "--expt-relaxed-constexpr", "--extended-lambda", "-o", str(out), str(src)]
        if envs.jit_lineinfo():
            cmd.append("-lineinfo")
        if envs.jit_debug():
            print(f"[deep_gemm] NVCC {name}: {' '.join(cmd)}")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        log = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise CompileError(f"NVCC failed to compile kernel {name}.\nCommand: {' '.join(cmd)}\nLog:\n{log}")
        cubin = out.read_bytes()
    symbols = kernel_symbols(cubin)
    if len(symbols) != 1:
        raise CompileError(f"expected one kernel in the cubin of {name}, found {symbols}")
    return cubin, log, symbols[0]


def kernel_symbols(cubin: bytes) -> list[str]:
    """Entry points of a cubin: the ELF sections named `.text.<symbol>`."""
    if cubin[:4] != b"\x7fELF" or cubin[4] != 2:
        raise CompileError("not a 64-bit ELF cubin")
    shoff, = struct.unpack_from("<Q", cubin, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", cubin, 0x3A)
    strtab_off, = struct.unpack_from("<Q", cubin, shoff + shstrndx * shentsize + 0x18)
    names = []
    for i in range(shnum):
        name_off, = struct.unpack_from("<I", cubin, shoff + i * shentsize)
        end = cubin.index(b"\x00", strtab_off + name_off)
        section = cubin[strtab_off + name_off:end].decode()
        if section.startswith(".text."):
            names.append(section[len(".text."):])
    return names


# --------------------------------------------------------------------------------------------- ptxas report
_REGS = re.compile(r"Used (\d+) registers")
_SPILLS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas_resources(log: str) -> dict:
    """Resource usage of the (single) kernel from `ptxas --verbose` output."""
    res = {"registers": None, "stack_frame": None, "spill_stores": None, "spill_loads": None, "static_smem": None}
    if m := _REGS.search(log):
        res["registers"] = int(m.group(1))
    if m := _SPILLS.search(log):
        res["stack_frame"], res["spill_stores"], res["spill_loads"] = map(int, m.groups())
    if m := _SMEM.search(log):
        res["static_smem"] = int(m.group(1))
    return res
