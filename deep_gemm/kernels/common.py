"""Pieces shared by the kernel families' host code."""
from __future__ import annotations

import ctypes

import torch

TMA_DTYPE = {torch.float8_e4m3fn: "e4m3", torch.bfloat16: "bf16", torch.float16: "f16", torch.float32: "f32",
             torch.uint8: "u8"}

TensorMapBytes = ctypes.c_uint8 * 128


def params_struct(name: str, fields: list[tuple[str, object]], align: int = 64) -> type[ctypes.Structure]:
    """A ctypes mirror of a kernel's by-value parameter struct, padded to the C++ struct's size
    (TmaDescriptor is alignas(64), so the struct is too). The generated source static_asserts the
    size, so the two layouts cannot drift apart silently."""
    probe = type(name + "Probe", (ctypes.Structure,), {"_fields_": fields})
    size = ctypes.sizeof(probe)
    pad = (-size) % align
    return type(name, (ctypes.Structure,), {"_fields_": fields + ([("_pad", ctypes.c_uint8 * pad)] if pad else [])})


def layout_asserts(cpp_type: str, struct: type[ctypes.Structure]) -> str:
    """Compile-time check that the C++ struct has the host mirror's size. (Field offsets cannot be
    asserted portably: NVRTC 13.0 has no offsetof builtin. Both sides use natural C alignment.)"""
    return f"static_assert(sizeof({cpp_type}) == {ctypes.sizeof(struct)}, \"host/device parameter size mismatch\");"


def set_tensor_map(params: ctypes.Structure, field_offset: int, encoded: bytes) -> None:
    ctypes.memmove(ctypes.addressof(params) + field_offset, encoded, 128)


def current_stream(device_index: int) -> int:
    return torch.cuda.current_stream(device_index).cuda_stream


try:  # the raw getter skips building a torch.cuda.Stream object (about 1 us per call)
    _raw_stream = torch._C._cuda_getCurrentRawStream

    def current_stream(device_index: int) -> int:  # noqa: F811
        return _raw_stream(device_index)
except AttributeError:
    pass
