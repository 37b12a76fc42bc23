"""On-disk kernel cache.

One file per kernel: magic, header length, a JSON header (name, symbol, log, resources, cubin hash),
then the cubin. A file is written under a temporary name and renamed into place, so a reader sees
either nothing or a whole entry, and two processes compiling the same kernel just race to rename
identical bytes. An entry that fails its checks (torn, truncated, edited) is removed and rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import uuid
from pathlib import Path

from .. import __version__, envs
from .compiler import CompiledKernel

MAGIC = b"DGK1"


def cache_dir() -> Path:
    return Path(envs.jit_cache_dir())


def kernel_dir() -> Path:
    return cache_dir() / "kernels"


def make_key(*parts: str) -> str:
    h = hashlib.sha256()
    h.update(__version__.encode())
    for part in parts:
        h.update(b"\x00")
        h.update(part.encode())
    return h.hexdigest()


def entry_path(key: str) -> Path:
    return kernel_dir() / f"{key}.dgk"


def serialize(kernel: CompiledKernel) -> bytes:
    header = {
        "name": kernel.name, "symbol": kernel.symbol, "log": kernel.log, "resources": kernel.resources,
        "compile_seconds": kernel.compile_seconds, "compiler": kernel.compiler,
        "cubin_size": len(kernel.cubin), "cubin_sha256": hashlib.sha256(kernel.cubin).hexdigest(),
    }
    blob = json.dumps(header).encode()
    return MAGIC + struct.pack("<I", len(blob)) + blob + kernel.cubin


def deserialize(data: bytes) -> CompiledKernel | None:
    """Returns None for anything that is not a complete, intact entry."""
    try:
        if data[:4] != MAGIC:
            return None
        (n,) = struct.unpack_from("<I", data, 4)
        header = json.loads(data[8:8 + n])
        cubin = data[8 + n:]
        if len(cubin) != header["cubin_size"] or hashlib.sha256(cubin).hexdigest() != header["cubin_sha256"]:
            return None
        return CompiledKernel(name=header["name"], symbol=header["symbol"], cubin=cubin, log=header["log"],
                              resources=header["resources"], compile_seconds=header["compile_seconds"],
                              compiler=header["compiler"])
    except (ValueError, KeyError, struct.error, UnicodeDecodeError, TypeError):
        return None


def load(key: str) -> CompiledKernel | None:
    path = entry_path(key)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    kernel = deserialize(data)
    if kernel is None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
    return kernel


def store(key: str, kernel: CompiledKernel) -> Path:
    path = entry_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as f:
        f.write(serialize(kernel))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def entries() -> list[tuple[Path, CompiledKernel | None]]:
    d = kernel_dir()
    if not d.is_dir():
        return []
    return [(p, deserialize(p.read_bytes())) for p in sorted(d.glob("*.dgk"))]


def clear() -> int:
    count = 0
    d = kernel_dir()
    if d.is_dir():
        for p in d.iterdir():
            if p.suffix in (".dgk", ".tmp"):
                p.unlink(missing_ok=True)
                count += 1
    return count


def total_bytes() -> int:
    d = kernel_dir()
    return sum(p.stat().st_size for p in d.glob("*.dgk")) if d.is_dir() else 0
