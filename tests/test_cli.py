"""`python -m deep_gemm ...` on a machine without a GPU, as a user would run it (subprocesses with the
repository on PYTHONPATH and a temporary kernel cache)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deep_gemm.jit import cache

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU behaviour of the CLI")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "dg_cache"
    monkeypatch.setenv("DG_JIT_CACHE_DIR", str(d))   # for this process's cache.* calls too
    return d


def cli(*args, cache_dir, timeout=240):
    env = dict(os.environ, DG_JIT_CACHE_DIR=str(cache_dir),
               PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    for var in ("DG_DISABLE_CPU_FALLBACK", "DG_JIT_USE_NVCC", "DG_JIT_DUMP_DIR"):
        env.pop(var, None)
    return subprocess.run([sys.executable, "-m", "deep_gemm", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_info(cache_dir):
    p = cli("info", cache_dir=cache_dir)
    assert p.returncode == 0, p.stderr
    assert "GPU: none" in p.stdout
    assert "deep_gemm " in p.stdout and "compiler: nvrtc" in p.stdout
    assert f"kernel cache: {cache_dir}" in p.stdout and "(0 kernels" in p.stdout


def test_demo_runs_the_reference_path(cache_dir):
    p = cli("demo", cache_dir=cache_dir)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "reference path" in p.stdout
    assert "all results match the reference" in p.stdout and "FAILED" not in p.stdout


def test_no_command_is_a_usage_error(cache_dir):
    p = cli(cache_dir=cache_dir)
    assert p.returncode == 2 and "usage:" in p.stderr and "Traceback" not in p.stderr


def test_precompile_then_cache_list_and_clear(cache_dir):
    p = cli("precompile", "--shapes", "4096,7168,2048;64,2112,7168", "--jobs", "2", cache_dir=cache_dir)
    assert p.returncode == 0, p.stdout + p.stderr
    rows = [line for line in p.stdout.splitlines() if line.startswith("fp8_gemm_")]
    assert len(rows) == 2, p.stdout                  # the two shapes pick different kernels
    assert all(line.endswith("ok") for line in rows), p.stdout
    assert "0 failed" in p.stdout
    names = sorted(line.split()[0] for line in rows)

    # Everything it built is in the cache (it may also hold runners-up it compiled to rule out spills).
    listed = {k.name for _, k in cache.entries() if k is not None}
    assert set(names) <= listed

    p = cli("cache", "list", cache_dir=cache_dir)
    assert p.returncode == 0, p.stderr
    assert all(name in p.stdout for name in names)
    assert f"{len(listed)} entries in {cache_dir / 'kernels'}" in p.stdout
    assert "CORRUPT" not in p.stdout

    # A second precompile finds everything in the cache.
    p = cli("precompile", "--shapes", "4096,7168,2048;64,2112,7168", "--jobs", "1", cache_dir=cache_dir)
    assert p.returncode == 0 and p.stdout.count("cached, ok") == 2, p.stdout

    # A damaged entry shows up in the listing.
    victim = sorted((cache_dir / "kernels").glob("*.dgk"))[0]
    victim.write_bytes(victim.read_bytes()[:100])
    p = cli("cache", "list", cache_dir=cache_dir)
    assert p.returncode == 0 and f"{victim.name}: CORRUPT" in p.stdout

    p = cli("cache", "clear", cache_dir=cache_dir)
    assert p.returncode == 0 and f"removed {len(listed)} files" in p.stdout
    assert cache.entries() == []
    p = cli("cache", "list", cache_dir=cache_dir)
    assert p.returncode == 0 and "0 entries" in p.stdout


def test_cache_list_on_empty_cache(cache_dir):
    p = cli("cache", "list", cache_dir=cache_dir)
    assert p.returncode == 0 and "0 entries" in p.stdout
    p = cli("cache", "bogus", cache_dir=cache_dir)
    assert p.returncode == 2 and "invalid choice" in p.stderr


@pytest.mark.parametrize("shapes", ["bad", "1,2", "1,2,x", ";"])
def test_precompile_bad_shapes_fails(shapes, cache_dir):
    p = cli("precompile", "--shapes", shapes, cache_dir=cache_dir)
    assert p.returncode != 0
    assert "--shapes" in p.stdout + p.stderr


@pytest.mark.parametrize("shapes", ["bad", "1,2,x"])
def test_precompile_bad_shapes_is_a_clean_message(shapes, cache_dir):
    p = cli("precompile", "--shapes", shapes, cache_dir=cache_dir)
    assert p.returncode != 0
    assert "Traceback" not in p.stderr, p.stderr
    assert "--shapes" in p.stderr


def test_precompile_builds_the_tail_box_variants_the_plans_launch(cache_dir):
    """A plan for M = 1 launches the tail-box variant (_tb) of its pick; a masked call's M_max is the
    caller's buffer size, so both variants of a masked pick are built."""
    from deep_gemm.jit import precompile
    from deep_gemm.kernels.fp8_gemm import with_tail_boxes

    dense = precompile.configs_for([(1, 2112, 7168), (4096, 7168, 2048)], 132)
    names = sorted(cfg.kernel_name() for cfg, _ in dense)
    assert [n.endswith("_tb") for n in names].count(True) == 1, names
    for cfg, _ in dense:
        assert cfg == with_tail_boxes(cfg, 1, 2112) or cfg == with_tail_boxes(cfg, 4096, 7168)
    masked = precompile.configs_for([], 132, grouped=[("masked", 20, 4096, 7168, 6)])
    masked_names = sorted(cfg.kernel_name() for cfg, _ in masked)
    assert len(masked_names) == 2 and masked_names[1] == masked_names[0] + "_tb", masked_names
