"""A plain Triton block-FP8 GEMM, the "what a straightforward Triton kernel gets" peer.

D[M,N] (bf16) = (A * sfa) @ (B * sfb)^T with A e4m3 [M,K] and 1x128 scales sfa [M, ceil(K/128)],
B e4m3 [N,K] and 128x128 scales sfb [ceil(N/128), ceil(K/128)]. Each 128-wide K block is multiplied
in FP8 on the tensor cores, then scaled and added to an FP32 accumulator (the same two-level
accumulation DeepGEMM uses), so numerics match the reference up to bf16 rounding.

Deliberately simple: no TMA descriptors, no persistence, no warp specialization. Triton is imported
when this module is imported, and this module is only imported by the peer factory, so the
benchmark suite (and its CPU tests) loads without Triton.
"""

from __future__ import annotations

SCALE_BLOCK = 128  # the recipe's block edge; BLOCK_K equals it so one K step meets one scale column

try:
    import triton
    import triton.language as tl

    _IMPORT_ERROR: "BaseException | None" = None
except Exception as exc:  # ImportError, or a Triton that does not match the installed torch/driver
    triton = None
    tl = None
    _IMPORT_ERROR = exc


def _configs():
    # (BLOCK_M, BLOCK_N, warps, stages). Register budget: the dot result is a second FP32 tile next
    # to the accumulator, so tiles stay at 64 accumulator values per thread (128x128 needs 8 warps).
    # Shared memory per stage is (BLOCK_M + BLOCK_N) * 128 bytes.
    table = [
        (128, 128, 8, 4),  # large M
        (128, 64, 4, 5),  # large M, narrow N (N=576): more tiles to fill 132 SMs
        (64, 128, 4, 5),  # decode-sized M
        (64, 64, 4, 6),  # decode-sized M with few N tiles
        (64, 256, 8, 4),  # decode-sized M, wide N: A is re-read fewer times
    ]
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "GROUP_M": 8}, num_warps=w, num_stages=s)
        for bm, bn, w, s in table
    ]


