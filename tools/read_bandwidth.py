"""Read-only and copy bandwidth of this GPU's HBM, with CUDA events and the L2 flushed: what a
memory-bound decode GEMM that reads its weights once can hope for."""
from __future__ import annotations

import torch


def timed(fn, reps=20) -> float:
    flush = torch.empty(512 << 20, dtype=torch.uint8, device="cuda")
    times = []
    for _ in range(reps):
        flush.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    times.sort()
    return times[len(times) // 2]


def main() -> None:
    print(torch.cuda.get_device_name())
    for mb in (16, 32, 117, 1024):
        n = mb << 20
        x = torch.randint(0, 100, (n // 4,), dtype=torch.int32, device="cuda")
        y = torch.empty_like(x)
        t_sum = timed(lambda: x.sum())
        t_max = timed(lambda: torch.amax(x.view(torch.float32)))
        t_copy = timed(lambda: y.copy_(x))
        print(f"{mb:5d} MB: sum {n / t_sum / 1e12:.2f} TB/s  amax {n / t_max / 1e12:.2f} TB/s  "
              f"copy (read+write) {2 * n / t_copy / 1e12:.2f} TB/s", flush=True)


if __name__ == "__main__":
    main()
