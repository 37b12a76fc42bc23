"""The GEMM implementations the benchmark compares, one factory per column.

A factory ``make_<peer>(M, N, K, device) -> (fn, info)`` allocates its own random inputs, checks one
result against a float32 reference on the dequantized inputs, and returns a zero-argument callable
that runs one GEMM plus a JSON-able ``info`` dict. It raises ``PeerUnavailable`` when the peer cannot
run here and ``PeerCheckFailed`` when it runs but computes the wrong thing: a layout mistake must
never show up as a speed. Adding a column = adding a factory to ``PEERS``.

Importing this module needs neither a GPU nor Triton nor a built deep_gemm.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

SCALE_BLOCK = 128
FP8_MAX = 448.0  # largest finite e4m3fn value
CHECK_TOL = 1e-2  # relative Frobenius error; bf16 rounding alone is ~2e-3


class PeerUnavailable(RuntimeError):
    """The peer cannot run on this machine (missing package, API, or hardware support)."""


class PeerCheckFailed(RuntimeError):
    """The peer ran but its result disagrees with the reference."""


def _fp8_dtype() -> torch.dtype:
    dt = getattr(torch, "float8_e4m3fn", None)
    if dt is None:
        raise PeerUnavailable(f"torch {torch.__version__} has no float8_e4m3fn")
    return dt


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# --------------------------------------------------------------------------------------------------
# Inputs and reference


def random_blocky(rows: int, cols: int, row_block: int, device, generator=None) -> torch.Tensor:
    """Gaussian values times a magnitude in [1/4, 4] that changes per (row_block x 128) block.

    Uniform magnitudes would make every block's scale nearly equal, so a peer reading the scales in
    the wrong layout could still pass the check; varying them makes such a mistake an O(1) error.
    """
    x = torch.randn(rows, cols, device=device, generator=generator, dtype=torch.float32)
    rb, cb = ceil_div(rows, row_block), ceil_div(cols, SCALE_BLOCK)
    mag = torch.exp2(torch.rand(rb, cb, device=device, generator=generator) * 4 - 2)
    mag = mag.repeat_interleave(row_block, 0)[:rows].repeat_interleave(SCALE_BLOCK, 1)[:, :cols]
    return x * mag


def per_token_cast(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[M,K] float -> (e4m3 [M,K], float32 dequantization scales [M, ceil(K/128)]), 1x128 blocks."""
    M, K = x.shape
    kb = ceil_div(K, SCALE_BLOCK)
    xp = torch.nn.functional.pad(x.float(), (0, kb * SCALE_BLOCK - K)).view(M, kb, SCALE_BLOCK)
    sf = xp.abs().amax(dim=2).clamp(min=1e-4) / FP8_MAX
    q = (xp / sf[:, :, None]).view(M, kb * SCALE_BLOCK)[:, :K].to(_fp8_dtype()).contiguous()
    return q, sf


