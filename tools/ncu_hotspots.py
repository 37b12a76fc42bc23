"""Per-SASS-instruction warp-stall samples of one fp8_gemm_nt launch, from Nsight Compute.

    python3 tools/ncu_hotspots.py 4096,4096,7168 [--top 40] [--out DIR]
    python3 tools/ncu_hotspots.py 4096,7168,576@tma:256x128x3:r8   (a forced config, see ncu_profile.py)

Profiles the second call (tools/ncu_profile.py) with source counters at the card's own clocks,
then prints the instructions with the most stall samples and their main stall reasons, plus the
kernel's speed-of-light summary."""
from __future__ import annotations

import argparse
import csv
import io
import os
import re
import subprocess
import sys


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("shape")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp"))
    args = ap.parse_args()
    rep = os.path.join(args.out, "hotspots_" + re.sub(r"[^0-9A-Za-z]+", "_", args.shape.replace(",", "x")))
    subprocess.run(["ncu", "-f", "-o", rep, "--profile-from-start", "off", "-k", "regex:fp8_gemm", "-c", "1",
                    "--clock-control", "none", "--import-source", "no",
                    "--section", "SourceCounters", "--section", "WarpStateStats", "--section", "SpeedOfLight",
                    "--section", "ComputeWorkloadAnalysis", "--section", "MemoryWorkloadAnalysis",
                    sys.executable, os.path.join(os.path.dirname(__file__), "ncu_profile.py"), args.shape],
                   check=True)
    print(subprocess.run(["ncu", "-i", rep + ".ncu-rep", "--page", "details"], capture_output=True, text=True).stdout)
    src = subprocess.run(["ncu", "-i", rep + ".ncu-rep", "--page", "source", "--csv", "--print-source", "sass"],
                         capture_output=True, text=True).stdout
    with open(rep + "_source.csv", "w") as f:
        f.write(src)
    rows = list(csv.reader(io.StringIO(src)))
    head_at = next(i for i, r in enumerate(rows) if any("Source" == c for c in r))
    header, body = rows[head_at], [r for r in rows[head_at + 1:] if len(r) == len(rows[head_at])]
    col = {name: i for i, name in enumerate(header)}
    samples = next(c for c in header if c.startswith("Warp Stall Sampling (All"))
    reasons = [c for c in header if c.startswith("stall_") or c.startswith("smsp__pcsamp_warps_issue_stalled")]

    def num(r, c):
        try:
            return float(r[col[c]].replace(",", ""))
        except (ValueError, KeyError):
            return 0.0

    total = sum(num(r, samples) for r in body) or 1.0
    print(f"{len(body)} SASS lines, {total:.0f} stall samples; columns: {', '.join(reasons[:40])}")
    order = sorted(range(len(body)), key=lambda i: -num(body[i], samples))
    for i in order[:args.top]:
        r = body[i]
        top = sorted(((num(r, c), c) for c in reasons), reverse=True)[:3]
        why = ", ".join(f"{c.replace('smsp__pcsamp_warps_issue_stalled_', '')} {v:.0f}" for v, c in top if v)
        print(f"{100 * num(r, samples) / total:5.1f}%  #{i:<5} {r[col['Source']][:70]:70s} {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
