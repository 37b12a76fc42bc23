"""Random FP8 GEMM problems for tests and benchmarks (never zeros: they hide unwritten outputs)."""
from __future__ import annotations

import torch


def fp8_gemm_inputs(m: int, n: int, k: int, device="cuda", spread_scales: bool = False, mn_major_sfa: bool = False):
    """Returns (a, b, (qa, sfa), (qb, sfb)): BF16 originals and their 1x128 / 128x128 FP8 casts.
    `spread_scales` gives rows very different magnitudes (2^-4..2^4) so wrong scale indexing shows;
    `mn_major_sfa` returns sfa already in the layout the kernel reads."""
    from ..api.layout import get_mn_major_tma_aligned_tensor
    from ..api.quant import per_block_cast_to_fp8, per_token_cast_to_fp8
    a = torch.randn(m, k, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, k, device=device, dtype=torch.bfloat16)
    if spread_scales:
        a = a * torch.exp2(torch.randint(-4, 5, (m, 1), device=device)).to(a.dtype)
        b = b * torch.exp2(torch.randint(-4, 5, (n, 1), device=device)).to(b.dtype)
    qa, sfa = per_token_cast_to_fp8(a)
    qb, sfb = per_block_cast_to_fp8(b)
    if mn_major_sfa:
        sfa = get_mn_major_tma_aligned_tensor(sfa)
    return a, b, (qa, sfa), (qb, sfb)
