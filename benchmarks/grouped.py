"""M-grouped (MoE) FP8 GEMMs: deep_gemm against torch's grouped GEMM and a per-expert cuBLASLt loop,
measured in the same run on the issue-4 shapes.

    python3 -m benchmarks.grouped --out benchmarks/results

Columns (TFLOP/s and bytes counted on valid rows only):
  deep_gemm          m_grouped_fp8_gemm_nt_contiguous / _masked, 1x128 A and 128x128 B block scales;
                     profiler kernel time (kernel "fp8_gemm_kernel"), L2 flushed before each call.
  scaled_grouped_mm  torch._scaled_grouped_mm, one FP32 scale per row of A and per row of B (a
                     different recipe, quantized from the same BF16 data); CUDA events, L2 flushed.
  scaled_mm_loop     one block-scaled cuBLASLt call per expert over its valid rows, called exactly as
                     benchmarks/peers.py does for the dense GEMM; CUDA events, L2 flushed.

Every column is checked on the valid rows of every expert against a float32 reference before it is
timed; one that fails is reported WRONG and not timed. Writes <date>_<card>_grouped.json and .md
into --out and prints the Markdown last.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import functools
import secrets
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `deep_gemm` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks import peers, run  # noqa: E402

M_MAX = 4096  # masked layout: rows allocated per expert, as in tests/test_gpu_grouped.py
CONTIGUOUS_ALIGN = 128  # deep_gemm.get_m_alignment_for_contiguous_layout(), without importing deep_gemm
TOL = 4e-3  # relative Frobenius error on one expert's valid rows: BF16 output rounding, as the GPU tests
KERNEL_NAME = "fp8_gemm_kernel"


@dataclass(frozen=True)
class GroupedShape:
    layout: str  # "contiguous" or "masked"
    groups: int
    rows: int  # valid rows of every expert
    n: int
    k: int
    published: dict = field(default_factory=dict, compare=False)  # DeepGEMM's TFLOP/s per card
    memory_bound: bool = False  # judged by bytes/s against the copy bandwidth

    @property
    def sizes(self) -> list[int]:
        return [self.rows] * self.groups

    @property
    def name(self) -> str:
        return f"{self.layout} {self.groups}x{self.rows} N={self.n} K={self.k}"


# DeepGEMM's published TFLOP/s for these shapes, per card, as issue 4 quotes them.
SHAPES: tuple[GroupedShape, ...] = (
    GroupedShape("contiguous", 4, 8192, 4096, 7168, {"H200": 1374, "H100": 1360}),
    GroupedShape("contiguous", 32, 256, 4096, 7168, {"H200": 990, "H100": 851}),
    GroupedShape("masked", 1, 1024, 4096, 7168, {"H200": 1062, "H100": 1005}),
    GroupedShape("masked", 4, 256, 7168, 2048, {"H200": 555, "H100": 520}),
    GroupedShape("masked", 32, 20, 4096, 7168, {}, memory_bound=True),
)

PEERS: tuple[str, ...] = ("deep_gemm", "scaled_grouped_mm", "scaled_mm_loop")
LABELS = {"deep_gemm": "deep_gemm", "scaled_grouped_mm": "torch._scaled_grouped_mm row-wise",
          "scaled_mm_loop": "cuBLASLt block, loop per expert"}
CHECKS = {
    "deep_gemm": f"float32 reference on its dequantized 1x128/128x128 inputs, tolerance {TOL:g}",
    "scaled_grouped_mm": f"float32 reference on its own row-wise quantized inputs, tolerance {TOL:g}",
    "scaled_mm_loop": f"same reference as deep_gemm (same inputs), tolerance {TOL:g}",
}


# --------------------------------------------------------------------------------------------------
# Layouts, accounting, report (pure, tested on CPU)


def contiguous_m_indices(sizes: Sequence[int], align: int = CONTIGUOUS_ALIGN) -> list[int]:
    """Expert id per row, each expert starting at a multiple of `align` rows, -1 on the padding."""
    ids: list[int] = []
    for g, rows in enumerate(sizes):
        ids += [g] * rows + [-1] * (-(-rows // align) * align - rows)
    return ids


def expert_row_ranges(m_indices: Sequence[int], groups: int) -> list[tuple[int, int]]:
    """(start, end) of every expert's rows in a contiguous layout; (0, 0) for an expert without rows."""
    ranges: list[tuple[int, int]] = [(0, 0)] * groups
    seen: set[int] = set()
    prev = None
    for i, g in enumerate(m_indices):
        if g != prev and 0 <= g < groups:
            if g in seen:
                raise ValueError(f"m_indices: expert {g}'s rows are not contiguous (again at row {i})")
            seen.add(g)
            ranges[g] = (i, i)
        if 0 <= g < groups:
            ranges[g] = (ranges[g][0], i + 1)
        prev = g
    return ranges


