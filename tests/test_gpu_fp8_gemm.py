"""FP8 dense GEMM on a Hopper GPU against the float64 reference, on fresh random inputs, with the
output poisoned first so unwritten elements show."""
import pytest
import torch

import deep_gemm
from deep_gemm import reference
from deep_gemm.kernels.fp8_gemm import PAIR_M, PAIR_N, PAIR_NONE, Fp8GemmConfig
from deep_gemm.testing import calc_diff, fp8_gemm_inputs, rel_fro_error

from conftest import requires_hopper

pytestmark = [pytest.mark.gpu, requires_hopper]

BF16_TOL = 4e-3     # DESIGN.md section 4: BF16 rounding of the result
F32_TOL = 2e-4      # DESIGN.md section 4
# The tensor cores sum each 128-K block of FP8 products at reduced precision before it is
# promoted to FP32. On outputs of a few hundred elements that error is not averaged out: on
# 7x100x384 (H200, 20 fresh inputs) the relative error was 1.2e-4 at the median and 1.75e-4 at
# worst, the same bits with the TMA and the direct-store epilogue, and 2.2e-4 once in a test run.
F32_TOL_TINY, TINY_OUTPUT = 3e-4, 4096


def make_problem(m, n, k):
    # rows/blocks of very different magnitude, so wrong scale indexing shows
    return fp8_gemm_inputs(m, n, k, spread_scales=True)


def run_and_check(m, n, k, out_dtype=torch.bfloat16, with_c=False, config=None):
    a, b, (qa, sfa), (qb, sfb) = make_problem(m, n, k)
    d = torch.full((m, n), float("nan"), device="cuda", dtype=out_dtype)
    c = torch.randn(m, n, device="cuda") if with_c else None
    deep_gemm.fp8_gemm_nt((qa, sfa), (qb, sfb), d, c=c, config=config)
    ref = reference.fp8_gemm_nt(qa, sfa, qb, sfb, c=c, out_dtype=torch.float64, compute_dtype=torch.float64)
    assert not torch.isnan(d).any(), "unwritten (poisoned) output elements"
    err = rel_fro_error(d.double(), ref)
    f32_tol = F32_TOL_TINY if m * n < TINY_OUTPUT else F32_TOL
    assert err < (f32_tol if out_dtype == torch.float32 else BF16_TOL), f"relative error {err:.2e}"
    if not with_c:
        # DeepGEMM's metric against the unquantized inputs. On outputs of a few dozen elements the
        # FP8 input rounding alone can exceed 1e-3, so there the bound is what the exact
        # dequantized product scores (the kernel must not add error of its own).
        unquantized = a.double() @ b.double().T
        floor = calc_diff(ref.to(out_dtype).double(), unquantized)
        assert calc_diff(d.double(), unquantized) < (1e-3 if floor < 5e-4 else floor + 1e-3)
    return d, (qa, sfa), (qb, sfb), c


def assert_repeats_bitwise(d1, qa, qb, config=None, times=1):
    """The same call into a poisoned output gives the same bits (fixed-order reductions)."""
    for _ in range(times):
        d2 = torch.full_like(d1, float("nan"))
        deep_gemm.fp8_gemm_nt(qa, qb, d2, config=config)
        assert torch.equal(d1, d2), "not bitwise reproducible"


def check_graph_replay(m, n, k, config=None, calls=1):
    """Captures `calls` back-to-back GEMMs in a CUDA graph (after a warm-up call outside it), replays
    into a poisoned output and checks the result."""
    a, b, (qa, sfa), (qb, sfb) = make_problem(m, n, k)
    sfa = deep_gemm.get_mn_major_tma_aligned_tensor(sfa)
    d = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
    deep_gemm.fp8_gemm_nt((qa, sfa), (qb, sfb), d, config=config)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            deep_gemm.fp8_gemm_nt((qa, sfa), (qb, sfb), d, config=config)
    d.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    ref = reference.fp8_gemm_nt(qa, sfa, qb, sfb, out_dtype=torch.float64, compute_dtype=torch.float64)
    assert rel_fro_error(d.double(), ref) < BF16_TOL


