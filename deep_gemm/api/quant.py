"""FP8 (e4m3) casting helpers with 128-element block scaling, for any shape.

Each block of 128 elements (1x128 along K per row, 128x128 per tile, or 128 along K per
column) gets ``sf = max(amax(|block|), 1e-4) / 448`` and is stored as
``q = (x / sf).to(float8_e4m3fn)``, so ``q * sf`` reproduces ``x``. All arithmetic is
float32. A dimension that is not a multiple of 128 is zero-padded to one before the
blocks are formed: zeros never raise an absolute maximum, so a partial block's scale
depends only on its real elements; the padding is cut off again afterwards.

These are pure tensor ops (pad, view, amax, divide), one pass on any device, no Python
loops. Dequantize with ``deep_gemm.reference.dequantize_1x128`` / ``dequantize_128x128``.

Non-finite inputs: a NaN makes its whole block NaN (its amax is NaN); an Inf makes the
block's scale Inf, the Inf element NaN and its finite neighbours 0.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

from ..reference import BLOCK_K, FP8_DTYPE, dequantize_128x128, dequantize_1x128  # noqa: F401 (re-exported)

__all__ = [
    "FP8_MAX",
    "AMAX_FLOOR",
    "per_token_cast_to_fp8",
    "per_block_cast_to_fp8",
    "per_channel_cast_to_fp8",
    "dequantize_1x128",
    "dequantize_128x128",
]

FP8_MAX = 448.0  # largest finite float8_e4m3fn
AMAX_FLOOR = 1e-4  # keeps all-zero blocks from producing a zero scale (and 0/0 = NaN)

_INPUT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def _check_input(x, name: str, layout: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _INPUT_DTYPES:
        raise TypeError(f"{name}: expected dtype torch.bfloat16, torch.float16 or torch.float32, got {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"{name}: expected a tensor of at least 2 dimensions {layout}, "
                         f"got {x.dim()}-D with shape {tuple(x.shape)}")


def _pad_to_block(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Zero-pad ``x`` along ``dim`` (negative) up to a multiple of 128."""
    extra = -x.shape[dim] % BLOCK_K
    if extra == 0:
        return x
    pad = [0, 0] * (-dim - 1) + [0, extra]  # F.pad lists (before, after) from the last dim backwards
    return F.pad(x, pad)


def _scale_and_cast(blocks: torch.Tensor, reduce_dims) -> Tuple[torch.Tensor, torch.Tensor]:
    """Scale each block (the elements sharing all non-``reduce_dims`` indices) into e4m3 range."""
    amax = blocks.abs().amax(dim=reduce_dims, keepdim=True).clamp(min=AMAX_FLOOR)
    # Divide by a device tensor, not a Python float: CUDA turns division by a CPU scalar into
    # multiplication by its reciprocal, which is 1 ulp off and would make GPU and CPU disagree.
    sf = amax / amax.new_full((), FP8_MAX)
    # The clamp guards against a quotient rounding a hair past 448 (e4m3fn has no Inf,
    # and casting conventions for out-of-range values differ across devices and versions).
    q = (blocks / sf).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return q, sf


def per_token_cast_to_fp8(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """1x128 scaling along the last dim: ``x [..., M, K]`` -> ``(q e4m3 [..., M, K], sf f32 [..., M, ceil(K/128)])``."""
    _check_input(x, "x", "[..., M, K]")
    k = x.shape[-1]
    padded = _pad_to_block(x.float(), -1)
    blocks = padded.view(*padded.shape[:-1], -1, BLOCK_K)  # [..., M, KB, 128]
    q, sf = _scale_and_cast(blocks, -1)
    q = q.view(padded.shape)[..., :k].contiguous()
    return q, sf.squeeze(-1)


def per_block_cast_to_fp8(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """128x128 scaling: ``x [..., N, K]`` -> ``(q e4m3 [..., N, K], sf f32 [..., ceil(N/128), ceil(K/128)])``."""
    _check_input(x, "x", "[..., N, K]")
    n, k = x.shape[-2:]
    padded = _pad_to_block(_pad_to_block(x.float(), -1), -2)
    n_pad, k_pad = padded.shape[-2:]
    blocks = padded.view(*padded.shape[:-2], n_pad // BLOCK_K, BLOCK_K, k_pad // BLOCK_K, BLOCK_K)
    q, sf = _scale_and_cast(blocks, (-3, -1))
    q = q.view(padded.shape)[..., :n, :k].contiguous()
    return q, sf.squeeze(-1).squeeze(-2)


def per_channel_cast_to_fp8(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """128 along dim -2 per column: ``x [..., K, M]`` -> ``(q e4m3 [..., K, M], sf f32 [..., ceil(K/128), M])``.

    This is the k-grouped weight-gradient layout: activations arrive K-outer with M
    contiguous, and each column is scaled per 128 consecutive K.
    """
    _check_input(x, "x", "[K, M]")
    k = x.shape[-2]
    padded = _pad_to_block(x.float(), -2)
    blocks = padded.view(*padded.shape[:-2], -1, BLOCK_K, padded.shape[-1])  # [..., KB, 128, M]
    q, sf = _scale_and_cast(blocks, -2)
    q = q.view(padded.shape)[..., :k, :].contiguous()
    return q, sf.squeeze(-2)