def offs_from_sizes(sizes: Sequence[int]) -> list[int]:
    """torch._scaled_grouped_mm's offs: the cumulative end row of each group in the packed rows."""
    out, total = [], 0
    for s in sizes:
        total += s
        out.append(total)
    return out


def masked_sizes(masked_m: Sequence[int], m_max: int) -> list[int]:
    """Valid rows per expert as the masked kernel reads them (clamped to [0, M_max])."""
    return [min(max(int(m), 0), m_max) for m in masked_m]


def grouped_flops(sizes: Sequence[int], n: int, k: int) -> int:
    return 2 * sum(sizes) * n * k


def grouped_bytes(sizes: Sequence[int], n: int, k: int) -> float:
    """A's valid rows and the weights of every expert that has rows (FP8), D's valid rows (BF16)."""
    return sum(run.gemm_bytes(m, n, k, 1, 2) for m in sizes if m)


def published_tflops(shape: GroupedShape, card_name: str) -> "tuple[str, float | None]":
    short = run.card_short_name(card_name)
    return short, shape.published.get(short)


def cell_metrics(sizes: Sequence[int], n: int, k: int, time_s: float, copy_bw_Bps: "float | None") -> dict:
    out = {"time_us": time_s * 1e6, "tflops": grouped_flops(sizes, n, k) / time_s / 1e12,
           "gbps": grouped_bytes(sizes, n, k) / time_s / 1e9}
    if copy_bw_Bps:
        out["copy_bw_frac"] = out["gbps"] * 1e9 / copy_bw_Bps
    return out


def _shape_cells(s: dict) -> list[str]:
    return [s["layout"], f"{s['groups']} x {s['rows']}", str(s["n"]), str(s["k"])]


def _table(shapes: Sequence[dict], names: Sequence[str], cell: Callable[[dict, dict], str]) -> list[str]:
    lines = ["| layout | experts x rows | N | K | " + " | ".join(LABELS.get(p, p) for p in names) + " |",
             "|---|---|---|---|" + "---|" * len(names)]
    for s in shapes:
        row = _shape_cells(s) + [cell(s, s.get("cells", {}).get(p) or {}) for p in names]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _bandwidth_text(s: dict, c: dict) -> str:
    if c.get("status") != "ok":
        return run._cell_text(c, "gbps")
    frac = c.get("copy_bw_frac")
    return f"{c['gbps'] / 1e3:.2f}" + (f" ({frac * 100:.0f}%)" if frac else "")