ODD_M = [1, 7, 65, 300, 4097]
ODD_N = [8, 24, 136, 4104]
ODD_K = [128, 384, 7168, 7232]


@pytest.mark.parametrize("k", ODD_K)
@pytest.mark.parametrize("n", ODD_N)
@pytest.mark.parametrize("m", ODD_M)
def test_odd_shapes_heuristic(m, n, k):
    run_and_check(m, n, k)


BENCH_NK = [(2112, 7168), (576, 7168), (7168, 576), (24576, 1536), (32768, 512), (7168, 16384), (4096, 7168),
            (7168, 2048)]


@pytest.mark.parametrize("n,k", BENCH_NK)
@pytest.mark.parametrize("m", [64, 128, 4096])
def test_benchmark_shapes(m, n, k):
    run_and_check(m, n, k)


FORCED = [
    Fp8GemmConfig(128, 128, 5, 2),
    Fp8GemmConfig(128, 112, 6, 2),
    Fp8GemmConfig(128, 136, 5, 2),
    Fp8GemmConfig(128, 144, 5, 2, PAIR_M),
    Fp8GemmConfig(128, 160, 4, 2, PAIR_N),
    Fp8GemmConfig(128, 192, 4, 2),
    Fp8GemmConfig(128, 160, 4, 2, PAIR_M),
    Fp8GemmConfig(64, 16, 8, 1, PAIR_N),
    Fp8GemmConfig(64, 8, 8, 1),
    Fp8GemmConfig(64, 192, 5, 1),
    Fp8GemmConfig(256, 64, 3, 2),
    Fp8GemmConfig(256, 80, 3, 2, PAIR_M),
    # 128-row warpgroups whose two m64 slices share one temporary accumulator, taking turns
    Fp8GemmConfig(256, 128, 3, 2),
    Fp8GemmConfig(256, 128, 3, 2, PAIR_N),
    Fp8GemmConfig(256, 120, 3, 2, PAIR_N),
    Fp8GemmConfig(256, 96, 3, 2, PAIR_M),
    Fp8GemmConfig(128, 128, 5, 2, PAIR_M, pipelined=True),
    Fp8GemmConfig(128, 112, 6, 2, PAIR_N, pipelined=True),
    Fp8GemmConfig(64, 128, 6, 1, PAIR_NONE, pipelined=True),
    Fp8GemmConfig(64, 24, 8, 1, PAIR_N, pipelined=True),
]


@pytest.mark.parametrize("config", FORCED, ids=lambda c: c.kernel_name())
@pytest.mark.parametrize("m,n,k", [(777, 1000, 896), (4096, 4104, 7232), (129, 8, 128)])
def test_forced_configs(config, m, n, k):
    run_and_check(m, n, k, config=config)


# A short last k-block (K % 128 of 1 to 96) runs only the 32-wide steps that hold data: tails of
# 1, 3 and 2 steps, through every main loop (serial with one and two m64 slices, pipelined, split-K
# serial and pipelined; K = 144 under split 3 puts the short block first in its slice).
SHORT_K = [144, 400, 592, 7232]
SHORT_K_CONFIGS = [None, Fp8GemmConfig(256, 128, 3, 2), Fp8GemmConfig(128, 192, 4, 2), Fp8GemmConfig(64, 144, 5, 1),
                   Fp8GemmConfig(64, 128, 6, 1, pipelined=True), Fp8GemmConfig(64, 112, 6, 1, split_k=3),
                   Fp8GemmConfig(128, 128, 4, 2, pipelined=True, split_k=2)]


@pytest.mark.parametrize("config", SHORT_K_CONFIGS, ids=lambda c: c.kernel_name() if c else "auto")
@pytest.mark.parametrize("k", SHORT_K)
def test_short_last_k_block(k, config):
    run_and_check(300, 1000, k, config=config)


@pytest.mark.parametrize("m,n,k", [(300, 4104, 7168), (4096, 7168, 2048), (7, 100, 384), (65, 4097, 256),
                                   (777, 1000, 592)])
@pytest.mark.parametrize("with_c", [False, True])
def test_fp32_output(m, n, k, with_c):
    run_and_check(m, n, k, out_dtype=torch.float32, with_c=with_c)


