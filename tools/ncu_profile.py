"""Runs fp8_gemm_nt on the given shapes so that Nsight Compute can profile one launch of each.

    ncu --section SpeedOfLight ... --profile-from-start off -k regex:fp8_gemm \
        python3 tools/ncu_profile.py 4096,7168,16384 64,2112,7168 4096,7168,576@tma:256x128x3:r8

A shape may end in `@VARIANT`, a forced config in `tools/epilogue_probe.py`'s names, instead of
the library's pick. Only the second call of each shape (the first one compiles) runs inside
cudaProfilerStart/Stop, so use --profile-from-start off."""
from __future__ import annotations

import sys

import torch

import deep_gemm
from deep_gemm.testing.inputs import fp8_gemm_inputs
from epilogue_probe import output, parse


def main() -> None:
    for arg in sys.argv[1:]:
        spec, _, variant = arg.partition("@")
        m, n, k = (int(x) for x in spec.split(","))
        kind, config = parse(variant or "pick", n, k, deep_gemm.get_num_sms())
        _, _, a, b = fp8_gemm_inputs(m, n, k, mn_major_sfa=True)
        d, _ = output(m, n, kind)   # "direct:" variants get the padded rows that take the direct store
        deep_gemm.fp8_gemm_nt(a, b, d, config=config)   # compile + warm
        torch.cuda.synchronize()
        torch.cuda.cudart().cudaProfilerStart()
        deep_gemm.fp8_gemm_nt(a, b, d, config=config)
        torch.cuda.synchronize()
        torch.cuda.cudart().cudaProfilerStop()
        print(f"profiled {arg}", flush=True)


if __name__ == "__main__":
    main()
