"""Times the library's own config pick for several copies of the package (say HEAD and the working
tree) on the same shapes, in separate processes interleaved A B C A B C ..., so that clock drift at
the power cap shows up as spread within a variant rather than as a difference between variants.
In the first round each process checks its output (poisoned beforehand) against the float32
reference and DeepGEMM's calc_diff against the unquantized inputs before timing it.

    python3 tools/ab_probe.py --roots base=.ab/base new=. [--rounds 3] [--shapes "M,N,K;..."]
                              [--json out.json]

A root is a folder holding a `deep_gemm` package; each gets its own JIT cache. A root may end in
`@VARIANT`, a forced config in `tools/epilogue_probe.py`'s names (say `new=.@tma:256x128x3:pn`),
to time that config instead of the pick; the same folder may then appear under several names.
The table gives the best and median TFLOP/s over the rounds and each variant's best relative to
the first root's.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SHAPES = "4096,7168,16384;4096,4096,7168;4096,7168,2048;4096,24576,1536;4096,32768,512;4096,7168,576;" \
         "4096,2112,7168;4096,576,7168"

# Run in the child, with PYTHONPATH pointing at one root: one JSON line per shape.
CHILD = r"""
import json, sys, torch
import deep_gemm
sys.path.insert(0, sys.argv[4])
from epilogue_probe import output, parse
from deep_gemm import reference
from deep_gemm.testing import bench_kineto, calc_diff, fp8_gemm_inputs, rel_fro_error
check = sys.argv[2] == "1"
for spec in sys.argv[1].split(";"):
    m, n, k = (int(x) for x in spec.split(","))
    a, b, (qa, sfa), (qb, sfb) = fp8_gemm_inputs(m, n, k, mn_major_sfa=True)
    # A "direct:" variant needs D rows that TMA cannot store (output pads them); both are poisoned.
    kind, cfg = parse(sys.argv[3] or "pick", n, k, deep_gemm.get_num_sms())
    d, _ = output(m, n, kind)
    fn = lambda: deep_gemm.fp8_gemm_nt((qa, sfa), (qb, sfb), d, config=cfg)
    fn()
    torch.cuda.synchronize()
    err = diff = 0.0
    if check:
        ref = reference.fp8_gemm_nt(qa, sfa, qb, sfb, out_dtype=torch.float32)
        err = rel_fro_error(d.float(), ref) if not torch.isnan(d).any() else float("inf")
        diff = calc_diff(d.float(), (a.float() @ b.float().T))
        del ref
    t = bench_kineto(fn, "fp8_gemm", num_tests=30, with_multiple_kernels=True, statistic="median")
    print(json.dumps(dict(shape=spec, tflops=2 * m * n * k / t / 1e12, err=err, diff=diff)), flush=True)
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--roots", nargs="+", required=True, help="name=folder holding deep_gemm/")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shapes", default=SHAPES)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    roots = dict(r.split("=", 1) for r in args.roots)
    results: dict[str, dict[str, list[float]]] = {name: {} for name in roots}
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.rounds):
            for name, spec in roots.items():
                root, _, variant = spec.partition("@")
                env = dict(os.environ, PYTHONPATH=str(Path(root).resolve()),
                           DG_JIT_CACHE_DIR=str(Path(tmp) / f"cache_{name}"))
                proc = subprocess.run([sys.executable, "-c", CHILD, args.shapes, "1" if rnd == 0 else "0", variant,
                                       str(Path(__file__).resolve().parent)], env=env, capture_output=True,
                                      text=True, timeout=300, cwd=tmp)
                if proc.returncode != 0:
                    print(f"round {rnd} {name}: failed\n{proc.stderr[-2000:]}", flush=True)
                    failures += 1
                    continue
                for line in proc.stdout.splitlines():
                    if not line.startswith("{"):
                        continue
                    r = json.loads(line)
                    ok = r["err"] < 4e-3 and r["diff"] < 1e-3
                    failures += not ok
                    print(f"round {rnd} {name:10s} {r['shape']:>16s} {r['tflops']:8.1f} TFLOP/s err {r['err']:.1e} "
                          f"calc_diff {r['diff']:.1e}"
                          f"{'' if ok else '  WRONG'}", flush=True)
                    if ok:
                        results[name].setdefault(r["shape"], []).append(r["tflops"])
    first = next(iter(roots))
    print(f"\n{'shape':>16s} " + " ".join(f"{n + ' best/med':>20s} {'vs ' + first:>9s}" for n in roots))
    for shape in args.shapes.split(";"):
        cells = []
        base = max(results[first].get(shape, [0.0]))
        for name in roots:
            v = results[name].get(shape, [])
            best, med = (max(v), statistics.median(v)) if v else (0.0, 0.0)
            cells.append(f"{best:9.1f} / {med:8.1f} {best / base if base else 0.0:9.3f}")
        print(f"{shape:>16s} " + " ".join(cells))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
