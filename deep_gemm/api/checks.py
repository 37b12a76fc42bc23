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


RECIPE_1D2D = (1, 128, 128)


def recipe_1d2d(recipe, implements: str, hint: str = "") -> None:
    """Only the (1, 128, 128) scaling recipe exists here; the message says what the caller
    implements and, optionally, where to go instead."""
    if recipe is not None and not isinstance(recipe, (tuple, list)):
        raise TypeError(f"recipe: expected None or a (1, 128, 128) tuple, got {type(recipe).__name__}")
    if recipe is not None and tuple(recipe) != RECIPE_1D2D:
        raise ValueError(f"recipe: {implements}, got {tuple(recipe)}{hint}")


def same_device(ref_name: str, ref: torch.Tensor, named) -> None:
    """Every (name, tensor) in `named` (None tensors skipped) is on ref's device."""
    for name, t in named:
        if t is not None and t.device != ref.device:
            raise ValueError(f"{name}: expected a tensor on {ref.device} (like {ref_name}), got {t.device}")


def _span(t: torch.Tensor) -> tuple[int, int]:
    start = t.data_ptr()
    extent = 1 + sum((s - 1) * st for s, st in zip(t.shape, t.stride()) if s > 0)
    return start, start + extent * t.element_size()


def aliases(x: torch.Tensor, y: torch.Tensor) -> bool:
    """The memory spans of x and y overlap (empty and meta tensors overlap nothing)."""
    if x.numel() == 0 or y.numel() == 0 or x.data_ptr() == 0 or y.data_ptr() == 0:
        return False
    x0, x1 = _span(x)
    y0, y1 = _span(y)
    return x0 < y1 and y0 < x1


def output_not_aliasing(out: torch.Tensor, out_name: str, inputs) -> None:
    """Writing an output that overlaps an input would race with the kernel's reads."""
    for name, t in inputs:
        if aliases(out, t):
            raise ValueError(f"{out_name}: overlaps the memory of {name}; the output must not alias an input")


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
