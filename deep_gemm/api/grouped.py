"""M-grouped FP8 GEMMs for Mixture-of-Experts layers, DeepGEMM-compatible names.

Contiguous (prefill / training): a = (A e4m3 [M_sum, K], sfa [M_sum, ceil(K/128)]) holds every
expert's rows back to back, each expert starting at a multiple of 128 rows
(`get_m_alignment_for_contiguous_layout()`); m_indices int32 [M_sum] gives each row's expert, -1 for
padding. b = (B e4m3 [G, N, K], sfb [G, ceil(N/128), ceil(K/128)]); d bf16 [M_sum, N].
Each 128-row block computes with the expert of its first row; blocks whose expert is not in
[0, G) are skipped (their output is left as it was). Padding rows inside an expert's last block are
computed and their output is unspecified. The kernel reads m_indices on the device: no host sync.

Masked (decode under CUDA graphs): a = (A [G, M_max, K], sfa [G, M_max, ceil(K/128)]),
d bf16 [G, M_max, N]; masked_m int32 [G] on the device gives each expert's valid rows (values are
clamped to [0, M_max] on the device). Rows past masked_m[g] are unspecified: the kernel computes whole
blocks of 64 or 128 rows, and writes nothing past an expert's last such block. expected_m is a host
hint for the config choice. Replaying a captured graph with new masked_m values is supported.
"""
from __future__ import annotations

import torch

from .. import envs, reference
from ..heuristics import fp8_gemm as heuristics
from ..kernels import fp8_gemm as kernel
from . import checks, device
from .calls import NAMES_V1, NAMES_V2, remember, resolve_config, try_replay
from .layout import get_mn_major_tma_aligned_tensor

_plans: dict[tuple, kernel.Fp8GemmPlan] = {}


