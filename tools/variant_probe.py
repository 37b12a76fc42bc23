"""Times forced configs under experimental variants of the FP8 GEMM kernel, each in its own
process, package copy and JIT cache: the experiments behind benchmarks/NOTES.md, session 3.

    python3 tools/variant_probe.py --variants baseline,no_promotion,ffma_yield_all \\
        --shapes 1536,1408,65536 4096,4096,7168 \\
        --configs "Fp8GemmConfig(128,128,5,2,PAIR_M,pipelined=True)" "Fp8GemmConfig(128,128,5,2,PAIR_M)"

Variants (timing experiments only: some give wrong results on purpose):
  baseline        the kernel as it is
  no_promotion    the promotion FFMAs removed but one per slice and k-block (results wrong), which
                  keeps the wgmmas alive: what the main loop would cost if promotion were free
  ffma_yield_all  every promotion FFMA (runs of 8 or more) marked "may yield", operand reuse off
  ffma_no_yield   every promotion FFMA marked "do not yield"
  no_mma          the wgmmas not issued at all (results garbage): the memory pipeline, scale
                  reads, promotion and epilogue alone, i.e. what the kernel costs apart from math
  staggerN        at every tile start the second math warpgroup waits for the tile's first stage,
                  then spins N more cycles before its first wgmma: tests whether the two
                  warpgroups phase-lock (both promoting while the tensor cores idle)
  skew            the second math warpgroup starts each tile only once the first has finished the
                  tile's first k-block (bar.arrive / bar.sync): one warpgroup's epilogue then
                  overlaps the other's wgmmas, at the price of a stage of lookahead for the leader
  skewhalf        the same, from the end of the first warpgroup's first m64 slice
                  (both: serial kernels, K of at least 3 k-blocks: with fewer, the leader could
                  arrive twice before the other waits once)
The FFMA variants rewrite bit 45 (yield hint; 1 = stay on this warp) and bits 58-61 (operand
reuse) of the high word of each FFMA (opcode 0x223) in the cubin that NVRTC returns.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FFMA_OPCODE, YIELD_BIT, REUSE_BITS = 0x223, 1 << 45, 0xF << 58


def text_sections(cubin: bytes):
    """(offset, size) of every .text.* section of a 64-bit ELF cubin."""
    shoff, = struct.unpack_from("<Q", cubin, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", cubin, 0x3A)
    strtab, = struct.unpack_from("<Q", cubin, shoff + shstrndx * shentsize + 0x18)
    for i in range(shnum):
        base = shoff + i * shentsize
        name_off, = struct.unpack_from("<I", cubin, base)
        name = cubin[strtab + name_off:cubin.index(b"\0", strtab + name_off)]
        if name.startswith(b".text."):
            yield struct.unpack_from("<QQ", cubin, base + 0x18)


def rewrite_ffma_bits(cubin: bytes, may_yield: bool) -> bytes:
    out = bytearray(cubin)
    for off, size in text_sections(cubin):
        run = []
        for addr in list(range(off, off + size, 16)) + [None]:
            if addr is not None and struct.unpack_from("<Q", out, addr)[0] & 0xFFF == FFMA_OPCODE:
                run.append(addr)
                continue
            for a in (run if len(run) >= 8 else []):
                hi, = struct.unpack_from("<Q", out, a + 8)
                hi = (hi & ~YIELD_BIT & ~REUSE_BITS) if may_yield else (hi | YIELD_BIT)
                struct.pack_into("<Q", out, a + 8, hi)
            run = []
    return bytes(out)


def package_without_promotion(dst: Path) -> None:
    shutil.copytree(REPO / "deep_gemm", dst / "deep_gemm")
    path = dst / "deep_gemm" / "include" / "deep_gemm" / "fp8_gemm.cuh"
    # One FFMA per m64 slice and k-block stays (column group 0's first element): without a reader
    # of their results ptxas deletes the wgmmas too. (Until session 7 all four statements were
    # removed, and sessions 3 and 5 timed kernels with no wgmmas left.) The first k-block keeps
    # only that element too.
    anchor = "a[j * 4 + e] = INIT ? v : a[j * 4 + e] + v;"
    source = path.read_text()
    count = source.count(anchor)
    if count != 1:
        raise SystemExit(f"no_promotion: expected 1 promotion statement in {path}, found {count}")
    source = source.replace(anchor, "if (j == 0 && e == 0) a[0] = INIT ? v : a[0] + v;")
    path.write_text(source)


def package_with_insertions(dst: Path, variant: str, insertions) -> None:
    """A copy of the package whose kernel has each (anchor, text) of `insertions` applied: the text
    goes right after the anchor, which must occur exactly once."""
    shutil.copytree(REPO / "deep_gemm", dst / "deep_gemm")
    path = dst / "deep_gemm" / "include" / "deep_gemm" / "fp8_gemm.cuh"
    source = path.read_text()
    for anchor, text in insertions:
        if source.count(anchor) != 1:
            raise SystemExit(f"{variant}: expected one '{anchor.strip()}' in {path}, found {source.count(anchor)}")
        source = source.replace(anchor, anchor + text)
    path.write_text(source)


def run_in_patched_package(patch, code: str, args) -> int:
    """Runs `python -c code args...` against a copy of the package that `patch(root)` builds, with
    its own JIT cache, in a temporary folder (the probes that stamp or count inside the kernel)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "pkg"
        patch(root)
        env = dict(os.environ, PYTHONPATH=str(root), DG_JIT_CACHE_DIR=str(Path(tmp) / "cache"))
        return subprocess.run([sys.executable, "-c", code] + list(args), env=env, cwd=root).returncode


