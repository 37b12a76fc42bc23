"""M-grouped FP8 GEMMs (MoE) on a Hopper GPU against a float64 reference of the valid rows, on fresh
random inputs, with the output poisoned first."""
import pytest
import torch

import deep_gemm
from deep_gemm import reference
from deep_gemm.kernels.fp8_gemm import KIND_CONTIGUOUS, PAIR_N, Fp8GemmConfig
from deep_gemm.testing import rel_fro_error

from conftest import requires_hopper

pytestmark = [pytest.mark.gpu, requires_hopper]

BF16_TOL = 4e-3
NK = [(4096, 7168), (7168, 2048), (6144, 7168), (7168, 3072)]


def expert_weights(g, n, k, chunk=16):
    """FP8 weights of g experts, quantized a few experts at a time (256 experts of 4096 x 7168 in
    float32 would not fit on the card)."""
    parts = [deep_gemm.per_block_cast_to_fp8(torch.randn(min(chunk, g - i), n, k, device="cuda", dtype=torch.bfloat16))
             for i in range(0, g, chunk)]
    return torch.cat([q for q, _ in parts]), torch.cat([sf for _, sf in parts])


def grouped_reference(qa, qb, m_indices):
    """float64 reference, one expert at a time (a dequantized float64 copy of every expert would
    not fit); rows of invalid experts come back as NaN."""
    ref = torch.full((m_indices.numel(), qb[0].shape[1]), float("nan"), device="cuda", dtype=torch.float64)
    for g in range(qb[0].shape[0]):
        rows = (m_indices == g).nonzero().squeeze(1)
        if rows.numel():
            ref[rows] = reference.fp8_gemm_nt(qa[0][rows], qa[1][rows], qb[0][g], qb[1][g],
                                              out_dtype=torch.float64, compute_dtype=torch.float64)
    return ref


def uneven_sizes(groups, mean, empty=0):
    """Rows per expert: 0.7x to 1.3x the mean, `empty` experts with none."""
    sizes = (torch.rand(groups) * 0.6 + 0.7).mul(mean).round().long().clamp(min=1)
    if empty:
        sizes[torch.randperm(groups)[:empty]] = 0
    return sizes.tolist()


