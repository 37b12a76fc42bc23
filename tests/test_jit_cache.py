"""JIT compiler and disk cache on the CPU: NVRTC compiles for sm_90a without a GPU, so everything
except loading and launching is testable here (DESIGN.md sections 6 and 7).

Every test points DG_JIT_CACHE_DIR at its own temporary folder so nothing touches ~/.cache.
"""

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from deep_gemm.jit import cache, compiler, runtime
from deep_gemm.kernels import tma_copy

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "dg_cache"
    monkeypatch.setenv("DG_JIT_CACHE_DIR", str(d))
    # Switches that would change options or print; the tests set the ones they need.
    for var in ("DG_JIT_USE_NVCC", "DG_JIT_DEBUG", "DG_JIT_PTXAS_VERBOSE", "DG_JIT_DUMP_DIR", "DG_JIT_LINEINFO"):
        monkeypatch.delenv(var, raising=False)
    return d


@pytest.fixture
def count_compiles(monkeypatch):
    """Wraps the compiler that runtime.build calls, counting real compilations."""
    calls = []
    real = runtime.compile_kernel

    def counting(name, source, kernel_expr):
        calls.append(name)
        return real(name, source, kernel_expr)

    monkeypatch.setattr(runtime, "compile_kernel", counting)
    return calls


def dgk_files():
    d = cache.kernel_dir()
    return sorted(d.glob("*.dgk")) if d.is_dir() else []


def tmp_files():
    d = cache.kernel_dir()
    return sorted(d.glob("*.tmp")) if d.is_dir() else []


def only_entry() -> Path:
    files = dgk_files()
    assert len(files) == 1, files
    return files[0]


# --------------------------------------------------------------------------------------------- compile

def test_tma_copy_compiles_for_sm90a():
    k = tma_copy.build()
    assert k.cubin[:4] == b"\x7fELF"
    assert k.symbol in compiler.kernel_symbols(k.cubin)
    assert "tma_copy_kernel" in k.symbol
    assert "sm_90a" in k.log     # ptxas reports the target it compiled the entry for
    r = k.resources
    assert isinstance(r["registers"], int) and 0 < r["registers"] <= 255
    assert r["spill_stores"] == 0 and r["spill_loads"] == 0 and r["stack_frame"] == 0
    assert k.compiler == compiler.compiler_identity() and k.compiler.startswith("nvrtc ")
    assert k.compile_seconds >= 0


def test_compile_error_names_kernel_and_carries_log():
    with pytest.raises(compiler.CompileError) as info:
        compiler.compile_kernel("bad_kernel", "this is not C++", "&x")
    msg = str(info.value)
    assert "bad_kernel" in msg
    # The log is NVRTC's own diagnostic, pointing at the offending source file and line.
    assert "bad_kernel.cu(1)" in msg and "error" in msg


def test_failed_build_leaves_no_cache_entry():
    with pytest.raises(compiler.CompileError, match="bad_kernel"):
        runtime.build("bad_kernel", "this is not C++", "&x")
    assert dgk_files() == [] and tmp_files() == []


def test_kernel_symbols_rejects_non_elf():
    with pytest.raises(compiler.CompileError, match="ELF"):
        compiler.kernel_symbols(b"not a cubin at all")


def test_parse_ptxas_resources():
    log = textwrap.dedent("""\
        ptxas info    : Compiling entry function '_Z1kv' for 'sm_90a'
        ptxas info    : Function properties for _Z1kv
        ptxas         .     24 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads
        ptxas info    : Used 168 registers, used 1 barriers, 2048 bytes smem
        """)
    assert compiler.parse_ptxas_resources(log) == {
        "registers": 168, "stack_frame": 24, "spill_stores": 8, "spill_loads": 12, "static_smem": 2048}
    empty = compiler.parse_ptxas_resources("")
    assert set(empty.values()) == {None}


def test_dump_dir_writes_source_and_ptx(tmp_path, monkeypatch):
    dump = tmp_path / "dump"
    monkeypatch.setenv("DG_JIT_DUMP_DIR", str(dump))
    compiler.compile_kernel(tma_copy.NAME, tma_copy.source(), tma_copy.KERNEL_EXPR)
    assert (dump / "tma_copy.cu").read_text() == tma_copy.source()
    assert ".target sm_90a" in (dump / "tma_copy.ptx").read_text()