if triton is not None:

    @triton.autotune(configs=_configs(), key=["M", "N", "K"])
    @triton.jit
    def _block_fp8_gemm_kernel(
        a_ptr,
        b_ptr,
        d_ptr,
        sfa_ptr,
        sfb_ptr,
        M,
        N,
        K,
        stride_am,
        stride_bn,
        stride_dm,
        stride_dn,
        stride_sfa_m,
        stride_sfa_k,
        stride_sfb_n,
        stride_sfb_k,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        GROUP_M: tl.constexpr,
        EVEN_K: tl.constexpr,
    ):
        # Grouped tile order: GROUP_M row-tiles sweep all column-tiles together so B tiles are
        # reused from L2 while they are hot.
        pid = tl.program_id(0)
        num_pid_m = tl.cdiv(M, BLOCK_M)
        num_pid_n = tl.cdiv(N, BLOCK_N)
        tiles_per_group = GROUP_M * num_pid_n
        first_m = (pid // tiles_per_group) * GROUP_M
        rows_in_group = tl.minimum(num_pid_m - first_m, GROUP_M)
        pid_m = first_m + (pid % tiles_per_group) % rows_in_group
        pid_n = (pid % tiles_per_group) // rows_in_group

        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_k = tl.arange(0, BLOCK_K)
        # Rows past M (cols past N) are wrapped onto valid ones so the loads need no mask; their
        # results are masked off at the store. int64 keeps row * stride safe for huge operands.
        rows_a = (offs_m % M).to(tl.int64)
        rows_b = (offs_n % N).to(tl.int64)

        a_ptrs = a_ptr + rows_a[:, None] * stride_am + offs_k[None, :]
        # B^T tile [BLOCK_K, BLOCK_N] read straight from K-contiguous B: the K-major operand
        # layout FP8 wgmma wants, no transpose in shared memory.
        b_ptrs = b_ptr + rows_b[None, :] * stride_bn + offs_k[:, None]
        sfa_ptrs = sfa_ptr + rows_a * stride_sfa_m
        sfb_ptrs = sfb_ptr + (rows_b // BLOCK_K) * stride_sfb_n

        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for kb in range(0, tl.cdiv(K, BLOCK_K)):
            if EVEN_K:
                a = tl.load(a_ptrs)
                b = tl.load(b_ptrs)
            else:
                k_left = K - kb * BLOCK_K
                a = tl.load(a_ptrs, mask=offs_k[None, :] < k_left, other=0.0)
                b = tl.load(b_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
            sa = tl.load(sfa_ptrs + kb * stride_sfa_k)
            sb = tl.load(sfb_ptrs + kb * stride_sfb_k)
            acc += tl.dot(a, b) * sa[:, None] * sb[None, :]
            a_ptrs += BLOCK_K
            b_ptrs += BLOCK_K

        d_ptrs = d_ptr + offs_m[:, None].to(tl.int64) * stride_dm + offs_n[None, :] * stride_dn
        mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
        tl.store(d_ptrs, acc.to(tl.bfloat16), mask=mask)

else:
    _block_fp8_gemm_kernel = None


def available() -> "tuple[bool, str]":
    """(True, triton version) when the kernel can run here, else (False, why not)."""
    if _IMPORT_ERROR is not None:
        return False, f"triton not importable: {type(_IMPORT_ERROR).__name__}: {_IMPORT_ERROR}"
    try:
        import torch
    except Exception as exc:
        return False, f"torch not importable: {exc!r}"
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    cap = torch.cuda.get_device_capability()
    if cap < (8, 9):
        return False, f"FP8 tensor cores need sm_89 or newer; device is sm_{cap[0]}{cap[1]}"
    return True, f"triton {getattr(triton, '__version__', '?')}"


def _check(a, sfa, b, sfb, out) -> None:
    import torch

    fp8 = getattr(torch, "float8_e4m3fn", None)
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError(f"a and b must be 2-D, got a{tuple(a.shape)} b{tuple(b.shape)}")
    M, K = a.shape
    N, Kb = b.shape
    if Kb != K:
        raise ValueError(f"a is [M={M}, K={K}] but b is [N={N}, K={Kb}]")
    if a.dtype != fp8 or b.dtype != fp8:
        raise TypeError(f"a and b must be torch.float8_e4m3fn, got {a.dtype} and {b.dtype}")
    kb = -(-K // SCALE_BLOCK)
    nb = -(-N // SCALE_BLOCK)
    if tuple(sfa.shape) != (M, kb) or sfa.dtype != torch.float32:
        raise ValueError(f"sfa must be float32 [{M}, {kb}], got {sfa.dtype} {tuple(sfa.shape)}")
    if tuple(sfb.shape) != (nb, kb) or sfb.dtype != torch.float32:
        raise ValueError(f"sfb must be float32 [{nb}, {kb}], got {sfb.dtype} {tuple(sfb.shape)}")
    if tuple(out.shape) != (M, N) or out.dtype != torch.bfloat16:
        raise ValueError(f"out must be bfloat16 [{M}, {N}], got {out.dtype} {tuple(out.shape)}")
    if a.stride(1) != 1 or b.stride(1) != 1:
        raise ValueError("a and b must be K-contiguous (stride 1 along K)")


def triton_block_fp8_gemm(a, sfa, b, sfb, out):
    """out[M,N] = (a * sfa) @ (b * sfb)^T in bf16; see the module docstring for the layouts."""
    if _IMPORT_ERROR is not None:
        raise RuntimeError(available()[1])
    _check(a, sfa, b, sfb, out)
    M, K = a.shape
    N = b.shape[0]
    if M == 0 or N == 0:
        return out
    if K == 0:
        return out.zero_()

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)

    _block_fp8_gemm_kernel[grid](
        a,
        b,
        out,
        sfa,
        sfb,
        M,
        N,
        K,
        a.stride(0),
        b.stride(0),
        out.stride(0),
        out.stride(1),
        sfa.stride(0),
        sfa.stride(1),
        sfb.stride(0),
        sfb.stride(1),
        BLOCK_K=SCALE_BLOCK,
        EVEN_K=(K % SCALE_BLOCK == 0),
    )
    return out
