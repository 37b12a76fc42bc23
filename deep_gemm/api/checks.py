"""Input validation shared by the public functions. Every failure names the argument, what was
expected and what arrived (DESIGN.md section 6)."""
from __future__ import annotations

import torch

FP8 = torch.float8_e4m3fn


def tensor(x, name: str, dtypes, ndim: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in dtypes:
        want = " or ".join(str(d) for d in dtypes)
        raise TypeError(f"{name}: expected dtype {want}, got {x.dtype}")
    if x.dim() != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D tensor, got {x.dim()}-D with shape {tuple(x.shape)}")
    return x


def pair(x, name: str):
    if not isinstance(x, (tuple, list)) or len(x) != 2:
        raise TypeError(f"{name}: expected a (tensor, scale_factors) pair, got {type(x).__name__}"
                        + (f" of length {len(x)}" if isinstance(x, (tuple, list)) else ""))
    return x


def shape(x: torch.Tensor, name: str, expected: tuple, meaning: str) -> None:
    if tuple(x.shape) != tuple(expected):
        raise ValueError(f"{name}: expected shape {tuple(expected)} {meaning}, got {tuple(x.shape)}")


def k_major_operand(x: torch.Tensor, name: str) -> None:
    """TMA reads rows of K bytes: unit stride along K, 16-byte aligned row starts."""
    rows, k = x.shape[-2:]
    if x.stride(-1) != 1 and k > 1:
        raise ValueError(f"{name}: expected K-major storage (stride 1 along K), got strides {tuple(x.stride())}; "
                         f"pass {name}.contiguous()")
    if k % 16:
        raise ValueError(f"{name}: K={k} is not a multiple of 16; TMA needs 16-byte aligned FP8 rows. "
                         f"Pad K to {-(-k // 16) * 16} with zeros in both operands (the scale factors keep "
                         f"ceil(K/128) columns)")
    if (x.stride(-2) * x.element_size()) % 16 and rows > 1:
        raise ValueError(f"{name}: row stride {x.stride(-2)} elements is not a multiple of 16 bytes; "
                         f"pass {name}.contiguous()")
    if x.data_ptr() % 16:
        raise ValueError(f"{name}: data pointer is not 16-byte aligned; pass {name}.clone()")
