"""Do FP8 wgmmas with A from registers cost tensor cycles, and do they save power?

The question behind it (benchmarks/NOTES.md, sessions 7 and 14): a 256x128 tile reads B from
shared memory once per m64 slice, 96 KB of wgmma reads per k-block, which with the 48 KB of TMA
writes is about what shared memory moves in the k-block's 1024 tensor cycles. A 128x256 tile whose
warpgroups load their A rows once into registers and run two n128 slices from them reads 80 KB. At
the 700 W cap, less traffic should turn into clock, if the register-A wgmmas keep the pace.

This probe isolates the math loop of the three layouts, with the same tensor work per k-block
(256 x 128 x 128) and the same promotion (64 FFMAs per slice and thread, two slices per warpgroup):
  ss_m: two m64 slices per warpgroup share B (our 256x128 tile),
  rs_n: two n128 slices per warpgroup share A, loaded with ldmatrix into registers (128x256, A in registers),
  ss_n: two n128 slices per warpgroup, A read from shared memory by both (128x256 without registers),
  rs_once: as rs_n, but the A fragments are loaded once before the loop (the register-A wgmmas'
  own pace, without the ldmatrix in front of each k-block).
Operands stay in shared memory (random bytes). The kinds of writes (--writes):
  none:  the math runs free;
  l2:    a producer lane bulk-copies --copy-kb KB a k-block from a 32 MB L2-resident buffer into a
         scratch ring of --slots slots that the math waits for and frees, as the GEMM's TMA loads
         would (the same shared-memory writes and L2 reads per k-block);
  st:    the producer warpgroup stores the 48 KB itself (shared-memory writes without L2 traffic);
  sync:  the ring's full/freed barriers with no data;
  sync2: as sync, but each math warpgroup has a ring of its own, served by a producer lane of its
         own (no coupling between the warpgroups through the ring);
  flags: each k-block has a barrier of its own that the producer completes at once (a wait on a
         completed barrier, no ring at all).
--unroll unrolls the math loop as the GEMM does; --hint-ns gives every wait a suspend-time hint.
With a ring of 3 the slot index is a run-time modulo and ptxas addresses the barriers from vector
registers; rings of 2 and 4 under --unroll 4 get compile-time slots and uniform addresses.

Prints, per layout: time per launch (median), TFLOP/s, and the SM clock inside the launch (clock64
over globaltimer), so cycles per k-block and clock can be read apart. Needs a GPU:
    PYTHONPATH=. python3 tools/wgmma_rs_probe.py --unroll 4 --slots 4 --writes none,sync,l2 --copy-kb 32
Results and what they mean: benchmarks/NOTES.md, session 14.
"""
from __future__ import annotations

import argparse
import ctypes
import statistics

