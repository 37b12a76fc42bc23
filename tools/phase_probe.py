"""Where a decode kernel's time goes: stamps the phases of every CTA of one FP8 GEMM launch with
the SM clock and the global timer, in a patched copy of the package (own process, own JIT cache).

    python3 tools/phase_probe.py 64,4096,7168 "Fp8GemmConfig(64,112,8,1,pipelined=True,split_k=3)" ...

Phases, as math thread 0 of each CTA sees them (the stamps of a CTA's last tile):
  setup     kernel entry -> barriers initialized and the cluster synchronized
  scales    -> the tile's B scales have landed (the math side starts its k-loop)
  k-loop    -> every k-block of the slice consumed (wgmmas waited, promoted)
  siblings  -> split-K: every CTA of the cluster has published its partial tile (0 without split)
  epilogue  -> split-K reduction or output store issued
  exit      -> end of the kernel body (before the final cluster barrier)
Printed: the median and the maximum over CTAs, in microseconds of the global timer and in SM
cycles; when the CTA's first stage landed, counted from its entry; and the launch's span from the
first CTA's entry to the last CTA's exit. The L2 is flushed before each of 5 launches; every
figure is the median over them.
"""
from __future__ import annotations

import sys
from pathlib import Path

from variant_probe import package_with_insertions, run_in_patched_package

PHASES = ("setup", "scales", "k-loop", "siblings", "epilogue", "exit")
MAX_CTAS = 1024

# (anchor, stamp index placed right after it); each anchor must occur exactly once.
ANCHORS = (
    ("const u32 warpgroup = __shfl_sync(0xffffffffu, threadIdx.x / 128, 0);", 0),
    ("if constexpr (CLUSTER > 1) cluster_sync(); else __syncthreads();", 1),
    ("u32 kb = k_slice_begin();", 2),
    ("            // ------------------------------------------------------------ epilogue", 3),
    ("    mbar_wait_cluster(ready_bar, phase);", 4),
    ("            buf ^= 1;", 5),
    ("(Reconverge first: the cluster barrier is warp-aligned.)", 6),
)
# the first stage's arrival, stamped inside the wait lambda
FIRST_FULL = "auto wait_full = [&](const RingPos<STAGES>& at) { mbar_wait(&full_bars[at.stage], at.phase);"

STAMP_DECL = f"""
extern "C" __device__ unsigned long long dg_phase_clock[{MAX_CTAS} * 8];
extern "C" __device__ unsigned long long dg_phase_time[{MAX_CTAS} * 8];
#define DG_STAMP(i) do {{ if (threadIdx.x == 0 && blockIdx.x < {MAX_CTAS}) {{ \\
    unsigned long long c_, t_; asm volatile("mov.u64 %0, %%clock64;" : "=l"(c_)); \\
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t_)); \\
    dg_phase_clock[blockIdx.x * 8 + (i)] = c_; dg_phase_time[blockIdx.x * 8 + (i)] = t_; }} }} while (0)
"""


def patch(dst: Path) -> None:
    package_with_insertions(dst, "phase_probe", [("#include <deep_gemm/wgmma.cuh>\n", STAMP_DECL),
                                                 ("warpgroup_claim_registers<Cfg::MATH_REGS>();",
                                                  " bool dg_first_full = true;"),
                                                 (FIRST_FULL, " if (dg_first_full) { DG_STAMP(7); dg_first_full = false; }")]
                            + [(anchor, f"\n DG_STAMP({i});") for anchor, i in ANCHORS])


CHILD = r"""
import ctypes, statistics, sys, torch
import deep_gemm
from deep_gemm.jit import runtime
from deep_gemm.kernels.fp8_gemm import PAIR_M, PAIR_N, PAIR_NONE, Fp8GemmConfig
from deep_gemm.testing import calc_diff, fp8_gemm_inputs, l2_flush
MAX_CTAS, PHASES = {max_ctas}, {phases}
m, n, k = (int(x) for x in sys.argv[1].split(","))
a, b, qa, qb = fp8_gemm_inputs(m, n, k, mn_major_sfa=True)
d = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
ref = a.float() @ b.float().T
d_ = runtime.driver()
for text in sys.argv[2:]:
    cfg = eval(text)
    deep_gemm.fp8_gemm_nt(qa, qb, d, config=cfg)
    diff = calc_diff(d.float(), ref)
    lib = runtime._loaded[cfg.kernel_name()].library
    arrays = [runtime.check(d_.cuLibraryGetGlobal(lib, name), name.decode())[0] for name in (b"dg_phase_clock", b"dg_phase_time")]
    runs = []
    for _ in range(5):
        for ptr in arrays:
            runtime.check(d_.cuMemsetD8(ptr, 0, MAX_CTAS * 64), "cuMemsetD8")
        l2_flush()
        deep_gemm.fp8_gemm_nt(qa, qb, d, config=cfg)
        torch.cuda.synchronize()
        host = []
        for ptr in arrays:
            buf = (ctypes.c_uint64 * (MAX_CTAS * 8))()
            runtime.check(d_.cuMemcpyDtoH(ctypes.addressof(buf), ptr, MAX_CTAS * 64), "cuMemcpyDtoH")
            host.append([list(buf[i * 8:i * 8 + 8]) for i in range(MAX_CTAS)])
        for c, t in zip(*host):   # no split-K: no sibling wait
            if not t[4]:
                c[4], t[4] = c[3], t[3]
        runs.append([(c, t) for c, t in zip(*host) if t[0] and t[6]])
    ctas = len(runs[-1])
    print(f"{{m}}x{{n}}x{{k}} {{cfg.kernel_name()}}: {{ctas}} CTAs, diff {{diff:.1e}}")
    span = statistics.median((max(t[6] for _, t in r) - min(t[0] for _, t in r)) / 1e3 for r in runs)
    first = statistics.median(statistics.median((t[7] - t[0]) / 1e3 for _, t in r if t[7]) for r in runs)
    line = []
    for i, name in enumerate(PHASES):
        us = statistics.median(statistics.median((t[i + 1] - t[i]) / 1e3 for _, t in r) for r in runs)
        us_max = statistics.median(max((t[i + 1] - t[i]) / 1e3 for _, t in r) for r in runs)
        cyc = statistics.median(statistics.median(c[i + 1] - c[i] for c, _ in r) for r in runs)
        line.append(f"{{name}} {{us:.2f}}/{{us_max:.2f}} us {{cyc:.0f}} cyc")
    skew = statistics.median((max(t[0] for _, t in r) - min(t[0] for _, t in r)) / 1e3 for r in runs)
    print("    " + " | ".join(line) + f" | first stage at {{first:.2f}} us | span {{span:.2f}} us, "
          f"entry skew {{skew:.2f}} us", flush=True)
"""


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__)
        return 2
    return run_in_patched_package(patch, CHILD.format(max_ctas=MAX_CTAS, phases=PHASES), sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
