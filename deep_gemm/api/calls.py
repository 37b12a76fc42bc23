"""What every public GEMM call shares: the argument names its messages use, the choice (or the
user's forced config) of the kernel, and the warm-call cache that replays a planned call."""
from __future__ import annotations

import dataclasses
import warnings

import torch

from ..heuristics import fp8_gemm as heuristics
from ..kernels import fp8_gemm as kernel
from ..kernels.common import current_stream
from . import device

# Argument names of the DeepGEMM 2.x and 1.x signatures, for error messages.
NAMES_V2 = ("a", "b", "d")
NAMES_V1 = ("lhs", "rhs", "out")


def resolve_config(ranked, config, num_sms: int, what: str, mn: tuple[int, int] = (0, 0),
                   **from_call) -> kernel.Fp8GemmConfig:
    """The heuristic's pick from `ranked()` (the first whose kernel does not spill), or the user's
    forced config with the fields that follow from the call (`from_call`: output type, epilogue, K tail,
    kind) and at most the device's SMs, its main loop rolled if the user left the unroll open and
    the unrolled one spills. Either as the tail-box variant that Fp8GemmPlan launches for an
    M x N problem (`mn`: M_max for the masked kind), so the cold call compiles one kernel, not two.
    Warns when the kernel uses local memory anyway."""
    m, n = mn
    if config is None:
        cfg = heuristics.first_without_spills((kernel.with_tail_boxes(c, m, n) for c in ranked()),
                                              lambda c: c.build())
    else:
        if not isinstance(config, kernel.Fp8GemmConfig):
            raise TypeError(f"config: expected a deep_gemm.Fp8GemmConfig, got {type(config).__name__}")
        cfg = kernel.with_tail_boxes(dataclasses.replace(config, num_sms=min(config.num_sms, num_sms), **from_call),
                                     m, n)
        if config.unroll is None:
            # The unroll is left to us: rolled if the unrolled loop spills with this compiler.
            cfg = heuristics.first_without_spills([cfg], lambda c: c.build())
    r = cfg.build().resources
    if heuristics.uses_local_memory(r):
        # user -> public function -> its body -> plan -> here
        warnings.warn(f"deep_gemm: kernel {cfg.kernel_name()} for {what} uses local memory ({r}); "
                      f"it runs correctly but slower than it should", stacklevel=5)
    return cfg


# Warm-call cache: the full signature of the tensors (address, shape, strides, dtype) -> the plan and
# its parameter block. Everything validation and planning look at is in the key, so a hit needs no
# further checks; a freed tensor whose address is reused with the same signature gets the same,
# still correct, parameters.
_warm: dict[tuple, tuple] = {}
_WARM_LIMIT = 4096


def signature(a, b, d, *extra):
    """Everything a call's validity and launch parameters depend on; raises for non-tensors."""
    x, sx = a
    y, sy = b
    key = (x.data_ptr(), x.shape, x.stride(), x.dtype, sx.data_ptr(), sx.shape, sx.stride(), sx.dtype,
           y.data_ptr(), y.shape, y.stride(), y.dtype, sy.data_ptr(), sy.shape, sy.stride(), sy.dtype,
           d.data_ptr(), d.shape, d.stride(), d.dtype, device.num_sms_override())
    for t in extra:
        key += (t.data_ptr(), t.shape, t.stride(), t.dtype) if isinstance(t, torch.Tensor) else (t,)
    return key


def try_replay(a, b, d, *extra):
    """Launches straight from the warm cache when this exact call signature was planned before.
    Returns (key, launched); key is None when the arguments cannot form a signature."""
    if type(a) is not tuple or type(b) is not tuple:
        return None, False
    try:
        key = signature(a, b, d, *extra)
    except (AttributeError, TypeError, ValueError):
        return None, False
    hit = _warm.get(key)
    if hit is None:
        return key, False
    launch, address, dev, _ = hit
    launch(address, current_stream(dev))
    return key, True


def remember(key, plan, params) -> None:
    """Stores the plan's launch of `params`, bound once (the argument array is built here, not on
    every replay)."""
    if len(_warm) >= _WARM_LIMIT:
        _warm.clear()
    _warm[key] = plan.bound_launch(params)