def package_without_mma(dst: Path) -> None:
    package_with_insertions(dst, "no_mma", [("auto issue = [&](u32 s, auto buf, auto first, auto count, auto steps) {",
                                             # pinned, not left undefined: ptxas spills otherwise
                                             " if (s < 0xFFFFFFFFu) { for (auto& row : tmp[decltype(buf)::value])"
                                             " for (float& x : row) pin_register(x); return; }")])


def package_with_stagger(dst: Path, cycles: int) -> None:
    spin = (" if (warpgroup == 1) { wait_full(pos); u64 t0, t1;"
            " asm volatile(\"mov.u64 %0, %%clock64;\" : \"=l\"(t0));"
            f" do {{ asm volatile(\"mov.u64 %0, %%clock64;\" : \"=l\"(t1)); }} while (t1 - t0 < {cycles}u); }}")
    package_with_insertions(dst, "stagger", [("u32 kb = k_slice_begin();", spin)])


def package_with_skew(dst: Path, half: bool) -> None:
    wait = (" if (warpgroup == 1) asm volatile(\"bar.sync 4, 256;\" ::: \"memory\");")
    arrive = " if (warpgroup == 0) asm volatile(\"bar.arrive 4, 256;\" ::: \"memory\");"
    if half:
        arrive_at = ("finish(sc, pos.stage, boundary, Buf0{}, IntConst<0>{}, IntConst<1>{}, init);",
                     " if constexpr (decltype(init)::value) {" + arrive + " }")
    else:
        # (after the anchor's trailing comment: a new line)
        arrive_at = ("serial_k_block(kb, IntConst<1>{}, plan_next_tile);   // initializes acc", "\n" + arrive)
    package_with_insertions(dst, "skew", [("u32 kb = k_slice_begin();", wait), arrive_at])


# Run inside the child process: installs the cubin rewrite, then the probe.
CHILD = """
import sys
from deep_gemm.jit import compiler
sys.path.insert(0, {tools!r})
import variant_probe, decode_probe
mode = {mode!r}
if mode.startswith("ffma_"):
    nvrtc = compiler._compile_nvrtc
    def patched(*args, **kwargs):
        cubin, log, symbol = nvrtc(*args, **kwargs)
        return variant_probe.rewrite_ffma_bits(cubin, mode == "ffma_yield_all"), log, symbol
    compiler._compile_nvrtc = patched
sys.argv = ["decode_probe"] + {argv!r}
decode_probe.main()
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="baseline,no_promotion")
    ap.add_argument("--shapes", nargs="+", required=True)
    ap.add_argument("--configs", nargs="+", required=True)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        # A variant may be listed more than once (A B A B): each pass gets its own package copy.
        for i, mode in enumerate(args.variants.split(",")):
            stagger = re.fullmatch(r"stagger(\d+)", mode)
            if mode not in ("baseline", "no_promotion", "no_mma", "ffma_yield_all", "ffma_no_yield", "skew",
                            "skewhalf") and not stagger:
                raise SystemExit(f"unknown variant {mode}")
            root = REPO if mode == "baseline" or mode.startswith("ffma_") else Path(tmp) / f"{mode}_{i}"
            if mode == "no_promotion":
                package_without_promotion(root)
            elif mode == "no_mma":
                package_without_mma(root)
            elif mode in ("skew", "skewhalf"):
                package_with_skew(root, mode == "skewhalf")
            elif stagger:
                package_with_stagger(root, int(stagger.group(1)))
            env = dict(os.environ, PYTHONPATH=str(root), DG_JIT_CACHE_DIR=str(Path(tmp) / f"cache_{mode}"))
            print(f"== {mode}", flush=True)
            for shape in args.shapes:
                code = CHILD.format(tools=str(REPO / "tools"), mode=mode, argv=[shape] + args.configs)
                # cwd = the package root: `python -c` puts the working directory first on sys.path.
                # A hung kernel (a wrong variant) must not eat the whole device session.
                try:
                    subprocess.run([sys.executable, "-c", code], env=env, cwd=root, check=False, timeout=150)
                except subprocess.TimeoutExpired:
                    print(f"{shape} {mode}: timed out", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
