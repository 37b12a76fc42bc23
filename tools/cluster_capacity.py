"""Prints how many clusters of each size (1..8 CTAs, one CTA per SM) the driver says can be resident
for a typical split-K kernel: the table behind heuristics.fp8_gemm.CLUSTER_CAPACITY."""
from __future__ import annotations

import torch

from deep_gemm.jit import runtime
from deep_gemm.kernels.fp8_gemm import Fp8GemmConfig


def main() -> None:
    dev = torch.cuda.current_device()
    runtime.ensure_context(dev)
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    caps = {}
    for split in range(1, 9):
        cfg = Fp8GemmConfig(64, 128, 6, 1, pipelined=True, split_k=split, num_sms=sms)
        smem = cfg.smem_bytes(7168)
        kernel = runtime.get_kernel(cfg.kernel_name(), cfg.source(), cfg.kernel_expr())
        func = kernel.function(dev, smem)
        grid = (sms // split) * split
        caps[split] = runtime.Launcher(func, grid, cfg.num_threads, smem, split).max_active_clusters()
    print(f"{torch.cuda.get_device_name(dev)} ({sms} SMs): resident clusters by size {caps}")


if __name__ == "__main__":
    main()
