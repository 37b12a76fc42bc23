#!/usr/bin/env bash
# Everything the GPU machine should do in one call: environment, precompile, runtime and GEMM
# correctness, the peer benchmark, a config sweep. Full logs under $OUT, a short summary last.
# Usage (on the device, from the repo root): bash tools/gpu_suite.sh [steps...]
# Steps: env clusters precompile runtime gemm grouped host bench groupedbench sweep (default: all). Each step has its own time limit.
set -u
OUT=${OUT:-/tmp/dg_out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 DG_JIT_CACHE_DIR=${DG_JIT_CACHE_DIR:-/tmp/dg_cache}
: > "$OUT/summary.txt"
steps=${*:-env clusters precompile runtime gemm grouped host bench groupedbench sweep}

run_step() {
    local name=$1 limit=$2; shift 2
    local start=$SECONDS
    timeout -k 5 "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    printf '%-10s rc=%-3s %4ss  %s\n' "$name" "$rc" "$((SECONDS - start))" "$(tail -n 1 "$OUT/$name.log" | cut -c1-150)" >> "$OUT/summary.txt"
}

for s in $steps; do
    case $s in
        env) run_step env 60 bash -c 'nvidia-smi; python3 -m deep_gemm info; python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"' ;;
        clusters) run_step clusters 60 python3 tools/cluster_capacity.py ;;
        precompile) run_step precompile 180 python3 -m deep_gemm precompile ;;
        runtime) run_step runtime 120 python3 -m pytest -q -s -p no:cacheprovider --timeout=60 -rf tests/test_gpu_runtime.py ;;
        gemm) run_step gemm ${GEMM_LIMIT:-330} python3 -m pytest -q -p no:cacheprovider --timeout=60 --maxfail=${GEMM_MAXFAIL:-15} -rf tests/test_gpu_fp8_gemm.py ;;
        bench) run_step bench ${BENCH_LIMIT:-240} python3 -m benchmarks.run --out "$OUT" --deep-gemm-kernel fp8_gemm_kernel ${BENCH_ARGS:-} ;;
        groupedbench) run_step groupedbench ${GROUPED_BENCH_LIMIT:-240} python3 -m benchmarks.grouped --out "$OUT" ;;
        grouped) run_step grouped ${GROUPED_LIMIT:-240} python3 -m pytest -q -p no:cacheprovider --timeout=60 --maxfail=${GEMM_MAXFAIL:-15} -rf tests/test_gpu_grouped.py ;;
        host) run_step host 120 python3 tools/host_profile.py ;;
        sweep) run_step sweep ${SWEEP_LIMIT:-200} python3 -m benchmarks.sweep_configs --out "$OUT/sweep.json" ${SWEEP_ARGS:-} ;;
    esac
done
echo "==== logs: $OUT"; for f in "$OUT"/*.log; do echo "---- $f (tail)"; tail -n 25 "$f"; done
echo "==== summary"; cat "$OUT/summary.txt"