SOURCE = r"""
#include <deep_gemm/wgmma.cuh>
namespace deep_gemm {

// m64n128k32 e4m3 with A from this thread's four registers of the fragment.
DG_DEVICE void wgmma_rs_n128(const u32 (&a)[4], u64 desc_b, float* d, bool accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
        "{%64, %65, %66, %67}, %68, p, 1, 1;\n}"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(static_cast<u32>(accumulate)));
}

DG_DEVICE void ldmatrix_x4(u32 addr, u32 (&r)[4]) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr) : "memory");
}

DG_DEVICE void bulk_copy_g2s(u32 dst, const void* src, u32 bytes, u64* bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                 :: "r"(dst), "l"(src), "r"(bytes), "r"(smem_u32(bar)) : "memory");
}

// The m64k128 A fragments of a warpgroup's 64 rows, from the 128B-swizzled layout (16-byte chunk c
// of row r sits at chunk c ^ (r % 8)); ldmatrix register i is register i of the wgmma fragment.
DG_DEVICE void load_a_fragments(const u8* ops, u32 warpgroup, u32 warp, u32 lane, u32 (&frag)[4][4]) {
    const u32 rows = smem_u32(ops) + (warpgroup * 64 + warp * 16 + lane % 8 + (lane / 8 % 2) * 8) * 128;
    #pragma unroll
    for (u32 kk = 0; kk < 4; ++kk)
        ldmatrix_x4(rows + (((2 * kk + lane / 16) ^ (lane % 8)) * 16), frag[kk]);
}

// mbarrier wait; HINT_NS != 0 passes try_wait a suspend-time hint, so a waiting thread sleeps until
// the phase completes (or the hint expires) instead of returning to poll after a short,
// implementation-defined time.
template <u32 HINT_NS>
DG_DEVICE void wait(u64* bar, u32 parity) {
    if constexpr (HINT_NS == 0) {
        mbar_wait(bar, parity);
    } else {
        asm volatile(
            "{\n\t.reg .pred done;\n"
            "WAIT_%=:\n\t"
            "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1, %2;\n\t"
            "@!done bra WAIT_%=;\n}"
            :: "r"(smem_u32(bar)), "r"(parity), "n"(HINT_NS) : "memory");
    }
}

constexpr u32 kOperandBytes = 64 * 1024;   // A: 256 rows x 128 B, then B: 256 rows x 128 B (SW128)
constexpr u32 kScratchBytes = 48 * 1024;   // one k-block of a 256x128 tile's TMA writes
constexpr u32 kSources = 32u * 1024 * 1024 / kScratchBytes;

struct ProbeParams {
    const u8* operands;     // kOperandBytes of random bytes
    const u8* source;       // kSources * kScratchBytes, read by the producer
    const float* scales;    // 64 scale values, read per k-block
    float* out;             // one float per math thread
    unsigned long long* clocks;   // per CTA: clock64 delta, globaltimer delta
    u32 iters;
    u32 copy_bytes;         // "l2" writes: bytes copied per k-block (at most kScratchBytes)
};

// MODE 0: ss_m, 1: rs_n, 2: ss_n, 3: rs_once; WRITES 0: none, 1: bulk copies from L2, 2: st.shared
// by the producer warpgroup, 3: the ring's barriers without data, 4: one barrier per k-block, all
// arrived by the producer without waiting, 5: as 3 with one ring per math warpgroup, each served
// by its own producer lane (see the tool's docstring). SLOTS: the ring's depth.
template <u32 WRITES, u32 SLOTS>
constexpr u32 slot_stride() { return SLOTS <= 3 ? kScratchBytes : 32768; }   // l2 with 4 slots: 32 KB each
template <u32 WRITES, u32 SLOTS>
constexpr u32 scratch_bytes() { return WRITES == 1 || WRITES == 2 ? SLOTS * slot_stride<WRITES, SLOTS>() : WRITES == 4 ? 32768 : 0; }

template <u32 MODE, u32 WRITES, u32 UNROLL, u32 HINT_NS, u32 SLOTS>
__global__ void __launch_bounds__(384, 1) wgmma_rs_probe_kernel(const __grid_constant__ ProbeParams p) {
    extern __shared__ __align__(1024) u8 smem[];
    u8* ops = smem;
    u8* scratch = smem + kOperandBytes;
    constexpr u32 kSlots = SLOTS;
    float* sc = reinterpret_cast<float*>(smem + kOperandBytes + scratch_bytes<WRITES, SLOTS>());
    // full[SLOTS], freed[SLOTS]; WRITES 5: one such pair of arrays per math warpgroup (ring r)
    u64* rings = reinterpret_cast<u64*>(sc + 64);
    auto full_of = [&](u32 r) { return rings + r * 2 * kSlots; };
    auto freed_of = [&](u32 r) { return rings + r * 2 * kSlots + kSlots; };
    // Broadcast from lane 0, so ptxas keeps the wgmma descriptors in uniform registers.
    const u32 warpgroup = __shfl_sync(0xffffffffu, threadIdx.x / 128, 0);
    const u32 tid = threadIdx.x, lane = tid % 32, warp = tid / 32 % 4;
    u64* full = full_of(WRITES == 5 && warpgroup == 1 ? 1 : 0);
    u64* freed = freed_of(WRITES == 5 && warpgroup == 1 ? 1 : 0);

    for (u32 i = tid; i < kOperandBytes / 16; i += blockDim.x)
        reinterpret_cast<uint4*>(ops)[i] = reinterpret_cast<const uint4*>(p.operands)[i];
    if (tid < 64) sc[tid] = p.scales[tid];
    if (tid == 0) {
        for (u32 r = 0; r < 2; ++r)
            for (u32 s = 0; s < kSlots; ++s) {
                mbar_init(full_of(r) + s, WRITES == 2 ? 128 : 1);
                mbar_init(freed_of(r) + s, WRITES == 5 ? 1 : 2);
            }
        if (WRITES == 4)
            for (u32 i = 0; i < p.iters; ++i) mbar_init(reinterpret_cast<u64*>(scratch) + i, 1);
        fence_mbar_init();
    }
    __syncthreads();
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    __syncthreads();

    if (warpgroup == 2) {
        warpgroup_release_registers<40>();
        if (WRITES == 2) {
            const uint4 v = make_uint4(tid, tid * 3, tid * 5, tid * 7);
            for (u32 it = 0; it < p.iters; ++it) {
                const u32 s = it % kSlots;
                if (it >= kSlots) wait<HINT_NS>(&freed[s], ((it / kSlots) - 1) % 2);
                const u32 base = smem_u32(scratch + s * kScratchBytes) + (tid % 128) * 16;
                #pragma unroll
                for (u32 i = 0; i < kScratchBytes / 2048; ++i)
                    asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};"
                                 :: "r"(base + i * 2048), "r"(v.x + it), "r"(v.y), "r"(v.z), "r"(v.w) : "memory");
                mbar_arrive(&full[s]);
            }
        }
        if ((WRITES == 3 && warp == 0 && lane == 0) || (WRITES == 5 && warp < 2 && lane == 0)) {
            u64* f = full_of(WRITES == 5 ? warp : 0);
            u64* e = freed_of(WRITES == 5 ? warp : 0);
            for (u32 it = 0; it < p.iters; ++it) {
                const u32 s = it % kSlots;
                if (it >= kSlots) wait<HINT_NS>(&e[s], ((it / kSlots) - 1) % 2);
                mbar_arrive(&f[s]);
            }
        }
        if (WRITES == 4 && warp == 0 && lane == 0)
            for (u32 it = 0; it < p.iters; ++it) mbar_arrive(reinterpret_cast<u64*>(scratch) + it);
        if (WRITES == 1 && warp == 0 && lane == 0) {
            for (u32 it = 0; it < p.iters; ++it) {
                const u32 s = it % kSlots;
                if (it >= kSlots) wait<HINT_NS>(&freed[s], ((it / kSlots) - 1) % 2);
                mbar_arrive_expect_tx(&full[s], p.copy_bytes);
                const u32 src = (blockIdx.x * 7 + it) % kSources;
                bulk_copy_g2s(smem_u32(scratch + s * slot_stride<WRITES, SLOTS>()), p.source + static_cast<u64>(src) * kScratchBytes,
                              p.copy_bytes, &full[s]);
            }
        }
        return;
    }

    warpgroup_claim_registers<232>();   // as the GEMM's math warpgroups do
    unsigned long long c0 = clock64(), t0;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    float acc[2][64], tmp[64];
    #pragma unroll
    for (u32 s = 0; s < 2; ++s)
        #pragma unroll
        for (u32 i = 0; i < 64; ++i) acc[s][i] = 0.f;

    const u64 desc_a0 = make_kmajor_sw128_desc(ops);
    const u64 desc_b0 = make_kmajor_sw128_desc(ops + 32 * 1024);
    u32 frag[4][4];
    if constexpr (MODE == 3) load_a_fragments(ops, warpgroup, warp, lane, frag);
    #pragma unroll (UNROLL)
    for (u32 it = 0; it < p.iters; ++it) {
        if (WRITES == 4) wait<HINT_NS>(reinterpret_cast<u64*>(scratch) + it, 0);
        else if (WRITES) wait<HINT_NS>(&full[it % kSlots], (it / kSlots) % 2);
        const float sfb = sc[it % 64];
        const float s0 = sc[(it + lane / 4) % 64] * sfb, s1 = sc[(it + lane / 4 + 8) % 64] * sfb;
        if constexpr (MODE == 1) {
            load_a_fragments(ops, warpgroup, warp, lane, frag);
        }
        #pragma unroll
        for (u32 s = 0; s < 2; ++s) {
            // ss_m: rows warpgroup*128 + s*64 of A, all 128 rows of B; *_n: rows warpgroup*64 of A,
            // rows s*128 of B.
            const u64 desc_a = desc_advance(desc_a0, (MODE == 0 ? warpgroup * 128 + s * 64 : warpgroup * 64) * 128);
            const u64 desc_b = desc_advance(desc_b0, (MODE == 0 ? 0 : s * 128) * 128);
            wgmma_fence();
            #pragma unroll
            for (u32 kk = 0; kk < 4; ++kk) {
                if constexpr (MODE == 1 || MODE == 3)
                    wgmma_rs_n128(frag[kk], desc_advance(desc_b, kk * 32), tmp, kk > 0);
                else   // tmp is an input of the first one too, as in the GEMM: no renaming across slices
                    WgmmaFp8<128>::mma(desc_advance(desc_a, kk * 32), desc_advance(desc_b, kk * 32), tmp, kk > 0);
            }
            wgmma_commit();
            wgmma_wait<0>();
            // As the GEMM does: the slot is released once its last wgmmas are done, before the promotion.
            if (s == 1 && WRITES && WRITES != 4 && tid % 128 == 0) mbar_arrive(&freed[it % kSlots]);
            #pragma unroll
            for (u32 i = 0; i < 64; ++i) {
                pin_register(tmp[i]);
                acc[s][i] = fmaf(tmp[i], (i / 2) % 2 ? s1 : s0, acc[s][i]);
            }
        }
    }
    unsigned long long c1 = clock64(), t1;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t1));
    float sum = 0.f;
    #pragma unroll
    for (u32 s = 0; s < 2; ++s)
        #pragma unroll
        for (u32 i = 0; i < 64; ++i) sum += acc[s][i];
    p.out[blockIdx.x * 256 + tid] = sum;
    if (tid == 0) { p.clocks[blockIdx.x * 2] = c1 - c0; p.clocks[blockIdx.x * 2 + 1] = t1 - t0; }
}

}  // namespace deep_gemm
"""

