"""Which tensors can run the Hopper kernels, SM count control, and the CPU/older-GPU fallback policy."""
from __future__ import annotations

import functools
import warnings

import torch

from .. import envs

_num_sms_override: int | None = None


@functools.lru_cache(maxsize=None)
def _device_sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


@functools.lru_cache(maxsize=None)
def _is_hopper(index: int) -> bool:
    return torch.cuda.get_device_capability(index) == (9, 0)


def set_num_sms(num_sms: int) -> None:
    """Limits the persistent kernels to `num_sms` SMs (e.g. to leave room for communication kernels)."""
    if not isinstance(num_sms, int) or isinstance(num_sms, bool) or num_sms <= 0:
        raise ValueError(f"num_sms: expected a positive int, got {num_sms!r}")
    if torch.cuda.is_available():
        available = _device_sms(torch.cuda.current_device())
        if num_sms > available:
            raise ValueError(f"num_sms: the current GPU has {available} SMs, got {num_sms}")
    global _num_sms_override
    _num_sms_override = num_sms


def get_num_sms() -> int:
    if _num_sms_override is not None:
        return _num_sms_override
    if not torch.cuda.is_available():
        return 132   # an H100 SXM's count, so CPU-side tools (precompile) plan for the common card
    return _device_sms(torch.cuda.current_device())


def num_sms_override() -> int | None:
    return _num_sms_override


def num_sms_for(index: int) -> int:
    return _num_sms_override if _num_sms_override is not None else _device_sms(index)


_warned: set[str] = set()


def use_kernels(t: torch.Tensor, what: str) -> bool:
    """True when `t` lives on a Hopper GPU; otherwise the caller runs the reference path
    (warning once per function), unless DG_DISABLE_CPU_FALLBACK asks for an error."""
    if t.is_cuda and _is_hopper(t.device.index):
        return True
    where = "CPU" if not t.is_cuda else f"{torch.cuda.get_device_name(t.device)} (not sm_90)"
    if envs.disable_cpu_fallback():
        raise RuntimeError(f"{what}: tensors on {where}; the kernels need a Hopper GPU and "
                           f"DG_DISABLE_CPU_FALLBACK is set")
    if what not in _warned:
        _warned.add(what)
        warnings.warn(f"deep_gemm.{what}: tensors on {where}; running the PyTorch reference path "
                      f"(correct but slow). Set DG_DISABLE_CPU_FALLBACK=1 to make this an error.", stacklevel=4)
    return False
