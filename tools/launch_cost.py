"""What the driver's launch costs, by parameter-block size and cluster size (run on the GPU machine).

Launches an empty kernel that takes one by-value struct of 16-2048 bytes through the same
`Launcher.bind` replay that a warm deep_gemm call uses, while a sleep kernel keeps the GPU busy,
so the figure is host time alone. Compare with `tools/host_profile.py`'s "bound launch" row.
"""
import ctypes
import time

import torch

from deep_gemm.jit import runtime
from deep_gemm.kernels.common import current_stream

PARAM_BYTES = (16, 512, 1088, 2048)   # 1088: the size of Fp8GemmParams with the tail maps


def per_launch_us(fn, batches=7, per_batch=80):
    """(min, median) over batches of the mean time per call."""
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(batches):
        torch.cuda._sleep(int(2e8))
        start = time.perf_counter()
        for _ in range(per_batch):
            fn()
        times.append((time.perf_counter() - start) / per_batch * 1e6)
        torch.cuda.synchronize()
    times.sort()
    return times[0], times[len(times) // 2]


def empty_kernel_source(size: int) -> str:
    # The parameter is read so that it cannot be dropped; the branch never traps.
    return (f"struct P {{ unsigned char b[{size}]; }};\n"
            f"extern \"C\" __global__ void empty_{size}(const __grid_constant__ P p) {{\n"
            f"    if (p.b[0] == 123 && threadIdx.x == 999) asm volatile(\"trap;\");\n}}\n")


def main():
    torch.empty(1, device="cuda")   # creates the primary context the launcher uses
    stream = current_stream(0)
    for size in PARAM_BYTES:
        loaded = runtime.get_kernel(f"launch_cost_empty_{size}", empty_kernel_source(size), f"&empty_{size}")
        for cluster in (1, 3):
            launcher = runtime.Launcher(loaded.function(0, 0), 132 if cluster == 1 else 129, 128, 0, cluster)
            params = (ctypes.c_ubyte * size)()
            launch, address, _keep = launcher.bind(params)
            best, median = per_launch_us(lambda: launch(address, stream))
            print(f"params {size:5d} B cluster {cluster}: min {best:6.2f} us  median {median:6.2f} us", flush=True)


if __name__ == "__main__":
    main()
