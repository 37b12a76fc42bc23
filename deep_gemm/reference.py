"""Exact semantics of every GEMM family, in plain PyTorch, on any device.

This module is the oracle for the tests and the path taken for tensors that cannot
run the Hopper kernels (CPU, older GPUs). It is written for clarity and exactness
first, but stays vectorized so the CPU path is usable on real shapes.

Numerics (DESIGN.md section 4):

* FP8 inputs are float8_e4m3fn with float32 scale factors, one per 128 elements of K:
  ``A_real[m, k] = A[m, k] * sfa[m, k // 128]`` and, for the 1D2D recipe (weights
  scaled per 128x128 block), ``B_real[n, k] = B[n, k] * sfb[n // 128, k // 128]``;
  for the 1D1D recipe (weight gradients) ``B_real[n, k] = B[n, k] * sfb[n, k // 128]``.
  K need not be a multiple of 128: the last scale block simply covers fewer elements.
* ``D = A_real @ B_real^T (+ C)``, evaluated in ``compute_dtype`` (float32 by default,
  float64 for a high-precision oracle), then cast once to ``out_dtype``.
* The kernels accumulate in FP32 with a promotion every 128 K; a plain FP32 matmul is at
  least as accurate, so it is the right thing to compare them with.

Every function returns a new tensor and leaves its inputs untouched.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

__all__ = [
    "BLOCK_K",
    "FP8_DTYPE",
    "RECIPE_1D1D",
    "RECIPE_1D2D",
    "normalize_recipe",
    "dequantize_1x128",
    "dequantize_128x128",
    "fp8_gemm_nt",
    "bf16_gemm_nt",
    "m_grouped_fp8_gemm_nt_contiguous",
    "m_grouped_fp8_gemm_nt_masked",
    "k_grouped_fp8_gemm_nt_contiguous",
    "wgrad_fp8_gemm_nt",
]

BLOCK_K = 128  # scale-factor granularity along K, and along N for 128x128 weight scales
FP8_DTYPE = torch.float8_e4m3fn

# DeepGEMM spells a recipe as (granularity of sfa along M, of sfb along N, along K).
RECIPE_1D2D = (1, 128, 128)
RECIPE_1D1D = (1, 1, 128)
_RECIPE_NAMES = {RECIPE_1D2D: "1d2d", RECIPE_1D1D: "1d1d"}

_COMPUTE_DTYPES = (torch.float32, torch.float64)
# float64 is accepted so the oracle can hand back its full precision when asked.
_OUT_DTYPES = (torch.bfloat16, torch.float32, torch.float64)


# ----------------------------------------------------------------------------- checks

def _ceil_div(a: int, b: int) -> int:
    return (a + b - 1) // b


def _check_tensor(x, name: str, dtype=None, ndim=None) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if dtype is not None:
        allowed = dtype if isinstance(dtype, tuple) else (dtype,)
        if x.dtype not in allowed:
            want = " or ".join(str(d) for d in allowed)
            raise TypeError(f"{name}: expected dtype {want}, got {x.dtype}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D tensor, got {x.dim()}-D with shape {tuple(x.shape)}")


def _check_shape(x: torch.Tensor, name: str, expected: Sequence[int], why: str = "") -> None:
    if tuple(x.shape) != tuple(expected):
        hint = f" ({why})" if why else ""
        raise ValueError(f"{name}: expected shape {tuple(expected)}{hint}, got {tuple(x.shape)}")


def _check_same_device(ref: torch.Tensor, **tensors) -> None:
    for name, t in tensors.items():
        if t is not None and t.device != ref.device:
            raise ValueError(f"{name}: expected device {ref.device} (same as the other inputs), got {t.device}")


def _check_value_range(x: torch.Tensor, name: str, lo: int, hi: int, expected: str) -> None:
    """Host-side check of an index tensor's values (the reference may synchronize; kernels never do)."""
    if x.numel() == 0:
        return
    got_lo, got_hi = int(x.min()), int(x.max())
    if got_lo < lo or got_hi > hi:
        raise ValueError(f"{name}: expected values in {expected}, got values in [{got_lo}, {got_hi}]")