# --------------------------------------------------------------------------------------------- cache hits and keys

def test_second_build_hits_the_disk_cache(count_compiles, monkeypatch):
    first = tma_copy.build()
    assert count_compiles == [tma_copy.NAME]
    path = only_entry()

    def no_compiling(*args):
        raise AssertionError("the second build must come from the cache")

    monkeypatch.setattr(runtime, "compile_kernel", no_compiling)
    second = tma_copy.build()
    assert second == first          # the whole record round-trips, cubin and resources included
    assert only_entry() == path


def test_changed_source_gets_a_new_key(count_compiles):
    tma_copy.build()
    runtime.build(tma_copy.NAME, tma_copy.source() + "// an edit that changes nothing but the text\n",
                  tma_copy.KERNEL_EXPR)
    assert len(count_compiles) == 2
    assert len(dgk_files()) == 2


def test_lineinfo_option_changes_the_key(count_compiles, monkeypatch):
    tma_copy.build()
    monkeypatch.setenv("DG_JIT_LINEINFO", "1")
    tma_copy.build()
    assert len(count_compiles) == 2 and len(dgk_files()) == 2


def test_make_key_parts():
    base = cache.make_key("a", "b", "c")
    assert base == cache.make_key("a", "b", "c")
    assert len(base) == 64 and all(ch in "0123456789abcdef" for ch in base)
    # Parts are separated, so moving text across a boundary is a different key.
    assert cache.make_key("ab", "c") != cache.make_key("a", "bc")
    assert cache.make_key("a", "b", "c") != cache.make_key("a", "b", "d")


def test_package_version_is_part_of_the_key(monkeypatch):
    before = cache.make_key("x")
    monkeypatch.setattr(cache, "__version__", "999.0.0")
    assert cache.make_key("x") != before


def test_serialize_round_trip():
    k = tma_copy.build()
    assert cache.deserialize(cache.serialize(k)) == k


# --------------------------------------------------------------------------------------------- corruption

def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _flip_cubin_byte(data: bytes) -> bytes:
    # The cubin is the tail of the entry; flip a byte well inside it.
    i = len(data) - 200
    return data[:i] + bytes([data[i] ^ 0x40]) + data[i + 1:]


def _garbage(data: bytes) -> bytes:
    return os.urandom(len(data))


def _magic_then_garbage(data: bytes) -> bytes:
    return cache.MAGIC + os.urandom(len(data) - 4)


def _empty(data: bytes) -> bytes:
    return b""


def _huge_header_length(data: bytes) -> bytes:
    return cache.MAGIC + struct.pack("<I", 0x7FFFFFFF) + data[8:]


def _header_not_an_object(data: bytes) -> bytes:
    blob = b"[1, 2, 3]"
    return cache.MAGIC + struct.pack("<I", len(blob)) + blob


def _header_missing_fields(data: bytes) -> bytes:
    (n,) = struct.unpack_from("<I", data, 4)
    header = json.loads(data[8:8 + n])
    del header["symbol"]
    blob = json.dumps(header).encode()
    return cache.MAGIC + struct.pack("<I", len(blob)) + blob + data[8 + n:]


def _cubin_appended(data: bytes) -> bytes:
    return data + b"\x00"


CORRUPTIONS = [_truncate, _flip_cubin_byte, _garbage, _magic_then_garbage, _empty, _huge_header_length,
               _header_not_an_object, _header_missing_fields, _cubin_appended]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__.strip("_"))
def test_corrupt_entry_is_detected_removed_and_rebuilt(corrupt, count_compiles):
    good = tma_copy.build()
    path = only_entry()
    key = path.stem
    path.write_bytes(corrupt(path.read_bytes()))

    assert cache.load(key) is None
    assert not path.exists(), "a corrupt entry must be removed"

    rebuilt = tma_copy.build()
    assert len(count_compiles) == 2
    assert rebuilt.cubin == good.cubin and rebuilt.symbol == good.symbol
    assert only_entry() == path
    assert cache.deserialize(path.read_bytes()) is not None


