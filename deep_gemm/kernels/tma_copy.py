"""The TMA round-trip self-test kernel (include/deep_gemm/tma_copy.cuh)."""
from __future__ import annotations

import ctypes

import torch

from ..jit import runtime
from .common import TMA_DTYPE, TensorMapBytes, current_stream, layout_asserts, params_struct, set_tensor_map

TmaCopyParams = params_struct("TmaCopyParams", [
    ("src", TensorMapBytes), ("dst", TensorMapBytes), ("box_bytes", ctypes.c_uint32),
    ("box_cols", ctypes.c_uint32), ("box_rows", ctypes.c_uint32), ("tiles_per_row", ctypes.c_uint32)])

NAME = "tma_copy"
KERNEL_EXPR = "&deep_gemm::tma_copy_kernel"


def source() -> str:
    return "#include <deep_gemm/tma_copy.cuh>\n" + layout_asserts("deep_gemm::TmaCopyParams", TmaCopyParams) + "\n"


def build():
    return runtime.build(NAME, source(), KERNEL_EXPR)


class TmaCopy:
    """Copies a 2-D tensor tile by tile through shared memory; box sizes are elements."""

    def __init__(self, box_rows: int = 64, box_cols: int = 64):
        self.box_rows, self.box_cols = box_rows, box_cols
        self.kernel = runtime.get_kernel(NAME, source(), KERNEL_EXPR)
        self._launchers: dict = {}

    def __call__(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        rows, cols = src.shape
        elem = src.element_size()
        box_cols = min(self.box_cols, cols)
        box_bytes = self.box_rows * box_cols * elem
        tiles_per_row = -(-cols // box_cols)
        grid = tiles_per_row * -(-rows // self.box_rows)
        p = TmaCopyParams()
        dtype = TMA_DTYPE[src.dtype]
        for field, t in (("src", src), ("dst", dst)):
            set_tensor_map(p, getattr(TmaCopyParams, field).offset, runtime.tensor_map(
                dtype, t.data_ptr(), (cols, rows), (t.stride(0) * elem,), (box_cols, self.box_rows)))
        p.box_bytes, p.box_cols, p.box_rows, p.tiles_per_row = box_bytes, box_cols, self.box_rows, tiles_per_row
        device = src.device.index
        key = (device, grid, box_bytes)
        launch = self._launchers.get(key)
        if launch is None:
            launch = runtime.Launcher(self.kernel.function(device, box_bytes), grid, 128, box_bytes)
            self._launchers[key] = launch
        launch(p, current_stream(device))