def test_accumulate_in_place():
    m, n, k = 1000, 2048, 1024
    a, b, (qa, sfa), (qb, sfb) = make_problem(m, n, k)
    d = torch.randn(m, n, device="cuda")
    expected = reference.fp8_gemm_nt(qa, sfa, qb, sfb, c=d, out_dtype=torch.float64, compute_dtype=torch.float64)
    deep_gemm.fp8_gemm_nt((qa, sfa), (qb, sfb), d, c=d)
    assert rel_fro_error(d.double(), expected) < F32_TOL


@pytest.mark.parametrize("m,n,k", [(4096, 7168, 7168), (300, 4104, 7232), (64, 2112, 7168)])
def test_bitwise_reproducible(m, n, k):
    d1, qa, qb, _ = run_and_check(m, n, k)
    assert_repeats_bitwise(d1, qa, qb, times=3)


def test_strided_and_row_major_scales():
    m, n, k = 500, 640, 1024
    a, b, (qa, sfa), (qb, sfb) = make_problem(m, n, k)
    big = torch.empty(m, k + 256, device="cuda", dtype=qa.dtype)
    big[:, :k] = qa
    d1 = torch.full((m, n), float("nan"), device="cuda", dtype=torch.bfloat16)
    d2 = torch.full_like(d1, float("nan"))
    deep_gemm.fp8_gemm_nt((big[:, :k], sfa), (qb, sfb), d1)
    deep_gemm.fp8_gemm_nt((qa, deep_gemm.get_mn_major_tma_aligned_tensor(sfa)), (qb, sfb), d2)
    assert torch.equal(d1, d2)


def test_nan_and_inf_propagate():
    m, n, k = 256, 256, 512
    a, b, (qa, sfa), (qb, sfb) = make_problem(m, n, k)
    sfa = sfa.clone()
    sfa[3, 1] = float("nan")
    sfa[10, 0] = float("inf")
    d = torch.zeros(m, n, device="cuda", dtype=torch.float32)
    deep_gemm.fp8_gemm_nt((qa, sfa), (qb, sfb), d)
    assert torch.isnan(d[3]).all()
    assert (~torch.isfinite(d[10])).all()
    others = torch.ones(m, dtype=torch.bool)
    others[[3, 10]] = False
    assert torch.isfinite(d[others]).all()


def test_cuda_graph_capture():
    check_graph_replay(128, 4096, 7168)


# ---------------------------------------------------------------------------------------- small M
# Issue 5: decode sizes across the DeepSeek-V3 (N, K) set; the heuristic picks split-K for most.
DECODE_M = [1, 2, 7, 16, 33, 64, 100, 128]


@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float32], ids=["bf16", "f32"])
@pytest.mark.parametrize("n,k", BENCH_NK)
@pytest.mark.parametrize("m", DECODE_M)
def test_decode_shapes_bitwise(m, n, k, out_dtype):
    d1, qa, qb, _ = run_and_check(m, n, k, out_dtype=out_dtype)
    assert_repeats_bitwise(d1, qa, qb)


SPLIT = [
    Fp8GemmConfig(64, 128, 6, 1, pipelined=True, split_k=2),
    Fp8GemmConfig(64, 128, 6, 1, pipelined=True, split_k=4),
    Fp8GemmConfig(64, 112, 6, 1, split_k=3),
    Fp8GemmConfig(64, 192, 5, 1, split_k=8),
    Fp8GemmConfig(64, 48, 8, 1, pipelined=True, split_k=7),
    Fp8GemmConfig(128, 128, 4, 2, pipelined=True, split_k=2),
    Fp8GemmConfig(128, 136, 4, 2, split_k=5),
    Fp8GemmConfig(256, 64, 3, 2, split_k=6),
]


# (kb = 57: uneven slices; K = 384 with split 4..8: some CTAs get no k-block at all)
@pytest.mark.parametrize("config", SPLIT, ids=lambda c: c.kernel_name())
@pytest.mark.parametrize("m,n,k", [(33, 2112, 7232), (300, 1000, 896), (7, 4104, 384)])
def test_split_k_forced(config, m, n, k):
    d1, qa, qb, _ = run_and_check(m, n, k, config=config)
    assert_repeats_bitwise(d1, qa, qb, config=config)


