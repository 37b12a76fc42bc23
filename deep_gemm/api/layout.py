"""Scale-factor layouts and alignment helpers (public in DeepGEMM).

The FP8 kernels load A's scale factors with TMA, one 128-wide K block at a time, as a
contiguous run of MN values. So the kernel wants them MN-major (``sf[mn, kb]`` at
``mn + kb * MN_pad``) with every column starting on a 16-byte boundary, which TMA
requires of every stride: hence ``MN_pad = get_tma_aligned_size(MN, 4)``.
128x128 weight scales are tiny and read by ordinary loads, so they stay row-major.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from ..reference import BLOCK_K, RECIPE_1D1D, RECIPE_1D2D, normalize_recipe

__all__ = [
    "ceil_div",
    "align",
    "get_tma_aligned_size",
    "get_m_alignment_for_contiguous_layout",
    "get_mk_alignment_for_contiguous_layout",
    "is_mn_major_tma_aligned",
    "get_mn_major_tma_aligned_tensor",
    "get_col_major_tma_aligned_tensor",
    "transform_sf_into_required_layout",
]

TMA_ALIGNMENT_BYTES = 16
# Packed UE8M0 scales (int32) share the float32 layout rules, so both are accepted.
_SF_DTYPES = (torch.float32, torch.int32)


def ceil_div(a: int, b: int) -> int:
    """Smallest integer >= a / b, for non-negative a and positive b."""
    return (a + b - 1) // b


def align(x: int, y: int) -> int:
    """x rounded up to a multiple of y."""
    return ceil_div(x, y) * y


def get_tma_aligned_size(x: int, element_size: int) -> int:
    """x rounded up so that ``x * element_size`` is a multiple of 16 bytes (TMA's stride rule)."""
    if element_size <= 0 or TMA_ALIGNMENT_BYTES % element_size != 0:
        raise ValueError(f"element_size: expected a divisor of {TMA_ALIGNMENT_BYTES} bytes (1, 2, 4, 8 or 16), "
                         f"got {element_size}")
    return align(x, TMA_ALIGNMENT_BYTES // element_size)


def get_m_alignment_for_contiguous_layout() -> int:
    """Each group of an m-grouped contiguous GEMM must start at a multiple of this many rows."""
    return BLOCK_K


def get_mk_alignment_for_contiguous_layout() -> Tuple[int, int]:
    """(M, K) alignment of groups in contiguous grouped layouts (m-grouped rows, k-grouped K)."""
    return BLOCK_K, BLOCK_K


def _check_sf(sf, name: str = "sf") -> None:
    if not isinstance(sf, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(sf).__name__}")
    if sf.dtype not in _SF_DTYPES:
        raise TypeError(f"{name}: expected dtype torch.float32 (or torch.int32 for packed UE8M0), got {sf.dtype}")
    if sf.dim() not in (2, 3):
        raise ValueError(f"{name}: expected a 2-D [MN, KB] or 3-D [G, MN, KB] tensor, "
                         f"got {sf.dim()}-D with shape {tuple(sf.shape)}")


def _mn_major_strides(sf: torch.Tensor) -> Tuple[int, ...]:
    mn, kb = sf.shape[-2:]
    mn_pad = get_tma_aligned_size(mn, sf.element_size())
    if sf.dim() == 2:
        return (1, mn_pad)
    return (kb * mn_pad, 1, mn_pad)


def is_mn_major_tma_aligned(sf: torch.Tensor) -> bool:
    """True when ``sf`` already has exactly the layout ``get_mn_major_tma_aligned_tensor`` produces."""
    if not isinstance(sf, torch.Tensor) or sf.dtype not in _SF_DTYPES or sf.dim() not in (2, 3):
        return False
    return (sf.stride() == _mn_major_strides(sf)
            and sf.data_ptr() % TMA_ALIGNMENT_BYTES == 0)


def get_mn_major_tma_aligned_tensor(sf: torch.Tensor) -> torch.Tensor:
    """Same values and logical shape as ``sf`` (``[MN, KB]`` or ``[G, MN, KB]``), stored MN-major.

    Strides become ``(1, MN_pad)`` or ``(KB * MN_pad, 1, MN_pad)`` with
    ``MN_pad = get_tma_aligned_size(MN, 4)``; the padding exists in memory (uninitialized,
    never read by the kernels) but is not part of the view. An input already laid out
    this way is returned as is (same object); otherwise one copy is made.
    """
    _check_sf(sf)
    if is_mn_major_tma_aligned(sf):
        return sf
    mn, kb = sf.shape[-2:]
    mn_pad = get_tma_aligned_size(mn, sf.element_size())
    # Allocate [..., KB, MN_pad] row-major, fill its first MN columns with sf^T in one
    # copy, and hand back the transposed view: that view has exactly the strides above.
    storage = torch.empty((*sf.shape[:-2], kb, mn_pad), dtype=sf.dtype, device=sf.device)
    view = storage[..., :mn]
    view.copy_(sf.transpose(-1, -2))
    return view.transpose(-1, -2)


get_col_major_tma_aligned_tensor = get_mn_major_tma_aligned_tensor  # DeepGEMM 1.x name


def transform_sf_into_required_layout(
    sf: torch.Tensor,
    mn: int,
    k: int,
    recipe,
    num_groups: Optional[int] = None,
    is_sfa: bool = False,
) -> torch.Tensor:
    """Return ``sf`` in the layout the SM90 kernels read, copying only when needed.

    ``recipe``: ``"1d2d"`` / ``(1, 128, 128)`` or ``"1d1d"`` / ``(1, 1, 128)``. The scale
    granularity along MN is 1 for A (``is_sfa=True``) and, for B, 128 under 1d2d and 1
    under 1d1d. Expected shape: ``[ceil(mn / gran), ceil(k / 128)]``, with a leading
    ``num_groups`` dimension when given.

    * 1x128 scales (granularity 1) -> MN-major, TMA-aligned (``get_mn_major_tma_aligned_tensor``).
    * 128x128 scales -> row-major contiguous float32 (unchanged when already so).

    Either input layout (row-major or MN-major TMA-aligned) is accepted.
    """
    _check_sf(sf)
    if sf.dtype != torch.float32:
        raise TypeError(f"sf: expected dtype torch.float32 (SM90 kernels read float scales), got {sf.dtype}")
    recipe_name = normalize_recipe(recipe)
    for arg, value in (("mn", mn), ("k", k)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{arg}: expected a non-negative int, got {value!r}")
    if num_groups is not None and (not isinstance(num_groups, int) or isinstance(num_groups, bool)
                                   or num_groups < 0):
        raise ValueError(f"num_groups: expected None or a non-negative int, got {num_groups!r}")

    recipe_tuple = RECIPE_1D2D if recipe_name == "1d2d" else RECIPE_1D1D
    gran_mn = recipe_tuple[0] if is_sfa else recipe_tuple[1]
    expected = (ceil_div(mn, gran_mn), ceil_div(k, BLOCK_K))
    if num_groups is not None:
        expected = (num_groups, *expected)
    if tuple(sf.shape) != expected:
        which = "sfa" if is_sfa else "sfb"
        grouped = "num_groups, " if num_groups is not None else ""
        raise ValueError(
            f"sf: expected shape {expected} = ({grouped}ceil({mn}/{gran_mn}), ceil({k}/128)) for {which} "
            f"under recipe {recipe_name}, got {tuple(sf.shape)}")

    if gran_mn == 1:
        return get_mn_major_tma_aligned_tensor(sf)
    return sf.contiguous()