def _check_dtype_choice(dtype, name: str, allowed) -> None:
    if dtype not in allowed:
        want = ", ".join(str(d) for d in allowed)
        raise ValueError(f"{name}: expected one of {want}, got {dtype}")


def _check_output_dtypes(out_dtype, compute_dtype) -> None:
    _check_dtype_choice(out_dtype, "out_dtype", _OUT_DTYPES)
    _check_dtype_choice(compute_dtype, "compute_dtype", _COMPUTE_DTYPES)


def _tf32_may_be_on() -> bool:
    """Whether a float32 CUDA matmul might silently run in TF32 (10-bit mantissa)."""
    matmul = torch.backends.cuda.matmul
    try:
        precision = matmul.fp32_precision  # torch >= 2.9
    except AttributeError:
        return bool(matmul.allow_tf32)
    except RuntimeError:
        # torch refuses to answer when legacy and new precision APIs were mixed: assume the worst.
        return True
    if precision == "none":  # inherits the global setting
        precision = getattr(torch.backends, "fp32_precision", "none")
    return precision == "tf32"


def _matmul_dtype(compute_dtype: torch.dtype, device: torch.device) -> torch.dtype:
    # The oracle must not lose precision behind the user's back: when TF32 is enabled for
    # CUDA float32 matmuls, use float64 instead of touching the user's global settings.
    if compute_dtype == torch.float32 and device.type == "cuda" and _tf32_may_be_on():
        return torch.float64
    return compute_dtype


def normalize_recipe(recipe) -> str:
    """Return ``"1d2d"`` or ``"1d1d"`` for a recipe given by name or as a DeepGEMM tuple.

    ``"1d2d"`` / ``(1, 128, 128)``: activations 1x128, weights 128x128 (forward, data gradient).
    ``"1d1d"`` / ``(1, 1, 128)``: both operands 1x128 (weight gradient).
    """
    if isinstance(recipe, str) and recipe.lower() in ("1d2d", "1d1d"):
        return recipe.lower()
    if isinstance(recipe, (tuple, list)) and tuple(recipe) in _RECIPE_NAMES:
        return _RECIPE_NAMES[tuple(recipe)]
    raise ValueError(
        f"recipe: expected '1d2d', '1d1d', {RECIPE_1D2D} or {RECIPE_1D1D}, got {recipe!r}")


# ----------------------------------------------------------------------- dequantization

