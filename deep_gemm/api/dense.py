"""Dense FP8 GEMM, NT layout: D = A_real @ B_real^T (+ C), DeepGEMM-compatible names.

a = (A e4m3 [M, K], sfa f32 [M, ceil(K/128)]) with 1x128 per-token scales;
b = (B e4m3 [N, K], sfb f32 [ceil(N/128), ceil(K/128)]) with 128x128 per-block scales;
d: bf16 or f32 [M, N], preallocated; c: optional f32 [M, N] (then d must be f32): D = C + A B^T.
sfa may be row-major or MN-major TMA-aligned (get_mn_major_tma_aligned_tensor); the former costs
one transposing copy per call. Calls are asynchronous on the current stream and graph-capturable.
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

def _validate(a, b, d, c, recipe, names=NAMES_V2):
    an, bn, dn = names
    na, nsfa, nb, nsfb = f"{an}[0] (A)", f"{an}[1] (sfa)", f"{bn}[0] (B)", f"{bn}[1] (sfb)"
    a, sfa = checks.pair(a, an)
    b, sfb = checks.pair(b, bn)
    checks.tensor(a, na, (checks.FP8,), 2)
    checks.tensor(sfa, nsfa, (torch.float32,), 2)
    checks.tensor(b, nb, (checks.FP8,), 2)
    checks.tensor(sfb, nsfb, (torch.float32,), 2)
    checks.tensor(d, dn, (torch.bfloat16, torch.float32), 2)
    checks.recipe_1d2d(recipe, "this function implements (1, 128, 128) (1x128 activations, 128x128 weights)",
                       "; for per-row weight scales use wgrad_gemm_fp8_fp8_fp32_nt")
    m, k = a.shape
    n = b.shape[0]
    kb = -(-k // 128)
    checks.shape(b, nb, (n, k), f"= (N, K) with K={k} from A")
    checks.shape(sfa, nsfa, (m, kb), "= (M, ceil(K/128))")
    checks.shape(sfb, nsfb, (-(-n // 128), kb), "= (ceil(N/128), ceil(K/128))")
    checks.shape(d, dn, (m, n), "= (M, N)")
    if c is not None:
        checks.tensor(c, "c", (torch.float32,), 2)
        checks.shape(c, "c", (m, n), "= (M, N)")
        if d.dtype != torch.float32:
            raise TypeError(f"{dn}: accumulating with c needs an FP32 {dn}, got {d.dtype}")
    checks.same_device(na, a, ((nsfa, sfa), (nb, b), (nsfb, sfb), (dn, d), ("c", c)))
    checks.output_not_aliasing(d, dn, ((na, a), (nsfa, sfa), (nb, b), (nsfb, sfb)))
    return a, sfa, b, sfb, m, n, k


def _epilogue(d: torch.Tensor, c) -> int:
    # TMA needs 16-byte aligned rows; it clips the tile at N itself.
    tma_ok = d.stride(1) == 1 and (d.stride(0) * d.element_size()) % 16 == 0 and d.data_ptr() % 16 == 0
    if c is None:
        return kernel.EPI_TMA_STORE if tma_ok else kernel.EPI_DIRECT
    return kernel.EPI_TMA_REDUCE if tma_ok else kernel.EPI_DIRECT_ACCUMULATE


def fp8_gemm_nt(a, b, d, c=None, recipe=None, compiled_dims: str = "nk", disable_ue8m0_cast: bool = False,
                *, config: kernel.Fp8GemmConfig | None = None) -> None:
    """D = A_real @ B_real^T (+ C). `config` forces a kernel config (for tuning); see
    deep_gemm.heuristics.fp8_gemm.choose_config for what the library would pick.
    `compiled_dims` and `disable_ue8m0_cast` are accepted for DeepGEMM compatibility and have no
    effect on Hopper (scales stay FP32)."""
    _fp8_gemm_nt(a, b, d, c, recipe, config, NAMES_V2)


def _fp8_gemm_nt(a, b, d, c, recipe, config, names) -> None:
    key = None
    if c is None and recipe is None and config is None:
        key, launched = try_replay(a, b, d)
        if launched:
            return
    a, sfa, b, sfb, m, n, k = _validate(a, b, d, c, recipe, names)
    if m == 0 or n == 0:
        return
    if not device.use_kernels(a, "fp8_gemm_nt"):
        d.copy_(reference.fp8_gemm_nt(a, sfa, b, sfb, c=c, out_dtype=d.dtype))
        return
    if k == 0:
        d.copy_(c) if c is not None else d.zero_()
        return
    checks.k_major_operand(a, f"{names[0]}[0] (A)")
    checks.k_major_operand(b, f"{names[1]}[0] (B)")
    if d.stride(1) != 1:
        raise ValueError(f"{names[2]}: expected unit stride along N, got strides {tuple(d.stride())}")
    sfb_given = sfb
    if sfb.stride(1) != 1:
        sfb = sfb.contiguous()
    sfa_given = sfa
    sfa = get_mn_major_tma_aligned_tensor(sfa)
    out_f32 = d.dtype == torch.float32
    if c is not None and not (c.data_ptr() == d.data_ptr() and c.stride() == d.stride()):
        d.copy_(c)   # the kernel accumulates into d in place
    epilogue = _epilogue(d, c)

    dev = a.device.index
    num_sms = device.num_sms_for(dev)
    plan_key = (m, n, k, out_f32, epilogue, dev, num_sms, config)
    plan = _plans.get(plan_key)
    if plan is None:
        plan = _make_plan(m, n, k, out_f32, epilogue, dev, num_sms, config)
        _plans[plan_key] = plan
    params = plan.make_params(a.data_ptr(), a.stride(0), b.data_ptr(), b.stride(0), sfa.data_ptr(), sfa.stride(1),
                              sfb.data_ptr(), sfb.stride(0), d.data_ptr(), d.stride(0))
    plan.launch(params)
    # Only calls that used the caller's tensors as they are can be replayed from the signature
    # (a transposed sfa copy or a contiguous sfb copy is a new tensor every call).
    if key is not None and sfa is sfa_given and sfb is sfb_given:
        remember(key, plan, params)


def _make_plan(m, n, k, out_f32, epilogue, dev, num_sms, config) -> kernel.Fp8GemmPlan:
    cfg = resolve_config(lambda: heuristics.ranked_configs(m, n, k, out_f32, epilogue, num_sms), config, num_sms,
                          f"fp8_gemm_nt M={m} N={n} K={k}", mn=(m, n), out_f32=out_f32, epilogue=epilogue,
                          k_tail=kernel.k_tail_steps(k))
    if envs.print_configs():
        print(f"[deep_gemm] fp8_gemm_nt {heuristics.describe(cfg, m, n, k)}")
    return kernel.Fp8GemmPlan(cfg, m, n, k, dev)


def gemm_fp8_fp8_bf16_nt(lhs, rhs, out) -> None:
    """DeepGEMM 1.x name: out (bf16) = lhs @ rhs^T with lhs = (A, sfa), rhs = (B, sfb)."""
    if isinstance(out, torch.Tensor) and out.dtype != torch.bfloat16:
        raise TypeError(f"out: expected dtype torch.bfloat16, got {out.dtype}")
    _fp8_gemm_nt(lhs, rhs, out, None, None, None, NAMES_V1)
