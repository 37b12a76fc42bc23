"""Scores the config model of deep_gemm/heuristics/fp8_gemm.py against measured sweeps, and grid-
searches some of its constants. Runs on the CPU.

    python3 tools/fit_model.py benchmarks/results/2026-11-28_H200_s4_sweep_wide.json ... \\
        [--grid "SMEM_BYTES_PER_CYCLE=112,120;SERIAL_EFFICIENCY_LOSS=1.15,1.2"]

For each shape, the "pick" is the measured config that the model's ranking (ties broken as the
heuristic breaks them) puts first; its regret is how much slower it ran than the fastest measured
config of that shape. A model is good when the mean regret is small (its absolute time
predictions matter less: only the order is used).
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import re
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deep_gemm.heuristics import fp8_gemm as heur  # noqa: E402
from deep_gemm.kernels.fp8_gemm import Fp8GemmConfig  # noqa: E402

NAME = re.compile(r"fp8_gemm_m(\d+)_n(\d+)_s(\d+)_wg(\d+)_p(\d)_(bf16|f32)_e(\d)(_pp)?(?:_g(\d))?(?:_k(\d))?(?:_u(\d))?(?:_t(\d+))?(_tb)?$")


def parse(name: str, raster: int) -> Fp8GemmConfig:
    m = NAME.match(name)
    if not m:
        raise ValueError(f"not an FP8 GEMM kernel name: {name}")
    bm, bn, st, wg, pair, out, epi, pp, kind, split, unroll, tail, tail_boxes = m.groups()
    cfg = Fp8GemmConfig(int(bm), int(bn), int(st), int(wg), int(pair), out == "f32", int(epi), pp is not None,
                        int(kind or 0), int(split or 1), raster_group=raster, k_tail=int(tail or 0),
                        tail_boxes=tail_boxes is not None)
    # A name without _u is a rolled main loop (every serial kernel before session 8). The unroll
    # is spelled out only where it differs from the default, so configs compare equal to the
    # model's candidates.
    return cfg if cfg.k_unroll == int(unroll or 1) else dataclasses.replace(cfg, unroll=int(unroll or 1))


def tile(name: str) -> str:
    """A kernel name without its unroll: the model ranks tiles, and sweeps from before the main
    loop was unrolled still rank the same tiles."""
    return re.sub(r"_u\d(?=(_t\d+)?(_tb)?$)", "", name)


def load(paths):
    """{shape: {config: best measured us}} over all files (a config measured twice keeps its best)."""
    by_shape = defaultdict(dict)
    for path in paths:
        for row in json.load(open(path))["rows"]:
            if "us" not in row:
                continue
            cfg = parse(row["config"], row.get("raster", 8))
            # (m, n, k, kind, groups): grouped rows give the kind and, for masked, the expert count
            shape = tuple(row["shape"]) + (row.get("kind", 0), row.get("groups", 1))
            by_shape[shape][cfg] = min(row["us"], by_shape[shape].get(cfg, math.inf))
    return by_shape


def regrets(by_shape):
    out = {}
    for shape, measured in by_shape.items():
        # The model's own ranking (its tie-breaks included); measured configs it would never
        # consider rank last.
        heur.ranked_configs.cache_clear()
        order = {}
        m, n, k, kind, groups = shape
        for i, c in enumerate(heur.ranked_configs(m, n, k, False, 0, 132, kind, groups)):
            order.setdefault(tile(c.kernel_name()), i)
        pick = min(measured, key=lambda c: order.get(tile(c.kernel_name()), len(order)))
        out[shape] = (pick, measured[pick] / min(measured.values()) - 1)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("sweeps", nargs="+")
    ap.add_argument("--grid", default="", help="NAME=v1,v2,...;NAME=... (module constants of the model)")
    args = ap.parse_args()
    by_shape = load(args.sweeps)
    axes = [(k, [float(v) for v in vals.split(",")]) for k, vals in
            (item.split("=") for item in args.grid.split(";") if item)]
    results = []
    for values in itertools.product(*(vals for _, vals in axes)):
        for (name, _), v in zip(axes, values):
            setattr(heur, name, v)
        r = regrets(by_shape)
        results.append((sum(x for _, x in r.values()) / len(r), max(x for _, x in r.values()), values))
    results.sort()
    for mean, worst, values in results[:10]:
        print(f"mean regret {mean:6.2%} worst {worst:6.2%}  " +
              " ".join(f"{name}={v}" for (name, _), v in zip(axes, values)))
    best = results[0][2]
    for (name, _), v in zip(axes, best):
        setattr(heur, name, v)
    print("per shape, with the best constants:")
    for shape, (pick, regret) in sorted(regrets(by_shape).items()):
        fastest = min(by_shape[shape], key=by_shape[shape].get)
        print(f"  {shape}: pick {pick.kernel_name()} +{regret:.1%}  (fastest {fastest.kernel_name()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
