"""Numeric comparison helpers shared by the tests and the benchmarks."""

from __future__ import annotations

import math

import torch

__all__ = ["calc_diff", "rel_fro_error", "count_bytes"]


def _check_pair(x, y, x_name: str, y_name: str) -> None:
    for name, t in ((x_name, x), (y_name, y)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if x.shape != y.shape:
        raise ValueError(f"{y_name}: expected shape {tuple(x.shape)} (same as {x_name}), got {tuple(y.shape)}")


def calc_diff(x: torch.Tensor, y: torch.Tensor) -> float:
    """DeepGEMM's similarity metric ``1 - 2 * sum(x * y) / sum(x * x + y * y)``, in float64.

    0 means identical, and it grows with both direction and magnitude mismatch; FP8 GEMMs
    against unquantized inputs should stay below 1e-3. Two all-zero tensors give 0.
    NaN anywhere gives NaN. ``y`` may live on another device (e.g. a CPU reference).
    """
    _check_pair(x, y, "x", "y")
    x, y = x.double(), y.to(device=x.device, dtype=torch.float64)
    denominator = (x * x + y * y).sum()
    if denominator == 0:
        return 0.0
    return float(1 - 2 * (x * y).sum() / denominator)


def rel_fro_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    """``||x - ref||_F / ||ref||_F`` in float64 (0 when both are zero, inf when only ref is).

    ``ref`` may live on another device than ``x`` (e.g. a CPU float64 reference).
    """
    _check_pair(ref, x, "ref", "x")
    x, ref = x.double(), ref.to(device=x.device, dtype=torch.float64)
    err = torch.linalg.vector_norm(x - ref)
    scale = torch.linalg.vector_norm(ref)
    if scale == 0:
        return 0.0 if err == 0 else math.inf
    return float(err / scale)


def count_bytes(*tensors) -> int:
    """Total bytes of the given tensors (None skipped, lists and tuples walked), for GB/s figures."""
    total = 0
    for t in tensors:
        if t is None:
            continue
        if isinstance(t, (list, tuple)):
            total += count_bytes(*t)
        elif isinstance(t, torch.Tensor):
            total += t.numel() * t.element_size()
        else:
            raise TypeError(f"tensors: expected torch.Tensor, None, or a list/tuple of them, got {type(t).__name__}")
    return total