def per_block_cast(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N,K] float -> (e4m3 [N,K], float32 scales [ceil(N/128), ceil(K/128)]), 128x128 blocks."""
    N, K = x.shape
    nb, kb = ceil_div(N, SCALE_BLOCK), ceil_div(K, SCALE_BLOCK)
    xp = torch.zeros(nb * SCALE_BLOCK, kb * SCALE_BLOCK, dtype=torch.float32, device=x.device)
    xp[:N, :K] = x
    v = xp.view(nb, SCALE_BLOCK, kb, SCALE_BLOCK)
    sf = v.abs().amax(dim=(1, 3)).clamp(min=1e-4) / FP8_MAX
    q = (v / sf[:, None, :, None]).view(nb * SCALE_BLOCK, kb * SCALE_BLOCK)[:N, :K].to(_fp8_dtype()).contiguous()
    return q, sf


def dequant_rows(q: torch.Tensor, sf: torch.Tensor) -> torch.Tensor:
    """Inverse of per_token_cast, in float32."""
    K = q.shape[1]
    return q.float() * sf.repeat_interleave(SCALE_BLOCK, 1)[:, :K]


def dequant_blocks(q: torch.Tensor, sf: torch.Tensor) -> torch.Tensor:
    """Inverse of per_block_cast, in float32."""
    N, K = q.shape
    return q.float() * sf.repeat_interleave(SCALE_BLOCK, 0)[:N].repeat_interleave(SCALE_BLOCK, 1)[:, :K]


def reference_block_fp8(a, sfa, b, sfb) -> torch.Tensor:
    """float32 (a * sfa) @ (b * sfb)^T: an oracle independent of every peer, deep_gemm included."""
    return dequant_rows(a, sfa) @ dequant_blocks(b, sfb).t()


def rel_fro_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    ref = ref.float()
    num = (out.float() - ref).norm().item()
    den = ref.norm().item()
    return num / den if den > 0 else num


def _check(peer: str, out: torch.Tensor, ref: torch.Tensor, tol: float = CHECK_TOL) -> float:
    err = rel_fro_error(out, ref)
    if not err < tol:  # also catches NaN
        raise PeerCheckFailed(
            f"{peer}: result disagrees with the float32 reference on the dequantized inputs: "
            f"relative Frobenius error {err:.3e} (tolerance {tol:.0e}); "
            f"|out|={out.float().norm().item():.4e} |ref|={ref.float().norm().item():.4e}"
        )
    return err


def _generator(device, M: int, N: int, K: int) -> torch.Generator:
    # Seeded by shape so reruns and different peers see statistically identical problems.
    g = torch.Generator(device=device)
    g.manual_seed((M * 1_000_003 + N * 1_009 + K) % (2**31))
    return g


def _block_fp8_inputs(M: int, N: int, K: int, device):
    g = _generator(device, M, N, K)
    a, sfa = per_token_cast(random_blocky(M, K, 1, device, g))
    b, sfb = per_block_cast(random_blocky(N, K, SCALE_BLOCK, device, g))
    return a, sfa, b, sfb


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _first_call(fn: Callable[[], object], device) -> tuple[object, float]:
    """Run fn once, timed on the host including any JIT compile or autotune it triggers."""
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


def _need_cuda(device) -> None:
    if torch.device(device).type != "cuda" or not torch.cuda.is_available():
        raise PeerUnavailable("needs a CUDA device")


def _err_str(exc: BaseException, limit: int = 600) -> str:
    s = f"{type(exc).__name__}: {exc}".strip()
    return s if len(s) <= limit else s[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------------
# Peers


def make_torch_bf16(M: int, N: int, K: int, device):
    _need_cuda(device)
    g = _generator(device, M, N, K)
    a = torch.randn(M, K, device=device, generator=g).to(torch.bfloat16)
    b = torch.randn(N, K, device=device, generator=g).to(torch.bfloat16)
    d = torch.empty(M, N, device=device, dtype=torch.bfloat16)
    bt = b.t()

    def fn():
        return torch.matmul(a, bt, out=d)

    _, first = _first_call(fn, device)
    err = _check("torch_bf16", d, a.float() @ b.float().t())
    return fn, {"label": "torch BF16", "api": "torch.matmul (cuBLAS)", "elem_bytes": 2, "rel_err": err, "first_call_s": first}


def _scaled_mm_block_candidates(a, scale_a, b, scale_b):
    cands = []
    F = torch.nn.functional
    st = getattr(F, "ScalingType", None)
    if hasattr(F, "scaled_mm") and st is not None and hasattr(st, "BlockWise1x128") and hasattr(st, "BlockWise128x128"):
        bt = b.t()

        def functional():
            return F.scaled_mm(
                a, bt, scale_a, st.BlockWise1x128, scale_b, st.BlockWise128x128, output_dtype=torch.bfloat16
            )

        cands.append(("torch.nn.functional.scaled_mm(BlockWise1x128, BlockWise128x128)", functional))
    if hasattr(torch, "_scaled_mm"):
        bt = b.t()

        def private():
            return torch._scaled_mm(a, bt, scale_a, scale_b, out_dtype=torch.bfloat16)

        cands.append(("torch._scaled_mm(1x128, 128x128 scales)", private))
    return cands


def block_scaled_mm_candidates(a, sfa, b, sfb) -> list[tuple[str, Callable[[], torch.Tensor]]]:
    """The cuBLASLt block-scaled calls this torch offers for a @ b^T, as [(api, fn)], best first;
    (a, sfa) and (b, sfb) as per_token_cast / per_block_cast return them."""
    # cuBLASLt's block-scaled FP8 wants the activation scales M-major and the weight scales as the
    # [K/128, N/128] transpose view of the row-major [N/128, K/128] tensor.
    return _scaled_mm_block_candidates(a, sfa.t().contiguous().t(), b, sfb.t())


def first_correct(candidates, check: Callable[[object], float], device, missing: str,
                  raised: type = PeerUnavailable):
    """The first candidate (api, fn) whose first call passes check(out) -> rel_err.

    Returns (api, fn, rel_err, first_call_s, rejected: list[str]). Raises PeerCheckFailed if any
    candidate ran and was wrong, PeerUnavailable(missing) if there is none, else ``raised`` with
    every candidate's exception."""
    attempts: list[str] = []
    wrong: list[str] = []
    for api, fn in candidates:
        try:
            out, first = _first_call(fn, device)
            err = check(out)
        except PeerCheckFailed as exc:
            wrong.append(f"{api}: {exc}")
            continue
        except Exception as exc:
            attempts.append(f"{api}: {_err_str(exc)}")
            continue
        return api, fn, err, first, attempts + wrong
    if wrong:
        raise PeerCheckFailed(" | ".join(wrong + attempts))
    if not attempts:
        raise PeerUnavailable(missing)
    raise raised(" | ".join(attempts))