# Forced configs with FP32 output, with and without c (store or reduce-add follows from d and c).
# The TMA epilogue stores 128-byte column chunks (32 FP32 columns) plus a narrower tail chunk: these
# cover no tail, tails of 8, 16 and 24 columns, and a tile narrower than one chunk. The last two
# take the split-K reduction instead, on a decode-like shape.
FP32_FORCED = [pytest.param(cfg, shape, id=cfg.kernel_name()) for cfg, shape in [
    (Fp8GemmConfig(128, 128, 4, 2), (777, 1000, 896)),
    (Fp8GemmConfig(128, 136, 4, 2), (777, 1000, 896)),
    (Fp8GemmConfig(128, 112, 5, 2, PAIR_M), (777, 1000, 896)),
    (Fp8GemmConfig(64, 24, 8, 1), (777, 1000, 896)),
    (SPLIT[1], (100, 4104, 7168)),
    (SPLIT[6], (100, 4104, 7168)),
]]


@pytest.mark.parametrize("config,shape", FP32_FORCED)
@pytest.mark.parametrize("with_c", [False, True])
def test_fp32_forced_configs(config, shape, with_c):
    run_and_check(*shape, out_dtype=torch.float32, with_c=with_c, config=config)


def test_split_k_unaligned_output():
    """An output whose rows are not 8/16-byte aligned takes the scalar store path."""
    m, n, k = 17, 250, 2048
    a, b, (qa, sfa), (qb, sfb) = make_problem(m, n, k)
    big = torch.full((m, n + 3), float("nan"), device="cuda", dtype=torch.bfloat16)
    d = big[:, 1:n + 1]
    deep_gemm.fp8_gemm_nt((qa, sfa), (qb, sfb), d, config=SPLIT[1])
    ref = reference.fp8_gemm_nt(qa, sfa, qb, sfb, out_dtype=torch.float64, compute_dtype=torch.float64)
    assert rel_fro_error(d.double(), ref) < BF16_TOL
    assert torch.isnan(big[:, 0]).all() and torch.isnan(big[:, n + 1:]).all(), "wrote outside the view"


def test_split_k_cuda_graph():
    # three launches back to back in one graph, each writing d: nothing may leak between them
    check_graph_replay(64, 2112, 7168, config=SPLIT[1], calls=3)


# Outputs whose rows are not 16-byte aligned take the direct-store epilogue: 8-byte stores where
# the rows are 8-byte aligned and N allows (BF16: N % 4 == 0; FP32: N even), scalar ones otherwise.
# The padding after each row is poisoned and must stay so.
DIRECT = [
    (torch.bfloat16, 4, 136),   # 8-byte rows: vector stores
    (torch.bfloat16, 4, 4104),
    (torch.bfloat16, 2, 90),    # 8-byte rows but N % 4 != 0: scalar
    (torch.bfloat16, 1, 136),   # 2-byte rows: scalar
    (torch.float32, 2, 136),    # 8-byte rows: vector
    (torch.float32, 1, 4104),   # 4-byte rows: scalar
]


@pytest.mark.parametrize("config", [None, Fp8GemmConfig(256, 128, 4, 2), Fp8GemmConfig(128, 192, 5, 2),
                                    Fp8GemmConfig(64, 136, 6, 1)], ids=lambda c: c.kernel_name() if c else "pick")
@pytest.mark.parametrize("dtype,pad,n", DIRECT, ids=lambda x: str(x).replace("torch.", ""))
@pytest.mark.parametrize("m,k", [(300, 896), (4097, 7232)])
def test_direct_store_epilogue(m, n, k, dtype, pad, config):
    with_c = dtype == torch.float32 and pad == 2
    a, b, (qa, sfa), (qb, sfb) = make_problem(m, n, k)
    storage = torch.full((m, n + pad), float("nan"), device="cuda", dtype=dtype)
    d = storage[:, :n]
    c = torch.randn(m, n, device="cuda") if with_c else None
    deep_gemm.fp8_gemm_nt((qa, sfa), (qb, sfb), d, c=c, config=config)
    ref = reference.fp8_gemm_nt(qa, sfa, qb, sfb, c=c, out_dtype=torch.float64, compute_dtype=torch.float64)
    assert not torch.isnan(d).any(), "unwritten (poisoned) output elements"
    assert torch.isnan(storage[:, n:]).all(), "wrote into the row padding"
    assert rel_fro_error(d.double(), ref) < (F32_TOL if dtype == torch.float32 else BF16_TOL)