def _expand_blocks(sf: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """Repeat each scale 128 times along ``dim`` and cut the tail to ``size`` elements."""
    return sf.repeat_interleave(BLOCK_K, dim=dim).narrow(dim, 0, size)


def dequantize_1x128(x_fp8: torch.Tensor, sf: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``x[..., r, k] * sf[..., r, k // 128]`` for ``x: e4m3 [..., R, K]``, ``sf: f32 [..., R, ceil(K/128)]``.

    ``sf`` is indexed logically, so any strides (row-major, MN-major TMA-aligned, views)
    give the same answer. ``dtype`` is the result dtype (float32, or float64 to keep the
    product of an e4m3 value and a float32 scale exact).
    """
    _check_tensor(x_fp8, "x_fp8", FP8_DTYPE)
    _check_tensor(sf, "sf", torch.float32)
    _check_dtype_choice(dtype, "dtype", _COMPUTE_DTYPES)
    if x_fp8.dim() < 1:
        raise ValueError("x_fp8: expected at least a 1-D tensor [..., K], got a 0-D tensor")
    k = x_fp8.shape[-1]
    _check_shape(sf, "sf", (*x_fp8.shape[:-1], _ceil_div(k, BLOCK_K)), "x_fp8.shape[:-1] + (ceil(K/128),)")
    _check_same_device(x_fp8, sf=sf)
    return x_fp8.to(dtype) * _expand_blocks(sf.to(dtype), -1, k)


def dequantize_128x128(x_fp8: torch.Tensor, sf: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``x[..., n, k] * sf[..., n // 128, k // 128]`` for ``x: e4m3 [..., N, K]``, ``sf: f32 [..., ceil(N/128), ceil(K/128)]``."""
    _check_tensor(x_fp8, "x_fp8", FP8_DTYPE)
    _check_tensor(sf, "sf", torch.float32)
    _check_dtype_choice(dtype, "dtype", _COMPUTE_DTYPES)
    if x_fp8.dim() < 2:
        raise ValueError(f"x_fp8: expected at least a 2-D tensor [..., N, K], got {x_fp8.dim()}-D")
    n, k = x_fp8.shape[-2:]
    expected = (*x_fp8.shape[:-2], _ceil_div(n, BLOCK_K), _ceil_div(k, BLOCK_K))
    _check_shape(sf, "sf", expected, "x_fp8.shape[:-2] + (ceil(N/128), ceil(K/128))")
    _check_same_device(x_fp8, sf=sf)
    full = _expand_blocks(_expand_blocks(sf.to(dtype), -2, n), -1, k)
    return x_fp8.to(dtype) * full


# ------------------------------------------------------------------------ dense GEMMs

def _finish(d: torch.Tensor, c: Optional[torch.Tensor], out_dtype: torch.dtype) -> torch.Tensor:
    if c is not None:
        d = d + c.to(d.dtype)
    return d.to(out_dtype)


def _check_c(c: Optional[torch.Tensor], shape: Sequence[int], ref: torch.Tensor) -> None:
    if c is None:
        return
    _check_tensor(c, "c", torch.float32)
    _check_shape(c, "c", shape, "the shape of the result")
    _check_same_device(ref, c=c)


def _check_fp8_operand(x, sf, name: str, sf_name: str, ndim: int) -> None:
    _check_tensor(x, name, FP8_DTYPE, ndim)
    _check_tensor(sf, sf_name, torch.float32, ndim)


def fp8_gemm_nt(
    a: torch.Tensor,
    sfa: torch.Tensor,
    b: torch.Tensor,
    sfb: torch.Tensor,
    c: Optional[torch.Tensor] = None,
    out_dtype: torch.dtype = torch.bfloat16,
    compute_dtype: torch.dtype = torch.float32,
    recipe: Union[str, Sequence[int], None] = "1d2d",
) -> torch.Tensor:
    """``D[m, n] = sum_k A_real[m, k] * B_real[n, k] (+ C[m, n])``, returned as ``out_dtype``.

    a: e4m3 ``[M, K]``, sfa: f32 ``[M, ceil(K/128)]``; b: e4m3 ``[N, K]``;
    sfb: f32 ``[ceil(N/128), ceil(K/128)]`` (recipe ``"1d2d"``) or ``[N, ceil(K/128)]`` (``"1d1d"``).
    ``recipe=None`` infers it from sfb's shape (when N == 1 both readings coincide).
    c: optional f32 ``[M, N]``, added in ``compute_dtype`` before the single final cast.
    """
    _check_fp8_operand(a, sfa, "a", "sfa", 2)
    _check_fp8_operand(b, sfb, "b", "sfb", 2)
    _check_output_dtypes(out_dtype, compute_dtype)
    m, k = a.shape
    n = b.shape[0]
    if b.shape[1] != k:
        raise ValueError(f"b: expected shape ({n}, {k}) (K must match a's {k}), got {tuple(b.shape)}")
    kb = _ceil_div(k, BLOCK_K)
    if recipe is None:
        recipe = "1d1d" if sfb.shape[0] == n and n != _ceil_div(n, BLOCK_K) else "1d2d"
    recipe = normalize_recipe(recipe)
    _check_shape(sfa, "sfa", (m, kb), "(M, ceil(K/128))")
    if recipe == "1d2d":
        _check_shape(sfb, "sfb", (_ceil_div(n, BLOCK_K), kb), "(ceil(N/128), ceil(K/128)) for recipe 1d2d")
    else:
        _check_shape(sfb, "sfb", (n, kb), "(N, ceil(K/128)) for recipe 1d1d")
    _check_same_device(a, sfa=sfa, b=b, sfb=sfb)
    _check_c(c, (m, n), a)

    dt = _matmul_dtype(compute_dtype, a.device)
    a_real = dequantize_1x128(a, sfa, dt)
    b_real = dequantize_128x128(b, sfb, dt) if recipe == "1d2d" else dequantize_1x128(b, sfb, dt)
    return _finish(a_real @ b_real.T, c, out_dtype)


def bf16_gemm_nt(
    a: torch.Tensor,
    b: torch.Tensor,
    c: Optional[torch.Tensor] = None,
    out_dtype: torch.dtype = torch.bfloat16,
    compute_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``D = A @ B^T (+ C)`` for bf16 ``a: [M, K]``, ``b: [N, K]``, optional f32 ``c: [M, N]``."""
    _check_tensor(a, "a", torch.bfloat16, 2)
    _check_tensor(b, "b", torch.bfloat16, 2)
    _check_output_dtypes(out_dtype, compute_dtype)
    m, k = a.shape
    n = b.shape[0]
    if b.shape[1] != k:
        raise ValueError(f"b: expected shape ({n}, {k}) (K must match a's {k}), got {tuple(b.shape)}")
    _check_same_device(a, b=b)
    _check_c(c, (m, n), a)
    dt = _matmul_dtype(compute_dtype, a.device)
    return _finish(a.to(dt) @ b.to(dt).T, c, out_dtype)


def wgrad_fp8_gemm_nt(
    a: torch.Tensor,
    sfa: torch.Tensor,
    b: torch.Tensor,
    sfb: torch.Tensor,
    c: Optional[torch.Tensor],
    compute_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Weight gradient, 1D1D recipe: returns f32 ``c + A_real @ B_real^T`` (``c`` may be None).

    a: e4m3 ``[M, K]``, sfa: f32 ``[M, ceil(K/128)]``; b: e4m3 ``[N, K]``, sfb: f32 ``[N, ceil(K/128)]``;
    c: f32 ``[M, N]``. The kernel accumulates into ``c`` in place; this returns a new tensor.
    """
    return fp8_gemm_nt(a, sfa, b, sfb, c=c, out_dtype=torch.float32, compute_dtype=compute_dtype, recipe="1d1d")


# ---------------------------------------------------------------------- grouped GEMMs

def _check_grouped_b(b, sfb, k: int):
    _check_fp8_operand(b, sfb, "b", "sfb", 3)
    g, n, kb_ = b.shape
    if kb_ != k:
        raise ValueError(f"b: expected shape ({g}, {n}, {k}) (K must match a's {k}), got {tuple(b.shape)}")
    _check_shape(sfb, "sfb", (g, _ceil_div(n, BLOCK_K), _ceil_div(k, BLOCK_K)), "(G, ceil(N/128), ceil(K/128))")
    return g, n


def _rows_times_group_weights(a_real: torch.Tensor, b_real: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """``out[r] = a_real[r] @ b_real[group[r]]^T``, with 0 for rows whose group is -1.

    Rows are sorted by group and scattered into a ``[groups present, max rows, K]`` batch so
    a single bmm does the work: no per-group loop, and no ``[rows, N, K]`` gather of B.
    """
    rows_total, k = a_real.shape
    n = b_real.shape[1]
    out = a_real.new_zeros(rows_total, n)
    valid = (group >= 0).nonzero().squeeze(1)
    if valid.numel() == 0:
        return out
    sorted_group, order = torch.sort(group[valid], stable=True)
    rows = valid[order]
    present, counts = torch.unique_consecutive(sorted_group, return_counts=True)
    slot = torch.repeat_interleave(torch.arange(present.numel(), device=a_real.device), counts)
    first_of_slot = torch.cumsum(counts, 0) - counts
    rank_in_group = torch.arange(rows.numel(), device=a_real.device) - first_of_slot[slot]
    batch = a_real.new_zeros(present.numel(), int(counts.max()), k)
    batch[slot, rank_in_group] = a_real[rows]
    products = torch.bmm(batch, b_real[present].transpose(1, 2))
    out[rows] = products[slot, rank_in_group]
    return out


def m_grouped_fp8_gemm_nt_contiguous(
    a: torch.Tensor,
    sfa: torch.Tensor,
    b: torch.Tensor,
    sfb: torch.Tensor,
    m_indices: torch.Tensor,
    out_dtype: torch.dtype = torch.bfloat16,
    compute_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Contiguous m-grouped GEMM (MoE experts): ``D[r] = A_real[r] @ B_real[m_indices[r]]^T``.

    a: e4m3 ``[M_sum, K]``, sfa: f32 ``[M_sum, ceil(K/128)]``; b: e4m3 ``[G, N, K]``,
    sfb: f32 ``[G, ceil(N/128), ceil(K/128)]``; m_indices: int32 ``[M_sum]`` with values in
    ``[-1, G)``. Rows marked -1 are padding: the kernel leaves them unspecified, this gives 0.
    The reference does not require groups to be contiguous or aligned.
    """
    _check_fp8_operand(a, sfa, "a", "sfa", 2)
    m, k = a.shape
    g, n = _check_grouped_b(b, sfb, k)
    _check_shape(sfa, "sfa", (m, _ceil_div(k, BLOCK_K)), "(M_sum, ceil(K/128))")
    _check_tensor(m_indices, "m_indices", torch.int32, 1)
    _check_shape(m_indices, "m_indices", (m,), "one group id per row of a")
    _check_output_dtypes(out_dtype, compute_dtype)
    _check_same_device(a, sfa=sfa, b=b, sfb=sfb, m_indices=m_indices)
    group = m_indices.long()
    _check_value_range(group, "m_indices", -1, g - 1, f"[-1, {g}) (G = {g} groups)")

    dt = _matmul_dtype(compute_dtype, a.device)
    a_real = dequantize_1x128(a, sfa, dt)
    b_real = dequantize_128x128(b, sfb, dt)
    return _rows_times_group_weights(a_real, b_real, group).to(out_dtype)


def m_grouped_fp8_gemm_nt_masked(
    a: torch.Tensor,
    sfa: torch.Tensor,
    b: torch.Tensor,
    sfb: torch.Tensor,
    masked_m: torch.Tensor,
    out_dtype: torch.dtype = torch.bfloat16,
    compute_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Masked m-grouped GEMM (decode): ``D[g, r] = A_real[g, r] @ B_real[g]^T`` for ``r < masked_m[g]``.

    a: e4m3 ``[G, M_max, K]``, sfa: f32 ``[G, M_max, ceil(K/128)]``; b: e4m3 ``[G, N, K]``,
    sfb: f32 ``[G, ceil(N/128), ceil(K/128)]``; masked_m: int32 ``[G]`` with values in
    ``[0, M_max]``. Rows ``r >= masked_m[g]`` are 0 here (the kernel does not write them).
    """
    _check_fp8_operand(a, sfa, "a", "sfa", 3)
    g, m_max, k = a.shape
    g_b, n = _check_grouped_b(b, sfb, k)
    if g_b != g:
        raise ValueError(f"b: expected {g} groups (a.shape[0]), got shape {tuple(b.shape)}")
    _check_shape(sfa, "sfa", (g, m_max, _ceil_div(k, BLOCK_K)), "(G, M_max, ceil(K/128))")
    _check_tensor(masked_m, "masked_m", torch.int32, 1)
    _check_shape(masked_m, "masked_m", (g,), "one valid-row count per group")
    _check_output_dtypes(out_dtype, compute_dtype)
    _check_same_device(a, sfa=sfa, b=b, sfb=sfb, masked_m=masked_m)
    valid_rows = masked_m.long()
    _check_value_range(valid_rows, "masked_m", 0, m_max, f"[0, {m_max}] (M_max)")

    dt = _matmul_dtype(compute_dtype, a.device)
    d = torch.bmm(dequantize_1x128(a, sfa, dt), dequantize_128x128(b, sfb, dt).transpose(1, 2))
    row = torch.arange(m_max, device=a.device)
    # masked_fill rather than a multiply, so NaN/Inf in a masked row cannot leak through.
    d = d.masked_fill(row.view(1, m_max, 1) >= valid_rows.view(g, 1, 1), 0)
    return d.to(out_dtype)


def _as_int_list(batch_sizes, name: str) -> list:
    if isinstance(batch_sizes, torch.Tensor):
        if batch_sizes.dim() != 1 or batch_sizes.dtype.is_floating_point or batch_sizes.dtype.is_complex:
            raise ValueError(f"{name}: expected a 1-D integer tensor or a list of ints, "
                             f"got a {batch_sizes.dim()}-D {batch_sizes.dtype} tensor")
        sizes = [int(v) for v in batch_sizes.tolist()]
    else:
        try:
            sizes = [int(v) for v in batch_sizes]
        except (TypeError, ValueError):
            raise ValueError(f"{name}: expected a 1-D integer tensor or a list of ints, got {batch_sizes!r}") from None
    if any(v < 0 for v in sizes):
        raise ValueError(f"{name}: expected non-negative sizes, got {sizes}")
    return sizes


def k_grouped_fp8_gemm_nt_contiguous(
    a: torch.Tensor,
    sfa: torch.Tensor,
    b: torch.Tensor,
    sfb: torch.Tensor,
    batch_sizes: Union[Sequence[int], torch.Tensor],
    c: Optional[torch.Tensor] = None,
    compute_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """K-grouped weight-gradient GEMM; returns f32 ``[G, M, N]``.

    Layout (DESIGN.md section 5), with ``k_i = batch_sizes[i]``, ``S = sum(k_i)`` and
    ``KB = sum(ceil(k_i / 128))``:

    * ``a``: flat e4m3 ``[M * S]``. Group i occupies ``M * k_i`` consecutive elements
      starting at ``M * (k_0 + ... + k_{i-1})``, read as a row-major ``[k_i, M]`` block
      ``A_i`` (K outer, M contiguous: MN-major, as a weight gradient's activations arrive).
    * ``sfa``: f32 ``[KB, M]``; group i owns rows ``ceil(k_0/128) + ... + ceil(k_{i-1}/128)``
      onwards, ``ceil(k_i/128)`` of them: ``sfa_i``. ``b``/``sfb`` are the same with N.
    * ``D_i[m, n] = c_i[m, n] + sum_k A_i[k, m] * sfa_i[k // 128, m] * B_i[k, n] * sfb_i[k // 128, n]``.

    Scale blocks restart at each group boundary, so ``k_i`` need not be a multiple of 128.
    A group with ``k_i = 0`` yields ``c_i`` (or 0). ``c``: optional f32 ``[G, M, N]``;
    the kernel accumulates into it in place, this returns a new tensor.
    """
    sizes = _as_int_list(batch_sizes, "batch_sizes")
    _check_tensor(a, "a", FP8_DTYPE, 1)
    _check_tensor(b, "b", FP8_DTYPE, 1)
    _check_tensor(sfa, "sfa", torch.float32, 2)
    _check_tensor(sfb, "sfb", torch.float32, 2)
    _check_dtype_choice(compute_dtype, "compute_dtype", _COMPUTE_DTYPES)
    g = len(sizes)
    m, n = sfa.shape[1], sfb.shape[1]
    total_k = sum(sizes)
    total_kb = sum(_ceil_div(k, BLOCK_K) for k in sizes)
    _check_shape(a, "a", (m * total_k,), f"M * sum(batch_sizes) with M = {m} from sfa.shape[1]")
    _check_shape(b, "b", (n * total_k,), f"N * sum(batch_sizes) with N = {n} from sfb.shape[1]")
    _check_shape(sfa, "sfa", (total_kb, m), "(sum(ceil(k_i/128)), M)")
    _check_shape(sfb, "sfb", (total_kb, n), "(sum(ceil(k_i/128)), N)")
    _check_same_device(a, sfa=sfa, b=b, sfb=sfb)
    _check_c(c, (g, m, n), a)

    dt = _matmul_dtype(compute_dtype, a.device)
    out = torch.zeros(g, m, n, dtype=dt, device=a.device) if c is None else c.to(dt, copy=True)
    k_start = kb_start = 0
    for i, k in enumerate(sizes):  # K varies per group, so groups cannot share one bmm
        if k > 0:
            kb = _ceil_div(k, BLOCK_K)
            a_i = a[m * k_start: m * (k_start + k)].view(k, m)
            b_i = b[n * k_start: n * (k_start + k)].view(k, n)
            # Transposed views are [M, k_i] with 1x128 scales along k_i: exactly dequantize_1x128.
            a_real = dequantize_1x128(a_i.T, sfa[kb_start: kb_start + kb].T, dt)
            b_real = dequantize_1x128(b_i.T, sfb[kb_start: kb_start + kb].T, dt)
            out[i] += a_real @ b_real.T
            kb_start += kb
        k_start += k
    return out.to(torch.float32)