def make_scaled_mm_block(M: int, N: int, K: int, device):
    _need_cuda(device)
    a, sfa, b, sfb = _block_fp8_inputs(M, N, K, device)
    ref = reference_block_fp8(a, sfa, b, sfb)
    api, fn, err, first, rejected = first_correct(
        block_scaled_mm_candidates(a, sfa, b, sfb), lambda out: _check("scaled_mm_block", out, ref), device,
        missing=f"torch {torch.__version__} has neither F.scaled_mm nor torch._scaled_mm")
    info = {"label": "cuBLASLt block", "api": api, "elem_bytes": 1, "rel_err": err, "first_call_s": first}
    if rejected:
        info["rejected_apis"] = rejected
    return fn, info


def _per_tensor_cast(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = (x.abs().amax().clamp(min=1e-4) / FP8_MAX).float().reshape(())
    return (x / scale).to(_fp8_dtype()).contiguous(), scale


def _make_scaled_mm_tensor(M: int, N: int, K: int, device, fast_accum: bool):
    _need_cuda(device)
    if not hasattr(torch, "_scaled_mm"):
        raise PeerUnavailable(f"torch {torch.__version__} has no torch._scaled_mm")
    g = _generator(device, M, N, K)
    a, sa = _per_tensor_cast(torch.randn(M, K, device=device, generator=g))
    b, sb = _per_tensor_cast(torch.randn(N, K, device=device, generator=g))
    bt = b.t()

    def call():
        return torch._scaled_mm(a, bt, sa, sb, out_dtype=torch.bfloat16, use_fast_accum=fast_accum)

    try:
        out, first = _first_call(call, device)
    except Exception as exc:
        raise PeerUnavailable(f"torch._scaled_mm per-tensor: {_err_str(exc)}") from exc
    fn = call
    if isinstance(out, tuple):  # torch < 2.5 returned (out, amax)
        out = out[0]

        def fn():
            return call()[0]

    ref = (a.float() * sa) @ (b.float() * sb).t()
    name = "scaled_mm_tensor_fast" if fast_accum else "scaled_mm_tensor"
    err = _check(name, out, ref)
    return fn, {
        "label": "cuBLAS FP8 per-tensor" + (" fast-accum" if fast_accum else ""),
        "api": f"torch._scaled_mm(per-tensor scales, use_fast_accum={fast_accum})",
        "elem_bytes": 1,
        "rel_err": err,
        "first_call_s": first,
    }


def make_scaled_mm_tensor(M: int, N: int, K: int, device):
    return _make_scaled_mm_tensor(M, N, K, device, fast_accum=False)


def make_scaled_mm_tensor_fast(M: int, N: int, K: int, device):
    return _make_scaled_mm_tensor(M, N, K, device, fast_accum=True)


def _import_triton_block():
    try:
        from benchmarks import triton_block_fp8 as tb
    except ImportError:
        import triton_block_fp8 as tb  # benchmarks/ itself on sys.path
    return tb


def make_triton_block(M: int, N: int, K: int, device):
    _need_cuda(device)
    tb = _import_triton_block()
    ok, why = tb.available()
    if not ok:
        raise PeerUnavailable(why)
    a, sfa, b, sfb = _block_fp8_inputs(M, N, K, device)
    d = torch.empty(M, N, device=device, dtype=torch.bfloat16)

    def fn():
        return tb.triton_block_fp8_gemm(a, sfa, b, sfb, d)

    _, first = _first_call(fn, device)  # includes compiling and autotuning this shape
    err = _check("triton_block", d, reference_block_fp8(a, sfa, b, sfb))
    return fn, {"label": "Triton block", "api": why, "elem_bytes": 1, "rel_err": err, "first_call_s": first}


def make_deep_gemm(M: int, N: int, K: int, device):
    _need_cuda(device)
    try:
        import deep_gemm
    except Exception as exc:
        raise PeerUnavailable(f"import deep_gemm failed: {_err_str(exc)}") from exc
    gemm = getattr(deep_gemm, "fp8_gemm_nt", None)
    if gemm is None:
        raise PeerUnavailable("deep_gemm has no fp8_gemm_nt yet")
    a, sfa, b, sfb = _block_fp8_inputs(M, N, K, device)
    d = torch.empty(M, N, device=device, dtype=torch.bfloat16)
    # Activation scales in the layout the kernel reads (MN-major, TMA-aligned), as a caller that
    # produces them that way would pass them; DeepGEMM's own benchmarks do the same. A row-major
    # sfa costs one transposing copy per call, which the profiler timing would not see anyway.
    sfa_mn = deep_gemm.get_mn_major_tma_aligned_tensor(sfa)

    def fn():
        return gemm((a, sfa_mn), (b, sfb), d)

    try:
        _, first = _first_call(fn, device)  # includes the JIT compile on a cold cache
    except NotImplementedError as exc:
        raise PeerUnavailable(f"deep_gemm.fp8_gemm_nt: not implemented ({exc})") from exc
    info = {"label": "deep_gemm", "api": "deep_gemm.fp8_gemm_nt", "elem_bytes": 1, "first_call_s": first}
    # The gate is the independent float32 oracle; the package's own reference is compared too, so
    # a disagreement between the two shows up in the results instead of passing silently.
    info["rel_err"] = _check("deep_gemm", d, reference_block_fp8(a, sfa, b, sfb))
    try:
        from deep_gemm import reference as dg_reference

        ref_out = dg_reference.fp8_gemm_nt(a, sfa, b, sfb, out_dtype=torch.bfloat16)
        info["rel_err_vs_deep_gemm_reference"] = rel_fro_error(d, ref_out)
    except Exception as exc:
        info["rel_err_vs_deep_gemm_reference"] = None
        info["deep_gemm_reference_error"] = _err_str(exc, 300)
    return fn, info


# Column order of the report. Labels are optional: a peer without one is shown by its key.
PEERS: dict[str, Callable] = {
    "deep_gemm": make_deep_gemm,
    "scaled_mm_block": make_scaled_mm_block,
    "scaled_mm_tensor": make_scaled_mm_tensor,
    "triton_block": make_triton_block,
    "torch_bf16": make_torch_bf16,
    "scaled_mm_tensor_fast": make_scaled_mm_tensor_fast,
}

PEER_LABELS: dict[str, str] = {
    "deep_gemm": "deep_gemm",
    "scaled_mm_block": "cuBLASLt block",
    "scaled_mm_tensor": "cuBLAS FP8 per-tensor",
    "triton_block": "Triton block",
    "torch_bf16": "torch BF16",
    "scaled_mm_tensor_fast": "cuBLAS FP8 per-tensor fast-accum",
}

# Run by default; the others only when named with --peers.
DEFAULT_PEERS: tuple[str, ...] = ("deep_gemm", "scaled_mm_block", "scaled_mm_tensor", "triton_block", "torch_bf16")


def label(peer: str) -> str:
    return PEER_LABELS.get(peer, peer)