def test_corrupt_entry_found_by_build_directly(count_compiles):
    # Same as above but without calling cache.load first: runtime.build itself must cope.
    tma_copy.build()
    path = only_entry()
    path.write_bytes(_truncate(path.read_bytes()))
    k = tma_copy.build()
    assert len(count_compiles) == 2
    assert k.symbol in compiler.kernel_symbols(k.cubin)
    assert cache.deserialize(path.read_bytes()) == k


def test_load_of_missing_key_is_none():
    assert cache.load("0" * 64) is None


# --------------------------------------------------------------------------------------------- concurrency

# Each child builds the same FP8 GEMM kernel. Two barriers make the race deterministic: all children
# start compiling together (after their slow imports), and none stores its result until all have
# compiled, so every process misses the cache and they all rename into the same path at once.
_CHILD = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    sync, me, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    from deep_gemm.jit import cache, runtime
    from deep_gemm.kernels.fp8_gemm import Fp8GemmConfig

    def barrier(tag):
        (sync / f"{tag}-{me}").touch()
        deadline = time.time() + 120
        while len(list(sync.glob(f"{tag}-*"))) < count:
            if time.time() > deadline:
                sys.exit(f"timed out at barrier {tag}")
            time.sleep(0.005)

    real = runtime.compile_kernel
    def compile_then_wait(*args):
        kernel = real(*args)
        barrier("compiled")
        return kernel
    runtime.compile_kernel = compile_then_wait

    cfg = Fp8GemmConfig(128, 112, 5, 2)
    barrier("ready")
    kernel = cfg.build()
    print(json.dumps({"symbol": kernel.symbol, "bytes": len(kernel.cubin)}))
""")


def test_concurrent_processes_compiling_the_same_kernel(tmp_path, cache_dir):
    sync = tmp_path / "sync"
    sync.mkdir()
    n = 3
    env = dict(os.environ, DG_JIT_CACHE_DIR=str(cache_dir),
               PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, str(sync), str(i), str(n)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(n)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert len(list(sync.glob("compiled-*"))) == n, "every process should have compiled (none hit the cache)"
    assert len({(r["symbol"], r["bytes"]) for r in results}) == 1

    path = only_entry()
    assert tmp_files() == []
    kernel = cache.deserialize(path.read_bytes())
    assert kernel is not None and kernel.symbol == results[0]["symbol"]
    assert cache.load(path.stem) == kernel


def test_store_is_atomic_and_leaves_no_temp_files():
    k = tma_copy.build()
    path = only_entry()
    # Storing again over an existing entry (what the loser of a race does) keeps one intact file.
    cache.store(path.stem, k)
    assert only_entry() == path and tmp_files() == []
    assert cache.deserialize(path.read_bytes()) == k


# --------------------------------------------------------------------------------------------- listing and clearing

def test_entries_and_clear(cache_dir):
    assert cache.entries() == [] and cache.clear() == 0 and cache.total_bytes() == 0   # no folder yet

    k1 = tma_copy.build()
    k2 = runtime.build("tma_copy_variant", tma_copy.source() + "// variant\n", tma_copy.KERNEL_EXPR)
    rows = cache.entries()
    assert len(rows) == 2
    assert all(p.parent == cache.kernel_dir() and p.suffix == ".dgk" for p, _ in rows)
    assert sorted(k.name for _, k in rows) == sorted([k1.name, k2.name])
    assert cache.total_bytes() == sum(p.stat().st_size for p, _ in rows)

    # A corrupt entry is listed as None (the CLI shows it as CORRUPT); a stray temp file from a
    # crashed writer is not an entry but is cleared.
    (cache.kernel_dir() / ("f" * 64 + ".dgk")).write_bytes(b"junk")
    (cache.kernel_dir() / ("e" * 64 + ".dgk.123.abc.tmp")).write_bytes(b"half")
    (cache.kernel_dir() / "README").write_text("not ours")
    rows = cache.entries()
    assert len(rows) == 3 and sum(k is None for _, k in rows) == 1

    assert cache.clear() == 4
    assert cache.entries() == [] and tmp_files() == []
    assert (cache.kernel_dir() / "README").exists(), "clear removes only cache files"
    assert cache.cache_dir() == cache_dir


# --------------------------------------------------------------------------------------------- generated header

def test_generated_wgmma_header_is_current():
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "gen_wgmma.py"), "--check"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, "deep_gemm/include/deep_gemm/wgmma_ops.cuh is stale: run tools/gen_wgmma.py"