def render_markdown(result: dict) -> str:
    """The report; the main table (time, TFLOP/s, DeepGEMM's figure) comes last."""
    card = result.get("card", {})
    short = card.get("short_name", "?")
    names = result.get("peers", list(PEERS))
    shapes = result.get("shapes", [])
    copy = result.get("system", {}).get("copy_bw_GBps")
    v = result.get("versions", {})
    lines = [f"# deep_gemm M-grouped FP8 GEMM vs peers on {card.get('name', 'unknown GPU')}", "",
             f"{result.get('date', '?')} · torch {v.get('torch', '?')} · CUDA {v.get('cuda', '?')} · "
             f"driver {card.get('driver') or '?'} · {card.get('sm_count', '?')} SMs · "
             f"serial {card.get('serial') or '?'} · median of "
             f"{result.get('settings', {}).get('num_tests', '?')} runs, L2 flushed before each by "
             f"{run.flush_text(result.get('settings', {}).get('l2_flush_bytes'))} · measured copy "
             f"bandwidth {run._fmt(copy / 1e3, 2) + ' TB/s' if copy else 'n/a'} (read + write)", ""]
    lines.append(f"Rows: masked shapes have M_max = {result.get('settings', {}).get('m_max', M_MAX)} rows per "
                 "expert, every expert with the same valid rows; TFLOP/s and bytes count valid rows only. "
                 "Cells: n/a = not in this torch · WRONG = failed its check, so not timed · error = raised "
                 "(messages below).")
    lines.append("Timing: deep_gemm by profiler kernel time; peers by CUDA events around the call with every "
                 "launch queued before the start event (device time; the loop's Python cost is in the host "
                 "table). The peers get host-side row counts: the masked shapes' valid rows are packed into one "
                 "tensor for torch._scaled_grouped_mm (offs built on the host from masked_m) and the loop slices "
                 "each expert's rows, both outside the timed call; neither could be replayed in a CUDA graph "
                 "with new counts as deep_gemm's masked call can.")

    # One line per distinct message, with the shapes it applies to, so a missing API is said once.
    notes: dict[tuple[str, str], list[str]] = {}
    for s in shapes:
        for p, c in s.get("cells", {}).items():
            msgs = [f"{c['status']}: {c.get('error') or ''}" if c.get("status") not in (None, "ok") else c.get("api")]
            msgs += [f"tried first and rejected: {r}" for r in c.get("rejected_apis") or []]
            for m in filter(None, msgs):
                notes.setdefault((p, m), []).append(f"{s['layout']} {s['groups']} x {s['rows']}")
    if notes:
        lines += ["", "## APIs called and failures", ""]
        for (p, m), where in notes.items():
            where_txt = "all shapes" if len(where) == len(shapes) else ", ".join(where)
            lines.append(f"- {LABELS.get(p, p)} ({where_txt}): {m}".replace("|", "/").replace("\n", " "))

    lines += ["", "## Checks: worst relative error over experts (valid rows)", ""]
    lines += [f"- {LABELS.get(p, p)}: {result.get('checks', CHECKS).get(p) or '?'}" for p in names]
    lines += [""] + _table(shapes, names, lambda s, c: f"{c['rel_err']:.2e}" if c.get("rel_err") is not None else "—")

    if any(c.get("host_us") for s in shapes for c in s.get("cells", {}).values()):
        lines += ["", "## Host time per call (µs, GPU kept busy: the cost of enqueueing)", ""]
        lines += _table(shapes, names, lambda s, c: f"{c['host_us']:.1f}" if c.get("host_us") else "—")

    small = [s for s in shapes if s.get("memory_bound")]
    if small:
        lines += ["", "## Memory-bound shapes: TB/s (fraction of the measured copy bandwidth)", ""]
        lines += _table(small, names, _bandwidth_text)

    lines += ["", "## Time (µs) and TFLOP/s", ""]
    head = ["layout", "experts x rows", "N", "K"]
    for p in names:
        head += [f"{LABELS.get(p, p)} µs", "TFLOP/s"]
    head += [f"DeepGEMM {short} TFLOP/s", "deep_gemm / DeepGEMM"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for s in shapes:
        cells = s.get("cells", {})
        row = _shape_cells(s)
        for p in names:
            row += [run._cell_text(cells.get(p), "time_us", 1), run._cell_text(cells.get(p), "tflops")]
        pub, ratio = s.get("published_tflops"), s.get("ratio_to_published")
        row += [f"{pub:.0f}" if pub else "—", f"{ratio:.2f}" if ratio else "—"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Inputs and peers (GPU)


def per_row_cast(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[..., R, K] float -> (e4m3, float32 dequantization scale per row [..., R])."""
    sf = x.float().abs().amax(dim=-1).clamp(min=1e-4) / peers.FP8_MAX
    return (x.float() / sf[..., None]).to(peers._fp8_dtype()).contiguous(), sf.contiguous()


@contextlib.contextmanager
def _exact_fp32_matmul():
    # The reference must not silently run in TF32 (10-bit mantissa) if something switched it on.
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def check_experts(peer: str, outs: Sequence[torch.Tensor], refs: Sequence[torch.Tensor], tol: float = TOL) -> float:
    """Worst relative error over experts; PeerCheckFailed names the first expert over tol."""
    worst = 0.0
    for g, (out, ref) in enumerate(zip(outs, refs, strict=True)):
        if ref.numel():
            worst = max(worst, peers._check(f"{peer} (expert {g})", out, ref, tol))
    return worst


@dataclass
class Problem:
    """One shape's inputs: deep_gemm's layout, per-expert views of its valid rows, and the
    row-wise quantization of the same BF16 data for torch._scaled_grouped_mm."""

    shape: GroupedShape
    seed: int
    qa: torch.Tensor  # [M_sum, K] or [G, M_max, K]
    sfa: torch.Tensor  # row-major [..., K/128]
    qb: torch.Tensor  # [G, N, K]
    sfb: torch.Tensor  # [G, N/128, K/128]
    layout: torch.Tensor  # m_indices or masked_m, int32
    d: torch.Tensor
    rows: list  # per expert: (qa rows, sfa rows), views of qa / sfa
    out_rows: Callable  # d -> per-expert views of the valid output rows
    qa_row: torch.Tensor  # packed valid rows, row-wise FP8
    sa_row: torch.Tensor
    qb_row: torch.Tensor
    sb_row: torch.Tensor
    sizes: list  # valid rows per expert
    device: str
    ref_block: list = field(default_factory=list)


def build_problem(shape: GroupedShape, device="cuda", m_max: int = M_MAX) -> Problem:
    seed = secrets.randbits(31)  # fresh inputs every run, recorded so a failure can be replayed
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    G, n, k, kb = shape.groups, shape.n, shape.k, peers.ceil_div(shape.k, peers.SCALE_BLOCK)
    fp8 = peers._fp8_dtype()
    # Magnitudes vary per 128-wide block (peers.random_blocky) so a scale-layout mistake shows as an
    # O(1) error; BF16 first, as a model would hold the activations and weights.
    qb = torch.empty(G, n, k, dtype=fp8, device=device)
    sfb = torch.empty(G, peers.ceil_div(n, 128), kb, dtype=torch.float32, device=device)
    qb_row = torch.empty_like(qb)
    sb_row = torch.empty(G, n, dtype=torch.float32, device=device)
    for e in range(G):
        xb = peers.random_blocky(n, k, peers.SCALE_BLOCK, device, g).to(torch.bfloat16)
        qb[e], sfb[e] = peers.per_block_cast(xb)
        qb_row[e], sb_row[e] = per_row_cast(xb)
        del xb

    valid_bf16 = []
    sizes = masked_sizes(shape.sizes, m_max) if shape.layout == "masked" else list(shape.sizes)
    if shape.layout == "contiguous":
        ids = contiguous_m_indices(shape.sizes)
        ranges = expert_row_ranges(ids, G)
        sizes = [e - s for s, e in ranges]  # the peers' offs come from m_indices
        xa = peers.random_blocky(len(ids), k, 1, device, g).to(torch.bfloat16)
        qa, sfa = peers.per_token_cast(xa)
        valid_bf16 = [xa[s:e] for s, e in ranges]
        rows = [(qa[s:e], sfa[s:e]) for s, e in ranges]
        layout = torch.tensor(ids, dtype=torch.int32, device=device)
        d = torch.full((len(ids), n), float("nan"), dtype=torch.bfloat16, device=device)

        def out_rows(out):
            return [out[s:e] for s, e in ranges]
    else:
        qa = torch.empty(G, m_max, k, dtype=fp8, device=device)
        sfa = torch.empty(G, m_max, kb, dtype=torch.float32, device=device)
        for e in range(G):  # one expert at a time: all of A in float32 would take 3.7 GB at 32 experts
            xa = peers.random_blocky(m_max, k, 1, device, g).to(torch.bfloat16)
            qa[e], sfa[e] = peers.per_token_cast(xa)
            valid_bf16.append(xa[: sizes[e]].clone())
            del xa
        rows = [(qa[e, :m], sfa[e, :m]) for e, m in enumerate(sizes)]
        layout = torch.tensor(shape.sizes, dtype=torch.int32, device=device)
        d = torch.full((G, m_max, n), float("nan"), dtype=torch.bfloat16, device=device)

        def out_rows(out):
            return [out[e, :m] for e, m in enumerate(sizes)]

    qa_row, sa_row = per_row_cast(torch.cat(valid_bf16))
    del valid_bf16
    p = Problem(shape, seed, qa, sfa, qb, sfb, layout, d, rows, out_rows, qa_row, sa_row, qb_row, sb_row,
                sizes, str(device))
    with _exact_fp32_matmul():
        p.ref_block = [peers.reference_block_fp8(a, s, qb[e], sfb[e]) for e, (a, s) in enumerate(rows)]
    return p


def make_deep_gemm(p: Problem):
    try:
        import deep_gemm
    except Exception as exc:
        raise peers.PeerUnavailable(f"import deep_gemm failed: {peers._err_str(exc)}") from exc
    # sfa already in the layout the kernel reads, as a caller producing it that way would pass it.
    a = (p.qa, deep_gemm.get_mn_major_tma_aligned_tensor(p.sfa))
    b = (p.qb, p.sfb)
    if p.shape.layout == "contiguous":
        def fn():
            deep_gemm.m_grouped_fp8_gemm_nt_contiguous(a, b, p.d, p.layout)
        api = "deep_gemm.m_grouped_fp8_gemm_nt_contiguous"
    else:
        def fn():
            deep_gemm.m_grouped_fp8_gemm_nt_masked(a, b, p.d, p.layout, p.shape.rows)
        api = f"deep_gemm.m_grouped_fp8_gemm_nt_masked (expected_m={p.shape.rows})"
    _, first = peers._first_call(fn, p.device)  # d starts as NaN: an unwritten valid row fails the check
    err = check_experts("deep_gemm", p.out_rows(p.d), p.ref_block)
    return fn, {"api": api, "rel_err": err, "first_call_s": first, "launches": 1}


def rowwise_grouped_candidates(a, scale_a, b, scale_b, offs) -> list[tuple[str, Callable]]:
    """torch's grouped row-wise FP8 GEMM, 2D A [M, K] x 3D B [G, N, K]: a[offs[g-1]:offs[g]] @ b[g]^T,
    scaled by scale_a [M] per row and scale_b [G, N] per output column. B is passed as its
    [G, K, N] column-major transpose view, the layout the kernel requires."""
    bt = b.transpose(-2, -1)
    cands: list[tuple[str, Callable]] = []
    if hasattr(torch, "_scaled_grouped_mm"):
        def private():
            return torch._scaled_grouped_mm(a, bt, scale_a, scale_b, offs=offs, out_dtype=torch.bfloat16)

        cands.append(("torch._scaled_grouped_mm(a, b^T, scale_a[M], scale_b[G,N], offs=offs)", private))
    F = torch.nn.functional
    st = getattr(F, "ScalingType", None)
    if hasattr(F, "scaled_grouped_mm") and st is not None and hasattr(st, "RowWise"):
        def functional():
            return F.scaled_grouped_mm(a, bt, scale_a, st.RowWise, scale_b, st.RowWise, offs=offs,
                                       output_dtype=torch.bfloat16)

        cands.append(("torch.nn.functional.scaled_grouped_mm(RowWise, RowWise, offs=offs)", functional))
    return cands


def make_scaled_grouped_mm(p: Problem):
    sizes = p.sizes
    offs = torch.tensor(offs_from_sizes(sizes), dtype=torch.int32, device=p.device)
    cands = rowwise_grouped_candidates(p.qa_row, p.sa_row, p.qb_row, p.sb_row, offs)
    if not cands:
        raise peers.PeerUnavailable(f"torch {torch.__version__} has no torch._scaled_grouped_mm")
    with _exact_fp32_matmul():
        ref, start = [], 0
        for e, m in enumerate(sizes):
            a = p.qa_row[start:start + m].float() * p.sa_row[start:start + m, None]
            ref.append(a @ (p.qb_row[e].float() * p.sb_row[e, :, None]).t())
            start += m
    api, fn, err, first, rejected = peers.first_correct(
        cands, lambda out: check_experts("scaled_grouped_mm", out.split(sizes), ref), p.device,
        missing="no grouped row-wise API", raised=RuntimeError)
    del ref
    info = {"api": api, "rel_err": err, "first_call_s": first, "launches": 1}
    if rejected:
        info["rejected_apis"] = rejected
    return fn, info


def make_scaled_mm_loop(p: Problem):
    per_expert = [peers.block_scaled_mm_candidates(a, s, p.qb[e], p.sfb[e]) for e, (a, s) in enumerate(p.rows)
                  if a.shape[0]]
    if not per_expert or not per_expert[0]:
        raise peers.PeerUnavailable(f"torch {torch.__version__} has neither F.scaled_mm nor torch._scaled_mm")
    experts = [e for e, (a, _) in enumerate(p.rows) if a.shape[0]]
    refs = [p.ref_block[e] for e in experts]
    loops = []
    for i, (api, _) in enumerate(per_expert[0]):
        calls = [c[i][1] for c in per_expert]

        def loop(calls=calls):
            return [c() for c in calls]

        loops.append((f"{api}, one call per expert", loop))
    api, fn, err, first, rejected = peers.first_correct(
        loops, lambda outs: check_experts("scaled_mm_loop", outs, refs), p.device,
        missing="no block-scaled API", raised=RuntimeError)
    info = {"api": api, "rel_err": err, "first_call_s": first, "launches": len(experts)}
    if rejected:
        info["rejected_apis"] = rejected
    return fn, info


FACTORIES: dict[str, Callable] = {"deep_gemm": make_deep_gemm, "scaled_grouped_mm": make_scaled_grouped_mm,
                                  "scaled_mm_loop": make_scaled_mm_loop}


def time_cell(peer: str, fn, launches: int, num_warmups: int, num_tests: int) -> dict:
    if peer == "deep_gemm":
        return run.time_fn(fn, "kineto", num_warmups, num_tests, KERNEL_NAME)
    bench = run._load_bench()
    # A lead long enough for the host to queue every launch of the call before its start event, so
    # the figure is device time like deep_gemm's and not Python launch time (measured apart).
    return bench.bench(fn, num_warmups=num_warmups, num_tests=num_tests, flush_l2=True,
                       host_lead_cycles=bench.HOST_LEAD_CYCLES * max(1, launches))


def run_cell(peer: str, p: Problem, *, num_warmups: int, num_tests: int, copy_bw: "float | None",
             host: bool) -> dict:
    """One (shape, peer) measurement; never raises (except KeyboardInterrupt)."""
    cell: dict = {"status": None, "method": "kineto" if peer == "deep_gemm" else "events", "error": None}
    with run.filing_errors(cell):
        fn, info = FACTORIES[peer](p)
        cell.update(info)
        stats = time_cell(peer, fn, info["launches"], num_warmups, num_tests)
        cell["time_us_mean"], cell["time_us_min"] = stats["mean"] * 1e6, stats["min"] * 1e6
        cell.update(cell_metrics(p.sizes, p.shape.n, p.shape.k, stats["median"], copy_bw))
        cell["status"] = "ok"
        if host:
            try:
                h = run.host_overhead(fn, n=200, chunk=10)
                cell["host_us"], cell["host_gpu_kept_busy"] = h["median_us"], h["gpu_kept_busy"]
            except Exception as exc:
                cell["host_error"] = run._err_str(exc)
    return cell


def run_benchmark(shapes: Sequence[GroupedShape], names: Sequence[str], *, num_warmups: int = 5,
                  num_tests: int = 30, host: bool = True, log=functools.partial(print, flush=True)) -> dict:
    now = _dt.datetime.now()
    card = run.card_info()
    result: dict = {
        "schema": "deep_gemm.bench_grouped/1",
        "date": now.strftime("%Y-%m-%d"),
        "timestamp": now.isoformat(timespec="seconds"),
        "card": card,
        "versions": run._versions(),
        "peers": list(names),
        "peer_labels": {p: LABELS.get(p, p) for p in names},
        "checks": {p: CHECKS.get(p) for p in names},
        "settings": {"num_warmups": num_warmups, "num_tests": num_tests, "m_max": M_MAX, "tolerance": TOL,
                     "kernel_name": KERNEL_NAME, "statistic": "median",
                     "l2_flush_bytes": run.recorded_flush_bytes()},
        "system": {},
        "shapes": [],
    }
    try:
        result["system"].update(run.measure_copy_bandwidth())
    except Exception as exc:
        result["system"]["copy_bw_error"] = run._err_str(exc)
    copy_bw = result["system"].get("copy_bw_GBps", 0) * 1e9 or None
    log(f"[grouped] {card['name']}: copy {result['system'].get('copy_bw_GBps', float('nan')):.0f} GB/s")
    for shape in shapes:
        t0 = time.perf_counter()
        rec = asdict(shape)
        rec.pop("published")
        short, pub = published_tflops(shape, card["name"])
        rec.update({"flops": grouped_flops(shape.sizes, shape.n, shape.k),
                    "bytes": grouped_bytes(shape.sizes, shape.n, shape.k), "published_card": short,
                    "published_tflops": pub, "cells": {}})
        try:
            problem = build_problem(shape)
            rec["seed"] = problem.seed
            for p in names:
                rec["cells"][p] = run_cell(p, problem, num_warmups=num_warmups, num_tests=num_tests,
                                           copy_bw=copy_bw, host=host)
                run._free_memory()
        except Exception as exc:  # the inputs themselves failed (e.g. out of memory): every cell says so
            for p in names:
                rec["cells"].setdefault(p, {"status": "error", "error": f"inputs: {run._err_str(exc)}"})
        problem = None
        run._free_memory()
        dg = rec["cells"].get("deep_gemm", {})
        if pub and dg.get("status") == "ok":
            rec["ratio_to_published"] = dg["tflops"] / pub
        result["shapes"].append(rec)
        summary = "  ".join(f"{p}={c['tflops']:.0f}" if c["status"] == "ok" else f"{p}={c['status']}"
                            for p, c in rec["cells"].items())
        log(f"[grouped] {shape.name} ({time.perf_counter() - t0:.1f} s) TFLOP/s: {summary}")
    return result


# --------------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.grouped", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(run.DEFAULT_RESULTS_DIR), help="results folder (default benchmarks/results)")
    ap.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated subset of {','.join(PEERS)}")
    ap.add_argument("--num-tests", type=int, default=30)
    ap.add_argument("--num-warmups", type=int, default=5)
    ap.add_argument("--no-host", action="store_true", help="skip the host time per call")
    ap.add_argument("--l2-flush-bytes", help="bytes zeroed before each timed call (default 8e9, as DeepGEMM's harness)")
    return ap


def main(argv: "Sequence[str] | None" = None) -> int:
    args = build_parser().parse_args(argv)
    names = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in names if p not in PEERS]
    if unknown or not names:
        print(f"error: unknown peer(s) {unknown}; known: {', '.join(PEERS)}", file=sys.stderr)
        return 2
    try:
        run.apply_flush_bytes(args.l2_flush_bytes)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("error: the benchmark needs a CUDA GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    result = run_benchmark(SHAPES, names, num_warmups=args.num_warmups, num_tests=args.num_tests,
                           host=not args.no_host)
    result["settings"]["wall_s"] = round(time.perf_counter() - t0, 1)
    stem = run.output_stem(args.out, result["date"], result["card"]["short_name"] + "_grouped")
    run.save_report(result, stem, "grouped", render_markdown)
    print()
    print(render_markdown(result), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
