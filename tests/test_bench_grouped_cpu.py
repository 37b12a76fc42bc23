"""CPU tests of benchmarks/grouped.py: layouts and offs, accounting, the report, and each column's
setup and check run on CPU tensors (torch's FP8 GEMMs emulated where the CPU build has none)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import grouped, peers, run  # noqa: E402

SMALL_MASKED = grouped.GroupedShape("masked", 3, 20, 256, 512)
SMALL_CONTIGUOUS = grouped.GroupedShape("contiguous", 2, 100, 256, 384)  # 100 rows: padded to 128


pytestmark = pytest.mark.usefixtures("quiet_warnings")


# ---- layouts and offs


def test_issue_4_shapes():
    s = {(x.layout, x.groups, x.rows, x.n, x.k): x for x in grouped.SHAPES}
    assert set(s) == {("contiguous", 4, 8192, 4096, 7168), ("contiguous", 32, 256, 4096, 7168),
                      ("masked", 1, 1024, 4096, 7168), ("masked", 4, 256, 7168, 2048), ("masked", 32, 20, 4096, 7168)}
    assert [x for x in grouped.SHAPES if x.memory_bound] == [s[("masked", 32, 20, 4096, 7168)]]


def test_contiguous_m_indices_ranges_and_offs():
    ids = grouped.contiguous_m_indices([3, 0, 129], align=128)
    assert len(ids) == 128 + 256
    assert ids[:4] == [0, 0, 0, -1] and ids[128:130] == [2, 2] and ids[256] == 2 and ids[257] == -1
    ranges = grouped.expert_row_ranges(ids, 3)
    assert ranges == [(0, 3), (0, 0), (128, 257)]
    assert grouped.offs_from_sizes([e - s for s, e in ranges]) == [3, 3, 132]


def test_expert_row_ranges_ignores_out_of_range_ids_and_rejects_split_experts():
    assert grouped.expert_row_ranges([-1, 1, 1, 7, -1, 0], 2) == [(5, 6), (1, 3)]
    with pytest.raises(ValueError, match="expert 0"):
        grouped.expert_row_ranges([0, 0, 1, 0], 2)


def test_offs_from_masked_m_clamps_like_the_kernel():
    sizes = grouped.masked_sizes([20, -3, 5000, 0, 7], 4096)
    assert sizes == [20, 0, 4096, 0, 7]
    assert grouped.offs_from_sizes(sizes) == [20, 20, 4116, 4116, 4123]


# ---- accounting


def test_flops_bytes_and_bandwidth_match_the_recorded_h200_figure():
    sizes = [20] * 32
    assert grouped.grouped_flops(sizes, 4096, 7168) == 2 * 640 * 4096 * 7168
    assert grouped.grouped_bytes(sizes, 4096, 7168) == 640 * 7168 + 32 * 4096 * 7168 + 640 * 4096 * 2
    assert grouped.grouped_bytes([0, 5], 8, 128) == run.gemm_bytes(5, 8, 128)  # no rows: weights not read
    # NOTES.md: 270.2 us = 3.51 TB/s = 82% of 4.29 TB/s
    c = grouped.cell_metrics(sizes, 4096, 7168, 270.2e-6, 4.29e12)
    assert c["gbps"] / 1e3 == pytest.approx(3.51, abs=0.01)
    assert c["copy_bw_frac"] == pytest.approx(0.82, abs=0.01)
    assert c["tflops"] == pytest.approx(139, abs=1)


@pytest.mark.parametrize("name, short, figure", [("NVIDIA H100 80GB HBM3", "H100", 1360), ("NVIDIA H200", "H200", 1374),
                                                 ("NVIDIA A100-SXM4-80GB", "A100", None)])
def test_published_figure_lookup(name, short, figure):
    assert grouped.published_tflops(grouped.SHAPES[0], name) == (short, figure)
    assert grouped.published_tflops(grouped.SHAPES[-1], name) == (short, None)  # memory-bound: TB/s instead


# ---- report


def _synthetic_result():
    shapes = []
    for shape, times in zip(grouped.SHAPES, [1933.7, 496.5, 70.4, 48.2, 270.2]):
        cells = {"deep_gemm": {"status": "ok", "rel_err": 1.1e-3, "host_us": 9.0, "api": "deep_gemm.m_grouped",
                               **grouped.cell_metrics(shape.sizes, shape.n, shape.k, times * 1e-6, 4.29e12)},
                 "scaled_grouped_mm": {"status": "error", "error": "TypeError: bad | arg"},
                 "scaled_mm_loop": {"status": "failed", "error": "rel err 0.5"}}
        if shape.groups == 1:
            cells["scaled_grouped_mm"] = {"status": "unavailable", "error": "no API"}
        rec = {"layout": shape.layout, "groups": shape.groups, "rows": shape.rows, "n": shape.n, "k": shape.k,
               "memory_bound": shape.memory_bound, "published_tflops": shape.published.get("H200"), "cells": cells}
        if rec["published_tflops"]:
            rec["ratio_to_published"] = cells["deep_gemm"]["tflops"] / rec["published_tflops"]
        shapes.append(rec)
    return {"date": "2026-11-28", "card": {"name": "NVIDIA H200", "short_name": "H200", "sm_count": 132},
            "versions": {"torch": "2.11.0", "cuda": "13.0"}, "peers": list(grouped.PEERS),
            "settings": {"num_tests": 30, "m_max": 4096}, "system": {"copy_bw_GBps": 4290.0}, "shapes": shapes}


def test_markdown_report_ends_with_the_main_table(tmp_path):
    res = _synthetic_result()
    md = grouped.render_markdown(res)
    lines = md.rstrip("\n").splitlines()
    header = next(i for i, line in enumerate(lines) if "DeepGEMM H200 TFLOP/s" in line)
    assert lines[header - 2].startswith("## Time")
    table = lines[header:]
    assert len(table) == 2 + len(grouped.SHAPES) and all(line.startswith("| ") or line.startswith("|---")
                                                          for line in table)  # the table is last
    first = [c.strip() for c in table[2].strip("|").split("|")]
    assert first[:4] == ["contiguous", "4 x 8192", "4096", "7168"]
    tflops = grouped.grouped_flops([8192] * 4, 4096, 7168) / 1933.7e-6 / 1e12
    assert first[4] == "1933.7" and first[5] == f"{tflops:.0f}"
    assert first[6:10] == ["error", "error", "WRONG", "WRONG"] and first[-2:] == ["1374", "0.72"]
    assert "n/a" in table[4]  # masked 1 x 1024
    assert table[-1].split("|")[-3].strip() == "—"  # memory-bound row: no published TFLOP/s
    assert "3.51 (82%)" in md
    assert "TypeError: bad / arg" in md  # a | in a message must not break a table
    assert "float32 reference on its own row-wise quantized inputs" in md
    # JSON through the dense benchmark's writer
    import json
    data = json.loads(run.write_json(res, tmp_path / "r.json").read_text())
    assert data["shapes"][0]["cells"]["scaled_grouped_mm"]["status"] == "error"


def test_markdown_tolerates_an_empty_result():
    assert grouped.render_markdown({"shapes": []}).startswith("# ")


# ---- quantizer and torch's grouped call


def test_per_row_cast_round_trip():
    x = torch.randn(2, 50, 300) * torch.exp2(torch.randint(-4, 5, (2, 50, 1)).float())
    q, s = grouped.per_row_cast(x.to(torch.bfloat16))
    assert q.dtype == torch.float8_e4m3fn and s.shape == (2, 50) and s.dtype == torch.float32
    assert q.float().abs().amax() <= peers.FP8_MAX
    assert peers.rel_fro_error(q.float() * s[..., None], x) < 0.05


@pytest.mark.skipif(not hasattr(torch, "_scaled_grouped_mm"), reason="this torch has no _scaled_grouped_mm")
def test_rowwise_call_passes_this_torchs_shape_and_stride_checks():
    # Meta tensors run torch's own argument checks (the ones its CUDA kernel makes) with no GPU.
    G, N, K, sizes = 3, 256, 512, [20, 0, 44]
    a, sa = torch.empty(64, K, dtype=torch.float8_e4m3fn, device="meta"), torch.empty(64, device="meta")
    b, sb = torch.empty(G, N, K, dtype=torch.float8_e4m3fn, device="meta"), torch.empty(G, N, device="meta")
    offs = torch.tensor(grouped.offs_from_sizes(sizes), dtype=torch.int32).to("meta")
    api, fn = grouped.rowwise_grouped_candidates(a, sa, b, sb, offs)[0]
    assert api.startswith("torch._scaled_grouped_mm")
    out = fn()
    assert out.shape == (64, N) and out.dtype == torch.bfloat16


# ---- each column on CPU tensors


def _emulated_scaled_grouped_mm(a, bt, scale_a, scale_b, offs=None, out_dtype=None, **_):
    outs, start = [], 0
    for g, end in enumerate(offs.tolist()):
        outs.append((a[start:end].float() * scale_a[start:end, None]) @ (bt[g].float() * scale_b[g][None, :]))
        start = end
    return torch.cat(outs).to(out_dtype)


def _emulated_block_candidates(a, sfa, b, sfb):
    return [("emulated block", lambda: peers.reference_block_fp8(a, sfa, b, sfb).to(torch.bfloat16))]


@pytest.mark.parametrize("shape", [SMALL_MASKED, SMALL_CONTIGUOUS], ids=["masked", "contiguous"])
def test_problem_layout_on_cpu(shape):
    p = grouped.build_problem(shape, "cpu", m_max=64)
    assert p.sizes == [shape.rows] * shape.groups
    assert p.qa_row.shape == (sum(p.sizes), shape.k) and p.sa_row.shape == (sum(p.sizes),)
    assert p.qb_row.shape == (shape.groups, shape.n, shape.k) and p.sb_row.shape == (shape.groups, shape.n)
    assert [r[0].shape[0] for r in p.rows] == p.sizes and len(p.ref_block) == shape.groups
    assert not torch.isnan(p.ref_block[0]).any() and p.ref_block[0].abs().min() >= 0
    assert (p.qa.float() != 0).float().mean() > 0.9  # random, not zeros
    if shape.layout == "contiguous":
        assert p.layout.tolist() == grouped.contiguous_m_indices(p.sizes)
        assert p.d.shape == (256, shape.n)
    else:
        assert p.layout.tolist() == p.sizes and p.d.shape == (shape.groups, 64, shape.n)
    # the same BF16 data behind both recipes: their dequantized products agree to FP8 accuracy
    ref_row = (p.qa_row[: p.sizes[0]].float() * p.sa_row[: p.sizes[0], None]) @ \
        (p.qb_row[0].float() * p.sb_row[0, :, None]).t()
    assert peers.rel_fro_error(ref_row, p.ref_block[0]) < 0.1


@pytest.mark.parametrize("shape", [SMALL_MASKED, SMALL_CONTIGUOUS], ids=["masked", "contiguous"])
def test_deep_gemm_column_on_cpu_fallback(shape):
    try:
        import deep_gemm  # noqa: F401
    except Exception as exc:
        pytest.skip(f"deep_gemm not importable: {exc}")
    p = grouped.build_problem(shape, "cpu", m_max=64)
    fn, info = grouped.make_deep_gemm(p)
    assert info["rel_err"] < grouped.TOL and info["launches"] == 1


@pytest.mark.parametrize("shape", [SMALL_MASKED, SMALL_CONTIGUOUS], ids=["masked", "contiguous"])
def test_scaled_grouped_mm_column_with_an_emulated_op(shape, monkeypatch):
    p = grouped.build_problem(shape, "cpu", m_max=64)
    monkeypatch.setattr(torch, "_scaled_grouped_mm", _emulated_scaled_grouped_mm, raising=False)
    fn, info = grouped.make_scaled_grouped_mm(p)
    assert info["rel_err"] < grouped.TOL and info["api"].startswith("torch._scaled_grouped_mm")

    def ignores_scale_b(a, bt, scale_a, scale_b, **kw):
        return _emulated_scaled_grouped_mm(a, bt, scale_a, torch.ones_like(scale_b), **kw)

    monkeypatch.setattr(torch, "_scaled_grouped_mm", ignores_scale_b)
    with pytest.raises(peers.PeerCheckFailed, match="expert 0"):
        grouped.make_scaled_grouped_mm(p)


def test_scaled_grouped_mm_column_keeps_the_error(monkeypatch):
    p = grouped.build_problem(SMALL_MASKED, "cpu", m_max=64)

    def old_signature(*args, **kwargs):
        raise TypeError("_scaled_grouped_mm() got an unexpected keyword argument 'offs'")

    monkeypatch.setattr(torch, "_scaled_grouped_mm", old_signature, raising=False)
    monkeypatch.delattr(torch.nn.functional, "scaled_grouped_mm", raising=False)
    cell = grouped.run_cell("scaled_grouped_mm", p, num_warmups=1, num_tests=1, copy_bw=None, host=False)
    assert cell["status"] == "error" and "unexpected keyword argument 'offs'" in cell["error"]
    monkeypatch.delattr(torch, "_scaled_grouped_mm")
    cell = grouped.run_cell("scaled_grouped_mm", p, num_warmups=1, num_tests=1, copy_bw=None, host=False)
    assert cell["status"] == "unavailable"


@pytest.mark.parametrize("shape", [SMALL_MASKED, SMALL_CONTIGUOUS], ids=["masked", "contiguous"])
def test_loop_column_with_emulated_block_calls(shape, monkeypatch):
    p = grouped.build_problem(shape, "cpu", m_max=64)
    monkeypatch.setattr(peers, "block_scaled_mm_candidates", _emulated_block_candidates)
    fn, info = grouped.make_scaled_mm_loop(p)
    assert info["rel_err"] < grouped.TOL and info["launches"] == shape.groups
    assert len(fn()) == shape.groups

    def last_experts_weights(a, sfa, b, sfb):  # a layout mistake: every expert gets the last one's B
        return _emulated_block_candidates(a, sfa, p.qb[-1], p.sfb[-1])

    monkeypatch.setattr(peers, "block_scaled_mm_candidates", last_experts_weights)
    cell = grouped.run_cell("scaled_mm_loop", p, num_warmups=1, num_tests=1, copy_bw=None, host=False)
    assert cell["status"] == "failed" and "expert 0" in cell["error"]


def test_run_benchmark_assembles_a_result_on_cpu(monkeypatch, tmp_path):
    # Everything but the GPU timers and card queries, on CPU tensors.
    try:
        import deep_gemm  # noqa: F401
    except Exception as exc:
        pytest.skip(f"deep_gemm not importable: {exc}")
    monkeypatch.setattr(run, "card_info", lambda: {"name": "NVIDIA H100 80GB HBM3", "short_name": "H100"})
    monkeypatch.setattr(run, "measure_copy_bandwidth", lambda: {"copy_bw_GBps": 3000.0})
    monkeypatch.setattr(grouped, "build_problem", lambda shape: BUILD(shape, "cpu", m_max=64))
    monkeypatch.setattr(grouped, "time_cell", lambda peer, fn, launches, w, t: {"median": 1e-4, "mean": 1e-4,
                                                                               "min": 1e-4})
    monkeypatch.setattr(torch, "_scaled_grouped_mm", _emulated_scaled_grouped_mm, raising=False)
    monkeypatch.setattr(peers, "block_scaled_mm_candidates", _emulated_block_candidates)
    shapes = [grouped.GroupedShape("contiguous", 2, 100, 256, 384, {"H100": 100}), SMALL_MASKED]
    res = grouped.run_benchmark(shapes, grouped.PEERS, host=False, log=lambda *a: None)
    assert [c["status"] for s in res["shapes"] for c in s["cells"].values()] == ["ok"] * 6
    first = res["shapes"][0]
    assert first["published_tflops"] == 100 and first["published_card"] == "H100"
    assert first["ratio_to_published"] == pytest.approx(first["cells"]["deep_gemm"]["tflops"] / 100)
    assert first["cells"]["scaled_mm_loop"]["launches"] == 2 and "seed" in first
    assert "ratio_to_published" not in res["shapes"][1]
    md = grouped.render_markdown(res)
    assert "DeepGEMM H100 TFLOP/s" in md and "| WRONG" not in md and "| error" not in md


BUILD = grouped.build_problem


# ---- CLI


def test_main_rejects_unknown_peers():
    assert grouped.main(["--peers", "deep_gemm,nope"]) == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_main_without_gpu_says_so(capsys):
    assert grouped.main([]) == 2
    assert "CUDA" in capsys.readouterr().err


def test_imports_without_gpu_or_deep_gemm():
    code = ("import sys; sys.modules['deep_gemm'] = None\n"
            "import benchmarks.grouped as g\nassert len(g.SHAPES) == 5\nprint('OK')\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr
