"""CPU tests of the benchmark suite: parsing, accounting, writers, timing bookkeeping. GPU parts skip."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import peers, run  # noqa: E402

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _load_bench():
    # By path, so these tests do not depend on the rest of the package importing.
    spec = importlib.util.spec_from_file_location("_bench_under_test", REPO / "deep_gemm" / "testing" / "bench.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bench = _load_bench()


# ---- shapes and peers


def test_default_shapes_are_the_24_deepseek_v3_shapes():
    shapes = run.default_shapes()
    assert len(shapes) == 24 == len(set(shapes))
    assert {m for m, _, _ in shapes} == {64, 128, 4096}
    assert (4096, 7168, 16384) in shapes and (64, 32768, 512) in shapes and (128, 576, 7168) in shapes


def test_quick_shapes_are_a_subset():
    assert set(run.quick_shapes()) <= set(run.default_shapes())


@pytest.mark.parametrize(
    "text, expected",
    [
        ("64,2112,7168", [(64, 2112, 7168)]),
        ("64,2112,7168;4096, 7168, 2048", [(64, 2112, 7168), (4096, 7168, 2048)]),
        (" 1x2x3 ; ", [(1, 2, 3)]),
    ],
)
def test_parse_shapes(text, expected):
    assert run.parse_shapes(text) == expected


@pytest.mark.parametrize("text", ["", ";", "1,2", "1,2,3,4", "a,b,c", "0,1,1", "-1,2,3"])
def test_parse_shapes_rejects(text):
    with pytest.raises(ValueError):
        run.parse_shapes(text)


def test_parse_peers():
    assert run.parse_peers(None) == list(peers.DEFAULT_PEERS)
    assert run.parse_peers("torch_bf16,deep_gemm,torch_bf16") == ["torch_bf16", "deep_gemm"]
    assert run.parse_peers("all") == list(peers.PEERS)
    with pytest.raises(ValueError, match="nope"):
        run.parse_peers("deep_gemm,nope")


def test_peer_registry_is_consistent():
    assert set(peers.DEFAULT_PEERS) <= set(peers.PEERS)
    assert {"deep_gemm", "scaled_mm_block", "scaled_mm_tensor", "triton_block", "torch_bf16"} <= set(peers.PEERS)
    assert all(callable(f) for f in peers.PEERS.values())


# ---- accounting


def test_flops_and_bytes():
    assert run.gemm_flops(2, 3, 4) == 48
    # A and B in their dtype, D in bf16
    assert run.gemm_bytes(64, 2112, 7168, 1, 2) == 64 * 7168 + 2112 * 7168 + 64 * 2112 * 2
    assert run.gemm_bytes(64, 2112, 7168, 2, 2) == 2 * (64 * 7168 + 2112 * 7168) + 64 * 2112 * 2


def test_roofline():
    bw = 3.0e12
    m, n, k = 64, 2112, 7168
    ai = run.gemm_flops(m, n, k) / run.gemm_bytes(m, n, k)
    assert run.roofline_tflops(m, n, k, bw) == pytest.approx(ai * bw / 1e12)
    assert run.roofline_tflops(m, n, k, bw) < run.PEAK_FP8_TFLOPS
    assert run.roofline_tflops(4096, 7168, 16384, bw) == run.PEAK_FP8_TFLOPS  # compute-bound
    assert run.roofline_tflops(m, n, k, None) == run.PEAK_FP8_TFLOPS


def test_cell_metrics_and_speedups():
    c = run.cell_metrics(64, 2112, 7168, 10e-6, 1, 3e12)
    assert c["time_us"] == pytest.approx(10)
    assert c["tflops"] == pytest.approx(2 * 64 * 2112 * 7168 / 10e-6 / 1e12)
    assert c["copy_bw_frac"] == pytest.approx(c["gbps"] * 1e9 / 3e12)
    assert "copy_bw_frac" not in run.cell_metrics(4096, 2112, 7168, 1e-4, 1, 3e12)
    cells = {
        "deep_gemm": {"status": "ok", "time_us": 10.0},
        "torch_bf16": {"status": "ok", "time_us": 25.0},
        "triton_block": {"status": "error"},
    }
    assert run.speedups(cells) == {"torch_bf16": 2.5}
    assert run.speedups({"deep_gemm": {"status": "unavailable"}, "torch_bf16": cells["torch_bf16"]}) == {}


@pytest.mark.parametrize(
    "name, short",
    [("NVIDIA H100 80GB HBM3", "H100"), ("NVIDIA H200", "H200"), ("NVIDIA H100 PCIe", "H100"),
     ("NVIDIA GH200 480GB", "GH200"), ("Weird Card", "Weird-Card"), ("", "unknown-gpu")],
)
def test_card_short_name(name, short):
    assert run.card_short_name(name) == short


# ---- writers


def _synthetic_result():
    shapes = []
    for m, n, k in [(64, 2112, 7168), (4096, 7168, 2048)]:
        cells = {}
        for p, t in [("deep_gemm", 10.0), ("scaled_mm_block", 14.0), ("torch_bf16", 20.0)]:
            cells[p] = {"status": "ok", "method": "events", "first_call_s": 0.5, "error": None,
                        **run.cell_metrics(m, n, k, t * 1e-6 * (1 if m == 64 else 30), 1, 3e12)}
        cells["triton_block"] = {"status": "unavailable", "method": "events", "error": "no triton | here"}
        cells["scaled_mm_tensor"] = {"status": "failed", "method": "events", "error": "rel err 0.5"}
        shapes.append({"M": m, "N": n, "K": k, "roofline_tflops": run.roofline_tflops(m, n, k, 3e12),
                       "cells": cells, "deep_gemm_speedup": run.speedups(cells)})
    return {
        "date": "2026-11-28",
        "card": {"name": "NVIDIA H100 80GB HBM3", "short_name": "H100", "sm_count": 132, "driver": "580.1",
                 "serial": "1653724058808"},
        "versions": {"torch": "2.11.0", "cuda": "13.0"},
        "peers": ["deep_gemm", "scaled_mm_block", "scaled_mm_tensor", "triton_block", "torch_bf16"],
        "timer": {"requested": "auto", "per_peer": {"deep_gemm": "kineto"}},
        "settings": {"num_tests": 30},
        "system": {"copy_bw_GBps": 3000.0, "bf16_matmul_tflops": 750.0},
        "host_overhead": {"shape": [64, 2112, 7168], "peers": {"deep_gemm": {"median_us": 5.0, "mean_us": 5.5,
                                                                            "min_us": 4.0},
                                                              "triton_block": {"error": "peer unavailable"}}},
        "shapes": shapes,
        "nan_field": float("nan"),
        "odd_object": object(),
    }


def test_json_writer(tmp_path):
    path = run.write_json(_synthetic_result(), tmp_path / "sub" / "r.json")
    data = json.loads(path.read_text())
    assert data["card"]["name"] == "NVIDIA H100 80GB HBM3"
    assert data["nan_field"] is None  # strict JSON, no NaN literal
    assert isinstance(data["odd_object"], str)
    assert data["shapes"][0]["cells"]["triton_block"]["error"] == "no triton | here"


def test_markdown_writer(tmp_path):
    res = _synthetic_result()
    path = run.write_markdown(res, tmp_path / "r.md")
    md = path.read_text()
    assert md.startswith("# ") and "NVIDIA H100 80GB HBM3" in md.splitlines()[0]
    assert "serial 1653724058808" in md.splitlines()[2]   # which card of the model it ran on
    table = [line for line in md.splitlines() if line.startswith("| 64 | 2112 | 7168 |")]
    assert table, md
    first = table[0].split("|")
    # roofline, then one column per peer in order
    assert first[5].strip() == run._fmt(res["shapes"][0]["cells"]["deep_gemm"]["tflops"])
    assert "n/a" in table[0] and "WRONG" in table[0]
    assert "speedup" in md and "1.40" in md  # 14 / 10
    assert "Host overhead" in md and "Not measured" in md
    assert "no triton / here" in md  # a | in an error must not break the table
    assert "%" in md  # copy-bandwidth fraction on the M=64 row


def test_markdown_writer_tolerates_sparse_result():
    md = run.render_markdown({"peers": ["deep_gemm"], "shapes": []})
    assert md.startswith("# ")


def test_plot_is_optional(tmp_path):
    path, msg = run.plot_results(_synthetic_result(), tmp_path / "r.png")
    if path is None:
        assert "matplotlib" in msg
    else:
        assert path.exists() and path.stat().st_size > 0


def test_output_stem_does_not_clobber(tmp_path):
    s1 = run.output_stem(tmp_path, "2026-11-28", "H100")
    assert s1.name == "2026-11-28_H100"
    s1.with_suffix(".json").write_text("{}")
    assert run.output_stem(tmp_path, "2026-11-28", "H100").name == "2026-11-28_H100-2"


def test_main_rejects_bad_arguments(capsys):
    assert run.main(["--shapes", "1,2"]) == 2
    assert run.main(["--peers", "nope"]) == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_main_without_gpu_says_so(capsys):
    assert run.main(["--quick"]) == 2
    assert "CUDA" in capsys.readouterr().err


# ---- bench bookkeeping (pure parts)


def test_summarize():
    s = bench.summarize([3.0, 1.0, 2.0])
    assert (s["median"], s["mean"], s["min"], s["max"], s["num_tests"]) == (2.0, 2.0, 1.0, 3.0, 3)


def test_kernel_times_from_events():
    ev = [("fill_kernel<int>", 0.0, 100.0), ("sm90_gemm_kernel", 100.0, 10.0), ("fill_kernel<int>", 200.0, 100.0),
          ("sm90_gemm_kernel", 300.0, 30.0)]
    assert bench.kernel_times_from_events(ev, "gemm") == pytest.approx(20e-6)
    assert bench.kernel_times_from_events(ev, ("gemm", "fill")) == pytest.approx((20e-6, 100e-6))
    assert bench.kernel_times_from_events(ev, "gemm", statistic="median") == pytest.approx(20e-6)
    with pytest.raises(RuntimeError, match="sm90_gemm_kernel"):  # lists what was seen
        bench.kernel_times_from_events(ev, "nothing_like_this")
    with pytest.raises(RuntimeError, match="with_multiple_kernels"):
        bench.kernel_times_from_events(ev, "kernel")
    assert bench.kernel_times_from_events(ev, "kernel", with_multiple_kernels=True) == pytest.approx(60e-6)


def test_split_iterations():
    sig = {"flush": 1}
    ev = [("flush", 0, 100), ("a", 100, 5), ("b", 110, 7), ("flush", 200, 100), ("a", 300, 6), ("b", 310, 8)]
    buckets = bench.split_iterations(ev, sig, num_tests=2)
    assert buckets == [{"a": 5, "b": 7}, {"a": 6, "b": 8}]
    with pytest.raises(RuntimeError, match="flush"):
        bench.split_iterations(ev, sig, num_tests=3)


def test_run_loads_the_bench_module_not_the_reexported_function():
    mod = run._load_bench()
    assert callable(mod.bench) and callable(mod.bench_kineto) and callable(mod.bench_kineto_total)


def test_bench_needs_cuda_clearly():
    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    with pytest.raises(RuntimeError, match="CUDA"):
        bench.bench(lambda: None)
    with pytest.raises(RuntimeError, match="CUDA"):
        bench.l2_flush()


# ---- peers without a GPU


def test_modules_import_without_gpu_or_triton():
    # A fresh interpreter where importing triton fails: the suite must still load.
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "from benchmarks import peers, run, triton_block_fp8 as tb\n"
        "ok, why = tb.available(); assert not ok and 'triton' in why, why\n"
        "assert 'deep_gemm' in peers.PEERS\n"
        "print('OK')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr


def test_importing_peers_does_not_import_triton():
    code = "import sys\nfrom benchmarks import peers, run\nprint('triton' in sys.modules)\n"
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_factories_raise_unavailable_without_gpu():
    for name, factory in peers.PEERS.items():
        with pytest.raises(peers.PeerUnavailable):
            factory(64, 256, 256, "cpu")


@pytest.mark.parametrize("exc, status", [(peers.PeerUnavailable("no such API"), "unavailable"),
                                         (peers.PeerCheckFailed("rel err 0.5"), "failed"),
                                         (RuntimeError("boom"), "error")])
def test_filing_errors_classifies_and_does_not_raise(exc, status):
    cell = {"status": None, "error": None}
    with run.filing_errors(cell):
        raise exc
    assert cell["status"] == status and str(exc) in cell["error"]
    assert ("where" in cell) == (status == "error")
    with pytest.raises(KeyboardInterrupt), run.filing_errors({}):
        raise KeyboardInterrupt


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_run_cell_files_a_missing_gpu_as_unavailable():
    cell, fn = run.run_cell("torch_bf16", 64, 256, 256, method="events", num_warmups=1, num_tests=1,
                            copy_bw_Bps=None)
    assert cell["status"] == "unavailable" and fn is None


def test_quantizers_and_reference_on_cpu():
    g = torch.Generator().manual_seed(0)
    M, N, K = 5, 130, 300  # ragged on purpose
    a, sfa = peers.per_token_cast(peers.random_blocky(M, K, 1, "cpu", g))
    b, sfb = peers.per_block_cast(peers.random_blocky(N, K, 128, "cpu", g))
    assert a.dtype == torch.float8_e4m3fn and sfa.shape == (M, 3)
    assert b.dtype == torch.float8_e4m3fn and sfb.shape == (2, 3)
    assert a.float().abs().max() <= peers.FP8_MAX and b.float().abs().max() <= peers.FP8_MAX
    ref = peers.reference_block_fp8(a, sfa, b, sfb)
    assert ref.shape == (M, N)
    # the quantization round trip is close to the original
    x = peers.random_blocky(M, K, 1, "cpu", torch.Generator().manual_seed(1))
    q, s = peers.per_token_cast(x)
    assert peers.rel_fro_error(peers.dequant_rows(q, s), x) < 0.05
    # a scale-layout mistake is an O(1) error, so the check catches it
    wrong = peers.dequant_rows(a, sfa.flip(1)) @ peers.dequant_blocks(b, sfb).t()
    assert peers.rel_fro_error(wrong, ref) > 0.1
    with pytest.raises(peers.PeerCheckFailed, match="relative Frobenius"):
        peers._check("x", wrong, ref)


def test_our_reference_matches_package_reference():
    try:
        from deep_gemm import reference as dg_ref
    except Exception as exc:  # the package is built by others; skip while it cannot import
        pytest.skip(f"deep_gemm.reference not importable: {exc}")
    a, sfa = peers.per_token_cast(torch.randn(7, 256))
    b, sfb = peers.per_block_cast(torch.randn(130, 256))
    ours = peers.reference_block_fp8(a, sfa, b, sfb)
    theirs = dg_ref.fp8_gemm_nt(a, sfa, b, sfb, out_dtype=torch.float32)
    assert peers.rel_fro_error(theirs, ours) < 1e-5


# ---- GPU (skipped here)


@needs_cuda
def test_bench_times_something():
    x = torch.randn(1024, 1024, device="cuda")
    s = bench.bench(lambda: x @ x, num_warmups=1, num_tests=3)
    assert 0 < s["min"] <= s["median"]
    assert bench.bench_kineto_total(lambda: x @ x, num_tests=3)["median"] > 0


@needs_cuda
def test_flush_buffer_follows_the_requested_size(monkeypatch):
    monkeypatch.setenv("DG_BENCH_L2_FLUSH_BYTES", "256e6")
    assert bench.effective_l2_flush_bytes() == 256_000_000
    buf = bench._flush_buffer()
    buf.fill_(7)
    bench.l2_flush()
    assert int(buf.abs().max()) == 0   # the flush writes every element


@needs_cuda
def test_peers_run_on_gpu():
    for name in ("torch_bf16", "scaled_mm_tensor"):
        fn, info = peers.PEERS[name](128, 256, 512, "cuda")
        fn()
        assert info["rel_err"] < peers.CHECK_TOL


# ---- L2 flush size (DeepGEMM's harness zeroes 8 GB before each call)


def test_flush_size_defaults_to_deepgemm_harness_and_reads_the_env(monkeypatch):
    monkeypatch.delenv("DG_BENCH_L2_FLUSH_BYTES", raising=False)
    assert bench.l2_flush_bytes() == bench.L2_FLUSH_BYTES == 8_000_000_000
    monkeypatch.setenv("DG_BENCH_L2_FLUSH_BYTES", "256e6")
    assert bench.l2_flush_bytes() == 256_000_000
    monkeypatch.setenv("DG_BENCH_L2_FLUSH_BYTES", "1048576")
    with pytest.raises(ValueError, match="evict"):
        bench.l2_flush_bytes()
    for bad in ("lots", "inf", "nan"):
        monkeypatch.setenv("DG_BENCH_L2_FLUSH_BYTES", bad)
        with pytest.raises(ValueError, match="byte count"):
            bench.l2_flush_bytes()


def test_flush_size_is_cut_to_a_quarter_of_free_memory_but_never_below_the_minimum():
    gb = 1_000_000_000
    assert bench.fit_flush_bytes(8 * gb, 140 * gb) == 8 * gb
    assert bench.fit_flush_bytes(8 * gb, 20 * gb) == 5 * gb
    assert bench.fit_flush_bytes(8 * gb, 100_000_000) == bench.MIN_L2_FLUSH_BYTES
    assert bench.fit_flush_bytes(8 * gb + 3, 140 * gb) % 4 == 0


def test_cli_flush_option_is_checked_and_handed_to_the_timer(monkeypatch):
    monkeypatch.delenv("DG_BENCH_L2_FLUSH_BYTES", raising=False)
    with pytest.raises(ValueError, match="--l2-flush-bytes"):
        run.apply_flush_bytes("1000")
    import os
    assert "DG_BENCH_L2_FLUSH_BYTES" not in os.environ   # a rejected value leaves nothing behind
    run.apply_flush_bytes("256e6")
    assert os.environ["DG_BENCH_L2_FLUSH_BYTES"] == "256e6"
    assert run.flush_text(8_000_000_000) == "zeroing 8.00 GB"
    assert run.flush_text(256_000_000) == "zeroing 256 MB"
    assert run.build_parser().parse_args(["--l2-flush-bytes", "2e9"]).l2_flush_bytes == "2e9"


def test_nvidia_smi_field_asks_for_the_card_torch_means(monkeypatch):
    seen = []

    def fake_run(cmd, **kw):
        seen.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout="1654124046644\n", stderr="")

    monkeypatch.setattr(run.torch.cuda, "get_device_properties", lambda d: SimpleNamespace(uuid="1b2c-33"))
    monkeypatch.setattr(run.subprocess, "run", fake_run)
    assert run._nvidia_smi("serial", 1) == "1654124046644"
    assert seen == [["nvidia-smi", "--id=GPU-1b2c-33", "--query-gpu=serial", "--format=csv,noheader"]]
    # no nvidia-smi (or no answer): None, never an exception
    monkeypatch.setattr(run.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 9, "", "err"))
    assert run._nvidia_smi("serial", 0) is None