# Fills every SM's shared memory with NaN bytes (0xFF: NaN in e4m3 and in FP32), then reports
# whether the next launch still sees them, which is what makes the tail-box test below meaningful.
_SMEM_SOURCE = r"""
struct SmemParams { unsigned long long seen; unsigned words, fill; };
namespace deep_gemm {
__global__ void smem_residue(const __grid_constant__ SmemParams p) {
    extern __shared__ unsigned smem[];
    unsigned same = 0;
    for (unsigned i = threadIdx.x; i < p.words; i += blockDim.x) {
        if (p.fill) smem[i] = 0xFFFFFFFFu;
        else same += smem[i] == 0xFFFFFFFFu;
    }
    if (!p.fill) atomicAdd(reinterpret_cast<unsigned long long*>(p.seen), static_cast<unsigned long long>(same));
}
}
"""


def _poison_shared_memory() -> int:
    """Fills all shared memory of every SM with 0xFF, then returns how many of its words a second
    launch found still holding 0xFF."""
    import ctypes

    from deep_gemm.jit import runtime
    from deep_gemm.kernels.fp8_gemm import MAX_SMEM

    class SmemParams(ctypes.Structure):
        _fields_ = [("seen", ctypes.c_uint64), ("words", ctypes.c_uint32), ("fill", ctypes.c_uint32)]

    device = torch.cuda.current_device()
    kernel = runtime.get_kernel("test_smem_residue", _SMEM_SOURCE, "&deep_gemm::smem_residue")
    launcher = runtime.Launcher(kernel.function(device, MAX_SMEM), deep_gemm.get_num_sms(), 512, MAX_SMEM)
    seen = torch.zeros(1, dtype=torch.int64, device="cuda")
    stream = torch.cuda.current_stream().cuda_stream
    launcher(SmemParams(seen.data_ptr(), MAX_SMEM // 4, 1), stream)
    launcher(SmemParams(seen.data_ptr(), MAX_SMEM // 4, 0), stream)
    launcher(SmemParams(seen.data_ptr(), MAX_SMEM // 4, 1), stream)
    return int(seen.item())


@pytest.mark.parametrize("m,n,k,config", [
    (1, 2112, 7168, None), (7, 100, 384, None), (65, 4104, 7168, None), (33, 2112, 7232, None),
    (129, 1000, 896, Fp8GemmConfig(128, 112, 5, 2)), (300, 4104, 640, Fp8GemmConfig(256, 128, 3, 2)),
    (70, 330, 1024, Fp8GemmConfig(64, 64, 6, 1, split_k=2)),
], ids=str)
def test_tail_boxes_ignore_stale_shared_memory(m, n, k, config):
    """Where M or N is not a multiple of the tile, the last row (column) block loads only the rows
    that exist, and the rest of the stage keeps what shared memory held. Poisoned with NaN bytes
    just before each call, those rows must not reach any stored output."""
    a, b, (qa, sfa), (qb, sfb) = make_problem(m, n, k)
    sfa = deep_gemm.get_mn_major_tma_aligned_tensor(sfa)   # no layout kernel between poison and GEMM
    ref = reference.fp8_gemm_nt(qa, sfa, qb, sfb, out_dtype=torch.float64, compute_dtype=torch.float64)
    outputs = []
    for _ in range(2):
        d = torch.full((m, n), float("nan"), device="cuda", dtype=torch.bfloat16)
        assert _poison_shared_memory() > 0, "shared memory residue did not survive a launch: test premise"
        deep_gemm.fp8_gemm_nt((qa, sfa), (qb, sfb), d, config=config)
        assert not torch.isnan(d).any(), "NaN in the output: stale rows reached it, or it was not written"
        assert rel_fro_error(d.double(), ref) < BF16_TOL
        outputs.append(d)
    assert torch.equal(outputs[0], outputs[1]), "not bitwise reproducible"