def _check_common(a, b, d, layout, layout_name, recipe, names, a_rank):
    """Checks shared by both layouts; returns the unpacked tensors and (G, N, K)."""
    an, bn, dn = names
    na, nsfa, nb, nsfb = f"{an}[0] (A)", f"{an}[1] (sfa)", f"{bn}[0] (B)", f"{bn}[1] (sfb)"
    x, sfa = checks.pair(a, an)
    y, sfb = checks.pair(b, bn)
    checks.tensor(x, na, (checks.FP8,), a_rank)
    checks.tensor(sfa, nsfa, (torch.float32,), a_rank)
    checks.tensor(y, nb, (checks.FP8,), 3)
    checks.tensor(sfb, nsfb, (torch.float32,), 3)
    checks.tensor(d, dn, (torch.bfloat16,), a_rank)
    checks.tensor(layout, layout_name, (torch.int32,), 1)
    checks.recipe_1d2d(recipe, "grouped GEMMs implement (1, 128, 128)")
    g, n, k = y.shape
    if x.shape[-1] != k:
        raise ValueError(f"{na}: expected K={k} (from {nb}'s shape {tuple(y.shape)}) as its last dimension, "
                         f"got shape {tuple(x.shape)}")
    kb = -(-k // 128)
    checks.shape(sfa, nsfa, (*x.shape[:-1], kb), "= (rows, ceil(K/128))")
    checks.shape(sfb, nsfb, (g, -(-n // 128), kb), "= (G, ceil(N/128), ceil(K/128))")
    checks.shape(d, dn, (*x.shape[:-1], n), "= (rows, N)")
    checks.same_device(na, x, ((nsfa, sfa), (nb, y), (nsfb, sfb), (dn, d), (layout_name, layout)))
    checks.output_not_aliasing(d, dn, ((na, x), (nsfa, sfa), (nb, y), (nsfb, sfb), (layout_name, layout)))
    return x, sfa, y, sfb, g, n, k


def _check_kernel_layouts(x, y, sfb, d, names, n):
    an, bn, dn = names
    checks.k_major_operand(x, f"{an}[0] (A)")
    checks.k_major_operand(y, f"{bn}[0] (B)")
    if y.shape[0] > 1 and y.stride(0) != y.shape[1] * y.stride(1):
        raise ValueError(f"{bn}[0] (B): the experts' weights must follow each other with no gap "
                         f"(stride(0) == N * stride(1)), got strides {tuple(y.stride())}; pass a contiguous tensor")
    if sfb.stride(2) != 1:
        raise ValueError(f"{bn}[1] (sfb): expected unit stride along K blocks, got strides {tuple(sfb.stride())}")
    if d.stride(-1) != 1:
        raise ValueError(f"{dn}: expected unit stride along N, got strides {tuple(d.stride())}")


def _epilogue(d: torch.Tensor) -> int:
    aligned = all((s * d.element_size()) % 16 == 0 for s in d.stride()[:-1]) and d.data_ptr() % 16 == 0
    return kernel.EPI_TMA_STORE if aligned else kernel.EPI_DIRECT


def _plan(kind, m, n, k, groups, expected_m, epilogue, dev, config) -> kernel.Fp8GemmPlan:
    num_sms = device.num_sms_for(dev)
    key = (kind, m, n, k, groups, expected_m, epilogue, dev, num_sms, config)
    plan = _plans.get(key)
    if plan is not None:
        return plan
    what = "masked" if kind == kernel.KIND_MASKED else "contiguous"
    rows = expected_m if kind == kernel.KIND_MASKED else m   # the model's m: per expert, or all rows
    cfg = resolve_config(lambda: heuristics.ranked_configs(rows, n, k, False, epilogue, num_sms, kind, groups),
                          config, num_sms, f"m_grouped_fp8_gemm_nt_{what} M={m} N={n} K={k} G={groups}", mn=(m, n),
                          out_f32=False, epilogue=epilogue, kind=kind, k_tail=kernel.k_tail_steps(k))
    if envs.print_configs():
        print(f"[deep_gemm] m_grouped {what} G={groups}: {heuristics.describe(cfg, m, n, k)}")
    plan = kernel.Fp8GemmPlan(cfg, m, n, k, dev, num_groups=groups)
    _plans[key] = plan
    return plan


# --------------------------------------------------------------------------------------------- contiguous
def m_grouped_fp8_gemm_nt_contiguous(a, b, d, m_indices, recipe=None, compiled_dims: str = "nk",
                                     disable_ue8m0_cast: bool = False, *, config=None) -> None:
    """Contiguous M-grouped GEMM (see the module docstring for the layout and the -1 rows)."""
    _contiguous(a, b, d, m_indices, recipe, config, NAMES_V2)


def m_grouped_gemm_fp8_fp8_bf16_nt_contiguous(lhs, rhs, out, m_indices) -> None:
    """DeepGEMM 1.x name of m_grouped_fp8_gemm_nt_contiguous."""
    _contiguous(lhs, rhs, out, m_indices, None, None, NAMES_V1)


def _contiguous(a, b, d, m_indices, recipe, config, names) -> None:
    key = None
    if recipe is None and config is None:
        key, launched = try_replay(a, b, d, m_indices, "contiguous")
        if launched:
            return
    x, sfa, y, sfb, g, n, k = _check_common(a, b, d, m_indices, "m_indices", recipe, names, 2)
    m_sum = x.shape[0]
    checks.shape(m_indices, "m_indices", (m_sum,), "= (M_sum,), one expert id per row")
    if m_sum == 0 or n == 0 or g == 0:
        return
    if k == 0:   # the product is zero; the kernel always runs at least one k-block, so it is not launched
        d.masked_fill_(((m_indices >= 0) & (m_indices < g))[:, None], 0)
        return
    if not device.use_kernels(x, "m_grouped_fp8_gemm_nt_contiguous"):
        # Only rows of valid experts are defined; the reference gives 0 for the rest.
        d.copy_(reference.m_grouped_fp8_gemm_nt_contiguous(x, sfa, y, sfb, m_indices.clamp(-1, g - 1)
                                                           .masked_fill(m_indices >= g, -1), out_dtype=d.dtype))
        return
    _check_kernel_layouts(x, y, sfb, d, names, n)
    if m_indices.stride(0) != 1:
        raise ValueError(f"m_indices: expected a contiguous tensor, got stride {m_indices.stride(0)}")
    sfa_given = sfa
    sfa = get_mn_major_tma_aligned_tensor(sfa)
    epilogue = _epilogue(d)
    plan = _plan(kernel.KIND_CONTIGUOUS, m_sum, n, k, g, None, epilogue, x.device.index, config)
    params = plan.make_params(x.data_ptr(), x.stride(0), y.data_ptr(), y.stride(1), sfa.data_ptr(), sfa.stride(1),
                              sfb.data_ptr(), sfb.stride(1), d.data_ptr(), d.stride(0),
                              layout_ptr=m_indices.data_ptr(), sfb_group_stride=sfb.stride(0))
    plan.launch(params)
    if key is not None and sfa is sfa_given:
        remember(key, plan, params)


# --------------------------------------------------------------------------------------------- masked
def m_grouped_fp8_gemm_nt_masked(a, b, d, masked_m, expected_m, recipe=None, compiled_dims: str = "nk",
                                 disable_ue8m0_cast: bool = False, *, config=None) -> None:
    """Masked M-grouped GEMM (see the module docstring); capturable in CUDA graphs."""
    _masked(a, b, d, masked_m, expected_m, recipe, config, NAMES_V2)


fp8_m_grouped_gemm_nt_masked = m_grouped_fp8_gemm_nt_masked


def m_grouped_gemm_fp8_fp8_bf16_nt_masked(lhs, rhs, out, masked_m, expected_m) -> None:
    """DeepGEMM 1.x name of m_grouped_fp8_gemm_nt_masked."""
    _masked(lhs, rhs, out, masked_m, expected_m, None, None, NAMES_V1)


def _valid_rows(masked_m: torch.Tensor, m_max: int) -> torch.Tensor:
    """[G, M_max] bool, true for the rows each expert has (masked_m clamped to [0, M_max]), built on
    the device from the device's counts."""
    return torch.arange(m_max, device=masked_m.device)[None, :] < masked_m.clamp(0, m_max)[:, None]


def _masked(a, b, d, masked_m, expected_m, recipe, config, names) -> None:
    key = None
    if recipe is None and config is None and type(expected_m) is int:
        key, launched = try_replay(a, b, d, masked_m, "masked", expected_m)
        if launched:
            return
    x, sfa, y, sfb, g, n, k = _check_common(a, b, d, masked_m, "masked_m", recipe, names, 3)
    if x.shape[0] != g:
        raise ValueError(f"{names[0]}[0] (A): expected {g} experts (from B) as dimension 0, got shape {tuple(x.shape)}")
    checks.shape(masked_m, "masked_m", (g,), "= (G,), valid rows per expert")
    if isinstance(expected_m, bool) or not isinstance(expected_m, int) or expected_m < 0:
        raise ValueError(f"expected_m: expected a non-negative int (a hint of rows per expert), got {expected_m!r}")
    m_max = x.shape[1]
    if m_max == 0 or n == 0 or g == 0:
        return
    if k == 0:   # as for the contiguous kind; on the device, so a CUDA graph replays it with new counts
        d.masked_fill_(_valid_rows(masked_m, m_max)[..., None], 0)
        return
    if not device.use_kernels(x, "m_grouped_fp8_gemm_nt_masked"):
        ref = reference.m_grouped_fp8_gemm_nt_masked(x, sfa, y, sfb, masked_m.clamp(0, m_max), out_dtype=d.dtype)
        rows = _valid_rows(masked_m, m_max)
        d[rows] = ref[rows]
        return
    _check_kernel_layouts(x, y, sfb, d, names, n)
    if (x.stride(0) * x.element_size()) % 16:
        raise ValueError(f"{names[0]}[0] (A): expert stride {x.stride(0)} is not a multiple of 16 bytes")
    if masked_m.stride(0) != 1:
        raise ValueError(f"masked_m: expected a contiguous tensor, got stride {masked_m.stride(0)}")
    epilogue = _epilogue(d)
    if epilogue == kernel.EPI_DIRECT and d.stride(0) != m_max * d.stride(1):
        raise ValueError(f"{names[2]}: rows that are not 16-byte aligned take the direct-store epilogue, which "
                         f"needs d contiguous across experts (stride(0) == M_max * stride(1)), got strides "
                         f"{tuple(d.stride())}")
    sfa_given = sfa
    sfa = get_mn_major_tma_aligned_tensor(sfa)
    hint = max(1, min(expected_m, m_max))
    plan = _plan(kernel.KIND_MASKED, m_max, n, k, g, hint, epilogue, x.device.index, config)
    params = plan.make_params(x.data_ptr(), x.stride(1), y.data_ptr(), y.stride(1), sfa.data_ptr(), sfa.stride(2),
                              sfb.data_ptr(), sfb.stride(1), d.data_ptr(), d.stride(1),
                              layout_ptr=masked_m.data_ptr(), a_group_stride=x.stride(0),
                              sfa_group_stride=sfa.stride(0), sfb_group_stride=sfb.stride(0),
                              d_group_stride=d.stride(0))
    plan.launch(params)
    if key is not None and sfa is sfa_given:
        remember(key, plan, params)
