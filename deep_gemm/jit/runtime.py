"""Loading compiled kernels and launching them through the CUDA driver API (cuda-bindings).

Hot-path rules: a warm launch builds no strings, hashes nothing and creates no driver objects
except the stream handle; launch configs and tensor maps are cached by their arguments.
"""
from __future__ import annotations

import ctypes
import functools
import threading

from . import cache
from .compiler import CompiledKernel, compile_kernel, compiler_identity, include_fingerprint, option_fingerprint


class CudaError(RuntimeError):
    pass


@functools.lru_cache(maxsize=None)
def driver():
    from cuda.bindings import driver as d
    (err,) = d.cuInit(0)
    if err != d.CUresult.CUDA_SUCCESS:
        raise CudaError(f"cuInit failed: {err}")
    return d


def check(result, what: str):
    """Unwraps a cuda-bindings (err, *values) tuple, raising on failure."""
    d = driver()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != d.CUresult.CUDA_SUCCESS:
        _, name = d.cuGetErrorName(err)
        _, text = d.cuGetErrorString(err)
        raise CudaError(f"{what} failed: {name.decode() if name else err}: {text.decode() if text else ''}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


# --------------------------------------------------------------------------------------------- build
_build_lock = threading.Lock()


def build(name: str, source: str, kernel_expr: str) -> CompiledKernel:
    """Compiles through the disk cache (no GPU needed)."""
    key = cache.make_key(compiler_identity(), option_fingerprint(), include_fingerprint(), kernel_expr, source)
    kernel = cache.load(key)
    if kernel is None:
        kernel = compile_kernel(name, source, kernel_expr)
        cache.store(key, kernel)
    return kernel


class LoadedKernel:
    """A cubin loaded as a context-independent CUDA library, with its one entry point."""

    def __init__(self, compiled: CompiledKernel):
        d = driver()
        self.compiled = compiled
        self.library = check(d.cuLibraryLoadData(compiled.cubin, None, None, 0, None, None, 0), "cuLibraryLoadData")
        self.kernel = check(d.cuLibraryGetKernel(self.library, compiled.symbol.encode()), "cuLibraryGetKernel")
        self._functions: dict[int, object] = {}
        self._smem_set: dict[int, int] = {}

    def function(self, device: int, dynamic_smem: int):
        """The kernel as a CUfunction of `device`'s primary context, allowed `dynamic_smem` bytes."""
        d = driver()
        func = self._functions.get(device)
        if func is None:
            ensure_context(device)
            func = check(d.cuKernelGetFunction(self.kernel), f"cuKernelGetFunction({self.compiled.name})")
            self._functions[device] = func
        if self._smem_set.get(device, -1) < dynamic_smem:
            check(d.cuFuncSetAttribute(func, d.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                       dynamic_smem), f"setting {dynamic_smem} B of shared memory on {self.compiled.name}")
            self._smem_set[device] = dynamic_smem
        return func


_loaded: dict[str, LoadedKernel] = {}


def get_kernel(name: str, source: str, kernel_expr: str) -> LoadedKernel:
    """Memory cache -> disk cache -> compiler. `name` must identify the source uniquely."""
    kernel = _loaded.get(name)
    if kernel is None:
        with _build_lock:
            kernel = _loaded.get(name)
            if kernel is None:
                kernel = LoadedKernel(build(name, source, kernel_expr))
                _loaded[name] = kernel
    return kernel


def ensure_context(device: int) -> None:
    """Makes the device's primary context (the one PyTorch uses) current on this thread."""
    d = driver()
    ctx = check(d.cuCtxGetCurrent(), "cuCtxGetCurrent")
    if ctx is None or int(ctx) == 0:
        dev = check(d.cuDeviceGet(device), "cuDeviceGet")
        ctx = check(d.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")
        check(d.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")


# --------------------------------------------------------------------------------------------- launch
class Launcher:
    """A prepared cuLaunchKernelEx: grid, block, shared memory and cluster fixed; per call only the
    stream and the parameter bytes change. The kernel takes one by-value parameter struct."""

    def __init__(self, func, grid: int, block: int, smem: int, cluster: int = 1):
        d = driver()
        cfg = d.CUlaunchConfig()
        cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ = grid, 1, 1
        cfg.blockDimX, cfg.blockDimY, cfg.blockDimZ = block, 1, 1
        cfg.sharedMemBytes = smem
        if cluster > 1:
            attr = d.CUlaunchAttribute()
            attr.id = d.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION
            attr.value.clusterDim.x, attr.value.clusterDim.y, attr.value.clusterDim.z = cluster, 1, 1
            cfg.attrs = [attr]
            cfg.numAttrs = 1
        else:
            cfg.numAttrs = 0
        self.config, self.func, self.grid, self.block, self.smem, self.cluster = cfg, func, grid, block, smem, cluster
        self._launch = d.cuLaunchKernelEx
        self._stream_type = d.CUstream
        self._success = d.CUresult.CUDA_SUCCESS
        self._streams: dict[int, object] = {}   # stream handle wrappers, built once per stream

    def max_active_clusters(self) -> int:
        """How many clusters of this launch can be resident at once (clusters must fit in one GPC,
        so for sizes above 2 this is less than SMs / cluster size)."""
        n = check(driver().cuOccupancyMaxActiveClusters(self.func, self.config), "cuOccupancyMaxActiveClusters")
        return int(n)

    def __call__(self, params: ctypes.Structure, stream: int) -> None:
        # cuLaunchKernelEx copies the parameter bytes before returning, so `params` may be reused.
        launch, address, _keep = self.bind(params)
        launch(address, stream)

    def bind(self, params: ctypes.Structure) -> tuple:
        """(launch, address, keep) for launching `params` again and again: `launch(address, stream)`,
        with `keep` held as long as that may happen. The warm-call cache stores it so that a replay
        builds no argument array (about 0.5 us of a warm call)."""
        args = (ctypes.c_void_p * 1)(ctypes.addressof(params))
        return self.launch, ctypes.addressof(args), (params, args)

    def launch(self, kernel_params: int, stream: int) -> None:
        """Launches with `kernel_params`, the address of an array of pointers to each argument (for
        kernels that take more than the one struct, such as a peer's in tools/)."""
        handle = self._streams.get(stream)
        if handle is None:
            handle = self._streams[stream] = self._stream_type(stream)
        self.config.hStream = handle
        (err,) = self._launch(self.config, self.func, kernel_params, 0)
        if err != self._success:
            check((err,), f"cuLaunchKernelEx(grid={self.grid}, block={self.block}, smem={self.smem}, "
                          f"cluster={self.cluster})")


# --------------------------------------------------------------------------------------------- tensor maps
_tensor_maps: dict[tuple, bytes] = {}
_TENSOR_MAP_CACHE_LIMIT = 4096


@functools.lru_cache(maxsize=None)
def _tma_dtype(name: str):
    t = driver().CUtensorMapDataType
    return {"e4m3": t.CU_TENSOR_MAP_DATA_TYPE_UINT8, "u8": t.CU_TENSOR_MAP_DATA_TYPE_UINT8,
            "bf16": t.CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, "f16": t.CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
            "f32": t.CU_TENSOR_MAP_DATA_TYPE_FLOAT32}[name]


@functools.lru_cache(maxsize=None)
def _tma_swizzle(swizzle_bytes: int):
    s = driver().CUtensorMapSwizzle
    return {0: s.CU_TENSOR_MAP_SWIZZLE_NONE, 32: s.CU_TENSOR_MAP_SWIZZLE_32B,
            64: s.CU_TENSOR_MAP_SWIZZLE_64B, 128: s.CU_TENSOR_MAP_SWIZZLE_128B}[swizzle_bytes]


def tensor_map(dtype: str, address: int, dims: tuple, strides: tuple, box: tuple, swizzle: int = 0) -> bytes:
    """128 bytes of an encoded CUtensorMap. dims/box innermost first; strides in bytes for dims 1..n-1.
    Out-of-bounds elements read as zero and are not written."""
    key = (dtype, address, dims, strides, box, swizzle)
    encoded = _tensor_maps.get(key)
    if encoded is not None:
        return encoded
    d = driver()
    rank = len(dims)
    tmap = check(d.cuTensorMapEncodeTiled(
        _tma_dtype(dtype), rank, address, [d.cuuint64_t(x) for x in dims], [d.cuuint64_t(x) for x in strides],
        [d.cuuint32_t(x) for x in box], [d.cuuint32_t(1)] * rank,
        d.CUtensorMapInterleave.CU_TENSOR_MAP_INTERLEAVE_NONE, _tma_swizzle(swizzle),
        d.CUtensorMapL2promotion.CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
        d.CUtensorMapFloatOOBfill.CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE),
        f"cuTensorMapEncodeTiled(dtype={dtype}, dims={dims}, strides={strides}, box={box}, swizzle={swizzle})")
    encoded = ctypes.string_at(tmap.getPtr(), 128)
    if len(_tensor_maps) >= _TENSOR_MAP_CACHE_LIMIT:
        _tensor_maps.clear()
    _tensor_maps[key] = encoded
    return encoded