MODES = {"ss_m": 0, "rs_n": 1, "ss_n": 2, "rs_once": 3}
WRITES = {0: "none", 1: "l2", 2: "st", 3: "sync", 4: "flags", 5: "sync2"}


class ProbeParams(ctypes.Structure):
    _fields_ = [("operands", ctypes.c_uint64), ("source", ctypes.c_uint64), ("scales", ctypes.c_uint64),
                ("out", ctypes.c_uint64), ("clocks", ctypes.c_uint64), ("iters", ctypes.c_uint32),
                ("copy_bytes", ctypes.c_uint32)]


def kernel_expr(mode: str, writes: int, unroll: int, hint_ns: int = 0, slots: int = 3) -> str:
    return f"&deep_gemm::wgmma_rs_probe_kernel<{MODES[mode]}, {writes}, {unroll}, {hint_ns}, {slots}>"


def smem_bytes(writes: int, slots: int) -> int:
    scratch = slots * (48 if slots <= 3 else 32) * 1024 if writes in (1, 2) else 32768 if writes == 4 else 0
    return 64 * 1024 + scratch + 64 * 4 + 4 * slots * 8


def get(mode: str, writes: int, unroll: int, hint_ns: int, slots: int):
    """Compiles (through the JIT cache) and loads one variant."""
    from deep_gemm.jit import runtime
    return runtime.get_kernel(f"wgmma_rs_probe_{mode}_{writes}_u{unroll}_h{hint_ns}_s{slots}", SOURCE,
                              kernel_expr(mode, writes, unroll, hint_ns, slots))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=2000, help="k-blocks per CTA and launch")
    ap.add_argument("--reps", type=int, default=20, help="timed launches per variant and round")
    ap.add_argument("--rounds", type=int, default=2, help="passes over all variants, interleaved")
    ap.add_argument("--layouts", default=",".join(MODES), help="comma-separated subset of " + ", ".join(MODES))
    ap.add_argument("--writes", default="none,l2,st", help="comma-separated subset of " + ", ".join(WRITES.values()))
    ap.add_argument("--unroll", type=int, default=1, choices=(1, 2, 4), help="k-blocks per unrolled math loop body")
    ap.add_argument("--hint-ns", type=int, default=0, help="suspend-time hint of every mbarrier wait (0: none)")
    ap.add_argument("--slots", type=int, default=3, help="ring depth (l2 writes: at most 3, or 4 of at most 32 KB; st writes: at most 3)")
    ap.add_argument("--copy-kb", default="48", help="comma-separated KB per k-block for l2 writes (<= 48)")
    ap.add_argument("--flush-bytes", type=int, default=2 << 30, help="memset before each timed launch")
    args = ap.parse_args()

    import torch
    from deep_gemm.jit import runtime
    dev = torch.cuda.current_device()
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    operands = torch.randint(-128, 127, (64 * 1024,), dtype=torch.int8, device="cuda")
    # finite e4m3 bytes only (0x7f / 0xff are NaN): clear the top exponent bit pattern's NaN
    operands[(operands == 127) | (operands == -1)] = 0x3c
    source = torch.randint(-128, 127, (32 << 20,), dtype=torch.int8, device="cuda")
    scales = torch.rand(64, device="cuda") + 0.5
    out = torch.empty(sms * 256, device="cuda")
    clocks = torch.empty(sms * 2, dtype=torch.int64, device="cuda")
    flush = torch.empty(args.flush_bytes // 4, dtype=torch.int32, device="cuda")
    stream = torch.cuda.current_stream().cuda_stream

    layouts = args.layouts.split(",")
    writes = [next(k for k, v in WRITES.items() if v == name) for name in args.writes.split(",")]
    copy_kb = [int(x) for x in args.copy_kb.split(",")]
    assert all(0 < kb <= 48 for kb in copy_kb), "--copy-kb: 1 to 48"
    assert args.slots <= 3 or (2 not in writes and args.slots == 4 and max(copy_kb) <= 32), \
        "--slots: with l2 writes at most 3, or 4 of at most 32 KB; st writes: at most 3"
    assert 4 not in writes or args.iters * 8 <= 3 * 48 * 1024, "--iters: the flags mode keeps one barrier per k-block in the scratch ring"
    # a variant: (layout, writes, KB copied per k-block; 0 unless "l2")
    variants = [(m, w, kb if w == 1 else 0) for w in writes for kb in (copy_kb if w == 1 else [0]) for m in layouts]
    launchers = {}
    for m, w, _ in variants:
        if (m, w) not in launchers:
            k = get(m, w, args.unroll, args.hint_ns, args.slots)
            smem = smem_bytes(w, args.slots)
            launchers[(m, w)] = runtime.Launcher(k.function(dev, smem), sms, 384, smem)
            print(f"{m} writes={WRITES[w]}: {k.compiled.resources}")
    flops = 2.0 * 256 * 128 * 128 * args.iters * sms
    results = {v: {"us": [], "mhz": []} for v in variants}
    for _ in range(args.rounds):
        for v in variants:
            params = ProbeParams(operands.data_ptr(), source.data_ptr(), scales.data_ptr(), out.data_ptr(),
                                 clocks.data_ptr(), args.iters, v[2] * 1024)
            launch = launchers[v[:2]]
            launch(params, stream)   # warm-up
            for _ in range(args.reps):
                flush.zero_()
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                launch(params, stream)
                end.record()
                end.synchronize()
                c = clocks.view(sms, 2).double()
                results[v]["us"].append(start.elapsed_time(end) * 1e3)
                results[v]["mhz"].append(float((c[:, 0] / c[:, 1]).mean()) * 1e3)
            assert torch.isfinite(out).all(), f"{v}: non-finite accumulators"
    print(f"\n{args.iters} k-blocks of 256x128x128 per CTA, {sms} CTAs, {args.reps}x{args.rounds} launches each, "
          f"math loop unrolled {args.unroll}x, wait hint {args.hint_ns} ns, ring of {args.slots}")
    print(f"{'layout':7} {'writes':9} {'us':>9} {'TFLOP/s':>8} {'MHz':>6} {'cycles/k-block':>15}")
    for v in variants:
        us = statistics.median(results[v]["us"])
        mhz = statistics.median(results[v]["mhz"])
        what = WRITES[v[1]] + (f" {v[2]}K" if v[1] == 1 else "")
        print(f"{v[0]:7} {what:9} {us:9.1f} {flops / us / 1e6:8.0f} {mhz:6.0f} {us * mhz / args.iters:15.1f}")

if __name__ == "__main__":
    main()
