"""Where the host time of a warm fp8_gemm_nt call goes (run on the GPU machine)."""
import time

import torch

import deep_gemm
from deep_gemm.api import calls, dense
from deep_gemm.kernels.common import current_stream
from deep_gemm.testing import fp8_gemm_inputs


def per_call_us(fn, n=300):
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(5):
        torch.cuda._sleep(int(3e8))
        start = time.perf_counter()
        for _ in range(n // 5):
            fn()
        best = min(best, (time.perf_counter() - start) / (n // 5) * 1e6)
        torch.cuda.synchronize()
    return best


def main():
    m, n, k = 64, 2112, 7168
    a, b, (qa, sfa), (qb, sfb) = fp8_gemm_inputs(m, n, k)
    sfa_t = deep_gemm.get_mn_major_tma_aligned_tensor(sfa)
    d = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
    deep_gemm.fp8_gemm_nt((qa, sfa_t), (qb, sfb), d)
    plan = next(iter(dense._plans.values()))
    args = (qa.data_ptr(), qa.stride(0), qb.data_ptr(), qb.stride(0), sfa_t.data_ptr(), sfa_t.stride(1),
            sfb.data_ptr(), sfb.stride(0), d.data_ptr(), d.stride(0))
    params = plan.make_params(*args)
    launch, address, dev, _keep = plan.bound_launch(params)
    rows = [
        ("full call, MN-major sfa", lambda: deep_gemm.fp8_gemm_nt((qa, sfa_t), (qb, sfb), d)),
        ("full call, row-major sfa (+transpose)", lambda: deep_gemm.fp8_gemm_nt((qa, sfa), (qb, sfb), d)),
        ("validation only (cold path)", lambda: dense._validate((qa, sfa_t), (qb, sfb), d, None, None)),
        ("signature key only (warm path)", lambda: calls.signature((qa, sfa_t), (qb, sfb), d)),
        ("plan.make_params (tensor maps cached)", lambda: plan.make_params(*args)),
        ("plan.launch (params ready)", lambda: plan.launch(params)),
        ("bound launch (what a warm call replays)", lambda: launch(address, current_stream(dev))),
        ("torch.empty_like(d)", lambda: torch.empty_like(d)),
        ("torch.matmul bf16 (reference point)", lambda: torch.matmul(a, b.T)),
    ]
    for name, fn in rows:
        print(f"{name:<40} {per_call_us(fn):8.2f} us")


if __name__ == "__main__":
    main()
