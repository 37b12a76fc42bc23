"""Where the math warpgroups of a dense FP8 GEMM wait, and at what clock the kernel really runs:
counts SM cycles per role in a patched copy of the package (own process, own JIT cache).

    python3 tools/stall_probe.py 4096,4096,7168 "Fp8GemmConfig(256,128,3,2)" ...

Thread 0 of each math warpgroup sums, over its tiles:
  full      cycles spent waiting for a stage to land (the memory pipeline is behind)
  k-loop    cycles from a tile's first k-block to its last promotion (includes `full`)
  epilogue  cycles from the end of the k-loop to the next tile
  total     cycles from the register hand-over to the end of its last tile
The producer warp sums the cycles it waits for a free stage (`empty`: the math is behind) and
stamps the global timer at its start and end, so cycles / nanoseconds gives the SM clock that the
kernel actually ran at (what nvidia-smi's 100 ms samples cannot show for a 0.2 ms launch).
Printed: medians over CTAs (and over 5 launches, each after an L2 flush), as fractions of the
total, plus the clock.
"""
from __future__ import annotations

import sys
from pathlib import Path

from variant_probe import package_with_insertions, run_in_patched_package

MAX_CTAS = 1024
CLK = "dg_clk32()"

DECL = f"""
extern "C" __device__ unsigned int dg_stall_math[{MAX_CTAS} * 8];
extern "C" __device__ unsigned int dg_stall_prod[{MAX_CTAS} * 4];
__device__ __forceinline__ unsigned int dg_clk32() {{
    unsigned int c; asm volatile("mov.u32 %0, %%clock;" : "=r"(c)); return c; }}
__device__ __forceinline__ unsigned long long dg_ns() {{
    unsigned long long t; asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); return t; }}
"""

# (anchor, text placed right after it); each anchor occurs exactly once in fp8_gemm.cuh.
INSERTIONS = (
    ("#include <deep_gemm/wgmma.cuh>\n", DECL),
    # producer
    ("warpgroup_release_registers<Cfg::PRODUCER_REGS>();",
     f" unsigned int dg_empty = 0, dg_p0 = {CLK}; unsigned long long dg_t0 = dg_ns();"),
    ("const u32 s = pos.stage;", f" unsigned int dg_q = {CLK};"),
    ("mbar_wait(&empty_bars[s], pos.phase ^ 1);", f" dg_empty += {CLK} - dg_q;"),
    ("expert = next_expert, has_tile = has_next;\n            }",
     f"\n if (blockIdx.x < {MAX_CTAS}) {{ unsigned int* o = dg_stall_prod + blockIdx.x * 4;"
     f" o[0] = dg_empty; o[1] = {CLK} - dg_p0; o[2] = (unsigned int)(dg_ns() - dg_t0); o[3] = 1; }}"),
    # math warpgroups
    ("warpgroup_claim_registers<Cfg::MATH_REGS>();",
     f" unsigned int dg_full = 0, dg_loop = 0, dg_epi = 0, dg_l = 0, dg_e = 0, dg_m0 = {CLK};"),
    ("auto wait_full = [&](const RingPos<STAGES>& at) {", f" unsigned int dg_w = {CLK};"),
    ("mbar_wait(&full_bars[at.stage], at.phase);", f" dg_full += {CLK} - dg_w;"),
    ("u32 kb = k_slice_begin();", f" dg_l = {CLK};"),
    ("            // ------------------------------------------------------------ epilogue",
     f"\n dg_e = {CLK}; dg_loop += dg_e - dg_l;"),
    ("            buf ^= 1;", f" dg_epi += {CLK} - dg_e;"),
    ("            if (store_thread) tma_store_wait_all();\n        }",
     f"\n if (wg_thread == 0 && blockIdx.x < {MAX_CTAS}) {{ unsigned int* o = dg_stall_math + blockIdx.x * 8"
     f" + warpgroup * 4; o[0] = dg_full; o[1] = dg_loop; o[2] = dg_epi; o[3] = {CLK} - dg_m0; }}"),
)


def patch(dst: Path) -> None:
    package_with_insertions(dst, "stall_probe", INSERTIONS)


CHILD = r"""
import ctypes, statistics as st, sys, torch
import deep_gemm
from deep_gemm.jit import runtime
from deep_gemm.kernels.fp8_gemm import PAIR_M, PAIR_N, PAIR_NONE, Fp8GemmConfig
from deep_gemm.testing import calc_diff, fp8_gemm_inputs, l2_flush
MAX_CTAS = {max_ctas}
m, n, k = (int(x) for x in sys.argv[1].split(","))
a, b, qa, qb = fp8_gemm_inputs(m, n, k, mn_major_sfa=True)
d = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
ref = a.float() @ b.float().T
drv = runtime.driver()
def read(lib, name, count):
    ptr = runtime.check(drv.cuLibraryGetGlobal(lib, name), name.decode())[0]
    buf = (ctypes.c_uint32 * count)()
    runtime.check(drv.cuMemcpyDtoH(ctypes.addressof(buf), ptr, count * 4), "cuMemcpyDtoH")
    return list(buf), ptr
for text in sys.argv[2:]:
    cfg = eval(text)
    deep_gemm.fp8_gemm_nt(qa, qb, d, config=cfg)
    diff = calc_diff(d.float(), ref)
    lib = runtime._loaded[cfg.kernel_name()].library
    runs = []
    for _ in range(5):
        for name, count in ((b"dg_stall_math", MAX_CTAS * 8), (b"dg_stall_prod", MAX_CTAS * 4)):
            runtime.check(drv.cuMemsetD8(read(lib, name, 1)[1], 0, count * 4), "cuMemsetD8")
        l2_flush()
        deep_gemm.fp8_gemm_nt(qa, qb, d, config=cfg)
        torch.cuda.synchronize()
        math, _ = read(lib, b"dg_stall_math", MAX_CTAS * 8)
        prod, _ = read(lib, b"dg_stall_prod", MAX_CTAS * 4)
        ctas = [i for i in range(MAX_CTAS) if prod[i * 4 + 3]]
        wgs = [math[i * 8 + w * 4:i * 8 + w * 4 + 4] for i in ctas for w in range(2) if math[i * 8 + w * 4 + 3]]
        runs.append({{
            "full": st.median(w[0] / w[3] for w in wgs), "loop": st.median(w[1] / w[3] for w in wgs),
            "epi": st.median(w[2] / w[3] for w in wgs), "empty": st.median(prod[i * 4] / prod[i * 4 + 1] for i in ctas),
            "mhz": st.median(prod[i * 4 + 1] / prod[i * 4 + 2] * 1e3 for i in ctas),
            "us": st.median(prod[i * 4 + 2] / 1e3 for i in ctas), "ctas": len(ctas)}})
    med = {{key: st.median(r[key] for r in runs) for key in runs[0]}}
    print(f"{{m}}x{{n}}x{{k}} {{cfg.kernel_name()}}: {{med['ctas']:.0f}} CTAs, diff {{diff:.1e}} | math: waits for "
          f"data {{med['full']:.1%}}, k-loop {{med['loop']:.1%}}, epilogue {{med['epi']:.1%}} | producer waits for a "
          f"free stage {{med['empty']:.1%}} | producer span {{med['us']:.1f}} us at {{med['mhz']:.0f}} MHz", flush=True)
"""


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__)
        return 2
    return run_in_patched_package(patch, CHILD.format(max_ctas=MAX_CTAS), sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