def contiguous_layout(sizes):
    """m_indices with every expert starting at a multiple of 128 rows, -1 on the padding."""
    align = deep_gemm.get_m_alignment_for_contiguous_layout()
    ids = []
    for g, rows in enumerate(sizes):
        padded = -(-rows // align) * align
        ids += [g] * rows + [-1] * (padded - rows)
    return torch.tensor(ids, dtype=torch.int32, device="cuda")


def check_contiguous(sizes, n, k, config=None):
    g = len(sizes)
    m_indices = contiguous_layout(sizes)
    m_sum = m_indices.numel()
    a = torch.randn(m_sum, k, device="cuda", dtype=torch.bfloat16)
    qa = deep_gemm.per_token_cast_to_fp8(a)
    qb = expert_weights(g, n, k)
    d = torch.full((m_sum, n), float("nan"), device="cuda", dtype=torch.bfloat16)
    deep_gemm.m_grouped_fp8_gemm_nt_contiguous(qa, qb, d, m_indices, config=config)
    valid = m_indices >= 0
    ref = grouped_reference(qa, qb, m_indices)
    assert not torch.isnan(d[valid]).any(), "valid rows left unwritten"
    # 128-row blocks that are all padding are skipped, whatever the tile height
    blocks = m_indices.view(-1, 128)
    skipped = (blocks < 0).all(dim=1).repeat_interleave(128)
    assert torch.isnan(d[skipped]).all(), "an all-padding block was written"
    assert rel_fro_error(d[valid].double(), ref[valid]) < BF16_TOL
    return qa, qb, m_indices, d


@pytest.mark.parametrize("n,k", NK)
@pytest.mark.parametrize("groups,rows", [(4, 8192), (8, 4096), (32, 256), (256, 16)])
def test_contiguous_even(groups, rows, n, k):
    check_contiguous([rows] * groups, n, k)


@pytest.mark.parametrize("n,k", NK)
@pytest.mark.parametrize("groups,rows,empty", [(8, 4096, 2), (32, 256, 5), (16, 100, 3)])
def test_contiguous_uneven_with_empty_experts(groups, rows, empty, n, k):
    check_contiguous(uneven_sizes(groups, rows, empty), n, k)


def test_contiguous_odd_n_and_bitwise_repeat():
    qa, qb, m_indices, d = check_contiguous([300, 0, 129], 1000, 896)
    again = torch.full_like(d, float("nan"))
    deep_gemm.m_grouped_fp8_gemm_nt_contiguous(qa, qb, again, m_indices)
    valid = m_indices >= 0
    assert torch.equal(d[valid], again[valid])


def test_contiguous_short_last_k_block():
    # K = 592: the last k-block holds 80 of 128 columns and runs three of its four wgmma steps
    check_contiguous([300, 0, 129, 256], 1000, 592)


# 256-row tiles: a tile whose two 128-row halves belong to different experts runs once per expert.
TWO_EXPERT_TILES = [Fp8GemmConfig(256, 128, 3, 2, kind=KIND_CONTIGUOUS),
                    Fp8GemmConfig(256, 96, 3, 2, PAIR_N, kind=KIND_CONTIGUOUS)]


@pytest.mark.parametrize("config", TWO_EXPERT_TILES, ids=lambda c: c.kernel_name())
@pytest.mark.parametrize("sizes", [[128, 256, 128], [300, 0, 129, 1000, 77, 0], [640] * 4, [100] * 9])
def test_contiguous_256_row_tiles_across_experts(sizes, config):
    check_contiguous(sizes, 1000, 896, config)


@pytest.mark.parametrize("config", [None] + TWO_EXPERT_TILES, ids=lambda c: c.kernel_name() if c else "auto")
def test_contiguous_out_of_range_ids_are_skipped_safely(config):
    sizes = [256, 256, 256]
    m_indices = contiguous_layout(sizes)
    m_indices[256:384] = 7        # not an expert: the block must be skipped, not read out of bounds
    m_indices[512:640] = -5
    n, k = 512, 512
    a = torch.randn(m_indices.numel(), k, device="cuda", dtype=torch.bfloat16)
    qa, qb = deep_gemm.per_token_cast_to_fp8(a), expert_weights(3, n, k)
    d = torch.full((m_indices.numel(), n), float("nan"), device="cuda", dtype=torch.bfloat16)
    deep_gemm.m_grouped_fp8_gemm_nt_contiguous(qa, qb, d, m_indices, config=config)
    torch.cuda.synchronize()
    valid = (m_indices >= 0) & (m_indices < 3)
    ref = reference.m_grouped_fp8_gemm_nt_contiguous(*qa, *qb, torch.where(valid, m_indices, -1),
                                                     out_dtype=torch.float64, compute_dtype=torch.float64)
    assert rel_fro_error(d[valid].double(), ref[valid]) < BF16_TOL
    assert torch.isnan(d[~valid]).all(), "skipped blocks must be left untouched"


def masked_problem(g, m_max, n, k):
    a = torch.randn(g, m_max, k, device="cuda", dtype=torch.bfloat16)
    return deep_gemm.per_token_cast_to_fp8(a), expert_weights(g, n, k)


def check_masked(qa, qb, d, masked_m):
    """Valid rows match a float64 reference. Rows past masked_m are unspecified (the kernel computes
    whole row blocks of at most 128), but rows past the last such block must stay poisoned."""
    m_max = qa[0].shape[1]
    counts = masked_m.clamp(0, m_max).tolist()
    for g, rows in enumerate(counts):
        if rows:
            ref = reference.fp8_gemm_nt(qa[0][g, :rows], qa[1][g, :rows], qb[0][g], qb[1][g],
                                        out_dtype=torch.float64, compute_dtype=torch.float64)
            assert not torch.isnan(d[g, :rows]).any(), f"expert {g}: valid rows left unwritten"
            assert rel_fro_error(d[g, :rows].double(), ref) < BF16_TOL, f"expert {g}"
        first_untouched = -(-rows // 128) * 128
        assert torch.isnan(d[g, first_untouched:]).all(), f"expert {g}: rows past its last row block were written"


@pytest.mark.parametrize("n,k", NK)
@pytest.mark.parametrize("groups,expected", [(1, 1024), (2, 512), (4, 256), (32, 192), (6, 20), (32, 20)])
def test_masked(groups, expected, n, k):
    m_max = 4096
    qa, qb = masked_problem(groups, m_max, n, k)
    masked_m = (torch.rand(groups) * 0.6 + 0.7).mul(expected).round().int()
    if groups > 2:
        masked_m[0] = 0
    masked_m = masked_m.cuda()
    d = torch.full((groups, m_max, n), float("nan"), device="cuda", dtype=torch.bfloat16)
    deep_gemm.m_grouped_fp8_gemm_nt_masked(qa, qb, d, masked_m, expected)
    check_masked(qa, qb, d, masked_m)


def test_masked_graph_replay_with_new_counts():
    g, m_max, n, k = 6, 512, 4096, 7168
    qa, qb = masked_problem(g, m_max, n, k)
    sfa = deep_gemm.get_mn_major_tma_aligned_tensor(qa[1])
    masked_m = torch.tensor([64] * g, dtype=torch.int32, device="cuda")
    d = torch.empty(g, m_max, n, device="cuda", dtype=torch.bfloat16)
    deep_gemm.m_grouped_fp8_gemm_nt_masked((qa[0], sfa), qb, d, masked_m, 64)   # warm up outside the graph
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        deep_gemm.m_grouped_fp8_gemm_nt_masked((qa[0], sfa), qb, d, masked_m, 64)
    for counts in ([0, 512, 1, 300, 0, 129], [512] * 6, [0] * 6, [17, 0, 0, 0, 0, 511]):
        masked_m.copy_(torch.tensor(counts, dtype=torch.int32))
        d.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        check_masked(qa, qb, d, masked_m)


@pytest.mark.parametrize("g,m_max,n,k,counts,expected", [
    (3, 256, 512, 512, [10_000, -3, 100], 100),    # counts out of range are clamped to [0, M_max]
    (4, 300, 100, 384, [300, 7, 0, 129], 128),     # odd N: the direct-store epilogue
    (4, 512, 1000, 592, [512, 0, 300, 77], 256),   # a short last k-block (80 of 128 columns)
], ids=["clamped_counts", "odd_n_direct_store", "short_last_k_block"])
def test_masked_edge_cases(g, m_max, n, k, counts, expected):
    qa, qb = masked_problem(g, m_max, n, k)
    masked_m = torch.tensor(counts, dtype=torch.int32, device="cuda")
    d = torch.full((g, m_max, n), float("nan"), device="cuda", dtype=torch.bfloat16)
    deep_gemm.m_grouped_fp8_gemm_nt_masked(qa, qb, d, masked_m, expected)
    check_masked(qa, qb, d, masked_m)


def test_v1_names_match_v2():
    sizes = [128, 256]
    m_indices = contiguous_layout(sizes)
    n, k = 256, 512
    a = torch.randn(m_indices.numel(), k, device="cuda", dtype=torch.bfloat16)
    qa, qb = deep_gemm.per_token_cast_to_fp8(a), expert_weights(2, n, k)
    d1 = torch.empty(m_indices.numel(), n, device="cuda", dtype=torch.bfloat16)
    d2 = torch.empty_like(d1)
    deep_gemm.m_grouped_fp8_gemm_nt_contiguous(qa, qb, d1, m_indices)
    deep_gemm.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous(qa, qb, d2, m_indices)
    assert torch.equal(d1, d2)


@pytest.mark.parametrize("config", [Fp8GemmConfig(64, 128, 6, 1, pipelined=True, split_k=4),
                                    Fp8GemmConfig(64, 112, 6, 1, split_k=3)], ids=lambda c: c.kernel_name())
def test_masked_split_k_graph_replay(config):
    """Split-K clusters in the masked kind: counts change between replays, results stay bitwise equal."""
    g, m_max, n, k = 5, 256, 2112, 7168
    qa, qb = masked_problem(g, m_max, n, k)
    sfa = deep_gemm.get_mn_major_tma_aligned_tensor(qa[1])
    masked_m = torch.tensor([20] * g, dtype=torch.int32, device="cuda")
    d = torch.empty(g, m_max, n, device="cuda", dtype=torch.bfloat16)
    deep_gemm.m_grouped_fp8_gemm_nt_masked((qa[0], sfa), qb, d, masked_m, 20, config=config)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        deep_gemm.m_grouped_fp8_gemm_nt_masked((qa[0], sfa), qb, d, masked_m, 20, config=config)
    for counts in ([0, 256, 1, 65, 20], [0] * 5, [7, 0, 0, 0, 255]):
        masked_m.copy_(torch.tensor(counts, dtype=torch.int32))
        d.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        check_masked(qa, qb, d, masked_m)
        first = d.clone()
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(torch.nan_to_num(first, 7.0), torch.nan_to_num(d, 7.0))
