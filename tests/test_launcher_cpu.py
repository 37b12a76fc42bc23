"""The launch path without a GPU: what Launcher hands to cuLaunchKernelEx (the driver call itself
is replaced, the launch config objects are the real cuda-bindings ones)."""

import ctypes

import pytest

from deep_gemm.jit import runtime


class _NoGpuDriver:
    """cuda-bindings' driver module without the calls that need a driver library."""

    def __getattr__(self, name):
        from cuda.bindings import driver
        return getattr(driver, name)

    @staticmethod
    def cuGetErrorName(err):
        return 0, err.name.encode()

    @staticmethod
    def cuGetErrorString(err):
        return 0, b"(no driver here)"


@pytest.fixture
def launcher(monkeypatch):
    fake = _NoGpuDriver()
    monkeypatch.setattr(runtime, "driver", lambda: fake)
    calls = []
    lau = runtime.Launcher(func="kernel", grid=132, block=384, smem=1024, cluster=2)

    def fake_launch(config, func, kernel_params, extra):
        # Read the argument pointers now: the caller's array lives only for the call.
        first = ctypes.c_void_p.from_address(kernel_params).value
        calls.append((int(config.hStream), func, kernel_params, first, extra))
        return (lau._success,)

    lau._launch = fake_launch
    return lau, calls


def test_struct_launch_passes_one_pointer_to_the_params(launcher):
    lau, calls = launcher
    params = ctypes.c_uint64(7)
    lau(params, stream=0)
    lau(params, stream=0)
    assert [(s, f, first, extra) for s, f, _, first, extra in calls] == [(0, "kernel", ctypes.addressof(params), 0)] * 2
    assert len(lau._streams) == 1, "one stream wrapper per stream, built once"


def test_pointer_array_launch_passes_it_unchanged(launcher):
    lau, calls = launcher
    values = [ctypes.c_uint32(3), ctypes.c_uint64(9)]
    array = (ctypes.c_void_p * 2)(*[ctypes.addressof(v) for v in values])
    lau.launch(ctypes.addressof(array), stream=0)
    assert calls[0][2] == ctypes.addressof(array) and calls[0][3] == ctypes.addressof(values[0])


def test_failed_launch_raises_with_the_geometry(launcher):
    lau, _ = launcher
    from cuda.bindings import driver
    lau._launch = lambda *args: (driver.CUresult.CUDA_ERROR_INVALID_VALUE,)
    with pytest.raises(runtime.CudaError, match="grid=132, block=384, smem=1024, cluster=2"):
        lau(ctypes.c_uint64(0), stream=0)


def test_bound_launch_replays_the_same_params_without_a_new_array(launcher):
    """What the warm-call cache stores: the argument array is built once and points at params for
    as long as the binding is kept."""
    lau, calls = launcher
    params = ctypes.c_uint64(11)
    launch, address, keep = lau.bind(params)
    del params   # the binding alone keeps the parameter block alive
    launch(address, 0)
    launch(address, 5)
    assert [(s, first) for s, _, _, first, _ in calls] == [(0, ctypes.addressof(keep[0])), (5, ctypes.addressof(keep[0]))]
    assert calls[0][2] == calls[1][2] == address
    assert keep[0].value == 11
