"""Input validation of the dense FP8 GEMM API on CPU tensors (DESIGN.md section 6): every bad input
raises TypeError/ValueError naming the argument, before the CPU fallback would run. Also the fallback
itself, the SM-count setters and the TMA operand checks the GPU path applies.
"""

import re
import warnings

import pytest
import torch

import deep_gemm
from deep_gemm import reference
from deep_gemm.api import checks, device

FP8 = torch.float8_e4m3fn
M, N, K = 40, 200, 320          # none a multiple of 128: two B scale rows, three K blocks
KB, NB = 3, 2


def fp8(*shape):
    return (torch.randn(*shape) * 4).to(FP8)


def inputs(m=M, n=N, k=K, out=torch.bfloat16):
    kb, nb = -(-k // 128), -(-n // 128)
    a = (fp8(m, k), torch.rand(m, kb) + 0.5)
    b = (fp8(n, k), torch.rand(nb, kb) + 0.5)
    d = torch.empty(m, n, dtype=out)
    return a, b, d


@pytest.fixture(autouse=True)
def _clean_state(monkeypatch):
    monkeypatch.delenv("DG_DISABLE_CPU_FALLBACK", raising=False)
    monkeypatch.setattr(device, "_num_sms_override", None)


def raises(exc, name):
    """pytest.raises matching the argument's name as the message's subject."""
    return pytest.raises(exc, match=re.escape(name))


def call(a, b, d, **kw):
    # Errors must come before the fallback runs, so silence its warning rather than expect it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        deep_gemm.fp8_gemm_nt(a, b, d, **kw)


# --------------------------------------------------------------------------------------------- structure and dtypes

@pytest.mark.parametrize("bad", [None, torch.zeros(2), (fp8(M, K),), [fp8(M, K)] * 3, "ab"])
def test_a_not_a_pair(bad):
    _, b, d = inputs()
    with raises(TypeError, "a: expected a (tensor, scale_factors) pair"):
        call(bad, b, d)


@pytest.mark.parametrize("bad", [None, fp8(N, K), (fp8(N, K),)])
def test_b_not_a_pair(bad):
    a, _, d = inputs()
    with raises(TypeError, "b: expected a (tensor, scale_factors) pair"):
        call(a, bad, d)


def test_pair_as_list_is_accepted():
    a, b, d = inputs()
    call(list(a), list(b), d)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.uint8, torch.int8, torch.float8_e5m2])
def test_a_dtype(dtype):
    (x, sfa), b, d = inputs()
    with raises(TypeError, "a[0] (A): expected dtype torch.float8_e4m3fn"):
        call((x.float().to(dtype), sfa), b, d)


def test_a_not_a_tensor():
    (x, sfa), b, d = inputs()
    with raises(TypeError, "a[0] (A): expected a torch.Tensor, got list"):
        call(([[1.0]], sfa), b, d)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64, torch.int32, torch.uint8])
def test_sfa_dtype(dtype):
    (x, sfa), b, d = inputs()
    with raises(TypeError, "a[1] (sfa): expected dtype torch.float32"):
        call((x, sfa.to(dtype)), b, d)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float8_e5m2])
def test_b_dtype(dtype):
    a, (y, sfb), d = inputs()
    with raises(TypeError, "b[0] (B): expected dtype torch.float8_e4m3fn"):
        call(a, (y.float().to(dtype), sfb), d)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_sfb_dtype(dtype):
    a, (y, sfb), d = inputs()
    with raises(TypeError, "b[1] (sfb): expected dtype torch.float32"):
        call(a, (y, sfb.to(dtype)), d)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64, FP8, torch.int32])
def test_d_dtype(dtype):
    a, b, _ = inputs()
    with raises(TypeError, "d: expected dtype torch.bfloat16 or torch.float32"):
        call(a, b, torch.empty(M, N).to(dtype))


def test_d_not_a_tensor():
    a, b, _ = inputs()
    with raises(TypeError, "d: expected a torch.Tensor"):
        call(a, b, None)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_c_dtype(dtype):
    a, b, d = inputs(out=torch.float32)
    with raises(TypeError, "c: expected dtype torch.float32"):
        call(a, b, d, c=torch.zeros(M, N, dtype=dtype))


def test_c_with_bf16_d():
    a, b, d = inputs(out=torch.bfloat16)
    with raises(TypeError, "d: accumulating with c needs an FP32 d"):
        call(a, b, d, c=torch.zeros(M, N))


# --------------------------------------------------------------------------------------------- ranks and shapes

@pytest.mark.parametrize("which, name", [(0, "a[0] (A)"), (1, "a[1] (sfa)"), (2, "b[0] (B)"), (3, "b[1] (sfb)"),
                                         (4, "d")])
@pytest.mark.parametrize("rank", [1, 3])
def test_wrong_rank(which, name, rank):
    (x, sfa), (y, sfb), d = inputs()
    ts = [x, sfa, y, sfb, d]
    t = ts[which]
    ts[which] = t.reshape(-1) if rank == 1 else t.unsqueeze(0)
    with raises(ValueError, f"{name}: expected a 2-D tensor"):
        call((ts[0], ts[1]), (ts[2], ts[3]), ts[4])


def test_c_wrong_rank():
    a, b, d = inputs(out=torch.float32)
    with raises(ValueError, "c: expected a 2-D tensor"):
        call(a, b, d, c=torch.zeros(1, M, N))


def test_b_k_mismatch():
    a, _, d = inputs()
    b = (fp8(N, K + 16), torch.ones(NB, KB))
    with raises(ValueError, f"b[0] (B): expected shape ({N}, {K})"):
        call(a, b, d)


@pytest.mark.parametrize("shape", [(M, KB + 1), (M, KB - 1), (M + 1, KB), (KB, M)])
def test_sfa_shape(shape):
    (x, _), b, d = inputs()
    with raises(ValueError, f"a[1] (sfa): expected shape ({M}, {KB})"):
        call((x, torch.ones(*shape)), b, d)


@pytest.mark.parametrize("shape", [(N, KB), (NB, KB + 1), (NB + 1, KB), (KB, NB)])
def test_sfb_shape(shape):
    # (N, KB) is the 1D1D (per-row) layout, which this recipe does not take.
    a, (y, _), d = inputs()
    with raises(ValueError, f"b[1] (sfb): expected shape ({NB}, {KB})"):
        call(a, (y, torch.ones(*shape)), d)


@pytest.mark.parametrize("shape", [(M, N + 1), (M + 1, N), (N, M)])
def test_d_shape(shape):
    a, b, _ = inputs()
    with raises(ValueError, f"d: expected shape ({M}, {N})"):
        call(a, b, torch.empty(*shape, dtype=torch.bfloat16))


@pytest.mark.parametrize("shape", [(M, N + 1), (1, N), (N, M)])
def test_c_shape(shape):
    a, b, d = inputs(out=torch.float32)
    with raises(ValueError, f"c: expected shape ({M}, {N})"):
        call(a, b, d, c=torch.zeros(*shape))


@pytest.mark.parametrize("recipe", [(1, 1, 128), (1, 128, 64), (128, 128, 128)])
def test_recipe_rejected(recipe):
    a, b, d = inputs()
    with raises(ValueError, f"recipe: this function implements (1, 128, 128)") as info:
        call(a, b, d, recipe=recipe)
    assert str(recipe) in str(info.value)
    if recipe == (1, 1, 128):
        assert "wgrad_gemm_fp8_fp8_fp32_nt" in str(info.value)   # says where per-row weight scales go


def test_recipe_not_a_sequence():
    a, b, d = inputs()
    with raises(TypeError, "recipe"):
        call(a, b, d, recipe=5)


@pytest.mark.parametrize("recipe", [None, (1, 128, 128), [1, 128, 128]])
def test_recipe_accepted(recipe):
    a, b, d = inputs()
    call(a, b, d, recipe=recipe)


# --------------------------------------------------------------------------------------------- devices and aliasing

# (names are matched literally: `raises` escapes them)
@pytest.mark.parametrize("which, name", [(1, "a[1] (sfa)"), (2, "b[0] (B)"), (3, "b[1] (sfb)"), (4, "d"), (5, "c")])
def test_tensors_on_different_devices(which, name):
    # "meta" stands in for a second device: same dtype and shape rules, different device.
    (x, sfa), (y, sfb), d = inputs(out=torch.float32)
    ts = [x, sfa, y, sfb, d, torch.zeros(M, N)]
    ts[which] = ts[which].to("meta")
    with raises(ValueError, f"{name}: expected a tensor on cpu"):
        call((ts[0], ts[1]), (ts[2], ts[3]), ts[4], c=ts[5])


def _aliasing_buffers():
    """A and d carved out of one byte buffer."""
    buf = torch.zeros(M * K + 2 * M * N, dtype=torch.uint8)
    a = buf[:M * K].view(FP8).view(M, K)
    return buf, a


def test_d_aliasing_a():
    buf, x = _aliasing_buffers()
    d = buf[: 2 * M * N].view(torch.bfloat16).view(M, N)     # starts where A starts
    _, b, _ = inputs()
    with raises(ValueError, "d: overlaps the memory of a[0] (A)"):
        call((x, torch.ones(M, KB)), b, d)


def test_d_partly_overlapping_a():
    buf, x = _aliasing_buffers()
    d = buf[M * K - 2: M * K - 2 + 2 * M * N].view(torch.bfloat16).view(M, N)   # shares A's last 2 bytes
    _, b, _ = inputs()
    with raises(ValueError, "d: overlaps the memory of a[0] (A)"):
        call((x, torch.ones(M, KB)), b, d)


def test_d_adjacent_to_a_is_fine():
    buf, x = _aliasing_buffers()
    d = buf[M * K: M * K + 2 * M * N].view(torch.bfloat16).view(M, N)
    _, b, _ = inputs()
    call((x, torch.ones(M, KB)), b, d)


@pytest.mark.parametrize("which, name", [(1, "a[1] (sfa)"), (3, "b[1] (sfb)")])
def test_d_aliasing_scale_factors(which, name):
    (x, sfa), (y, sfb), _ = inputs(out=torch.float32)
    ts = [x, sfa, y, sfb]
    big = torch.zeros(M * N + 64)
    d = big[: M * N].view(M, N)
    ts[which] = big[: ts[which].numel()].view(ts[which].shape)
    with raises(ValueError, f"d: overlaps the memory of {name}"):
        call((ts[0], ts[1]), (ts[2], ts[3]), d)


def test_c_may_be_d():
    # Accumulating in place (c is d) is the documented way to do D += A B^T.
    a, b, d = inputs(out=torch.float32)
    d.normal_()
    expected = reference.fp8_gemm_nt(*a, *b, c=d.clone(), out_dtype=torch.float32)
    call(a, b, d, c=d)
    torch.testing.assert_close(d, expected)


# --------------------------------------------------------------------------------------------- the v1 name

def test_v1_rejects_non_bf16_out():
    a, b, _ = inputs()
    with raises(TypeError, "out: expected dtype torch.bfloat16"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            deep_gemm.gemm_fp8_fp8_bf16_nt(a, b, torch.empty(M, N))


@pytest.mark.parametrize("case, exc", [("lhs", TypeError), ("rhs", TypeError), ("out", ValueError)])
def test_v1_validates(case, exc):
    a, b, d = inputs()
    args = {"lhs": a, "rhs": b, "out": d}
    args[case] = {"lhs": fp8(M, K), "rhs": (fp8(N, K),), "out": torch.empty(M, N + 8, dtype=torch.bfloat16)}[case]
    with pytest.raises(exc):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            deep_gemm.gemm_fp8_fp8_bf16_nt(args["lhs"], args["rhs"], args["out"])


@pytest.mark.parametrize("case", ["lhs", "rhs", "out"])
def test_v1_errors_name_v1_arguments(case):
    a, b, d = inputs()
    args = {"lhs": a, "rhs": b, "out": d}
    args[case] = {"lhs": fp8(M, K), "rhs": (fp8(N, K),), "out": torch.empty(M, N + 8, dtype=torch.bfloat16)}[case]
    with pytest.raises((TypeError, ValueError), match=rf"^{case}\b"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            deep_gemm.gemm_fp8_fp8_bf16_nt(args["lhs"], args["rhs"], args["out"])


# --------------------------------------------------------------------------------------------- the CPU fallback

@pytest.mark.parametrize("out", [torch.bfloat16, torch.float32])
def test_cpu_fallback_matches_reference_and_warns_once(out, monkeypatch):
    monkeypatch.setattr(device, "_warned", set())
    a, b, d = inputs(out=out)
    with pytest.warns(UserWarning, match="reference path") as record:
        deep_gemm.fp8_gemm_nt(a, b, d)
    assert len(record) == 1
    assert record[0].filename == __file__, "the warning should point at the caller's line"
    expected = reference.fp8_gemm_nt(*a, *b, out_dtype=out)
    assert d.dtype == out
    torch.testing.assert_close(d, expected, rtol=0, atol=0)

    with warnings.catch_warnings():
        warnings.simplefilter("error")        # a second warning would raise here
        deep_gemm.fp8_gemm_nt(a, b, d)
        deep_gemm.gemm_fp8_fp8_bf16_nt(a, b, torch.empty(M, N, dtype=torch.bfloat16)) if out == torch.bfloat16 else None


def test_cpu_fallback_accumulates_c():
    a, b, d = inputs(out=torch.float32)
    c = torch.randn(M, N)
    call(a, b, d, c=c)
    torch.testing.assert_close(d, reference.fp8_gemm_nt(*a, *b, c=c, out_dtype=torch.float32), rtol=0, atol=0)


def test_cpu_fallback_takes_mn_major_sfa():
    (x, sfa), b, d = inputs()
    aligned = deep_gemm.get_mn_major_tma_aligned_tensor(sfa)
    call((x, aligned), b, d)
    torch.testing.assert_close(d, reference.fp8_gemm_nt(x, sfa, *b), rtol=0, atol=0)


def test_v1_fallback_matches_reference(monkeypatch):
    monkeypatch.setattr(device, "_warned", set())
    a, b, d = inputs()
    with pytest.warns(UserWarning, match="reference path") as record:
        deep_gemm.gemm_fp8_fp8_bf16_nt(a, b, d)
    assert record[0].filename == __file__, "the warning should point at the caller's line"
    torch.testing.assert_close(d, reference.fp8_gemm_nt(*a, *b), rtol=0, atol=0)


def test_disable_cpu_fallback(monkeypatch):
    monkeypatch.setenv("DG_DISABLE_CPU_FALLBACK", "1")
    a, b, d = inputs()
    d.fill_(7)
    with pytest.raises(RuntimeError, match="DG_DISABLE_CPU_FALLBACK"):
        deep_gemm.fp8_gemm_nt(a, b, d)
    assert (d == 7).all(), "nothing written when the call fails"


def test_validation_runs_before_the_fallback_switch(monkeypatch):
    monkeypatch.setenv("DG_DISABLE_CPU_FALLBACK", "1")
    a, b, _ = inputs()
    with raises(ValueError, "d: expected shape"):
        deep_gemm.fp8_gemm_nt(a, b, torch.empty(M, N + 1, dtype=torch.bfloat16))


@pytest.mark.parametrize("m, n", [(0, N), (M, 0), (0, 0)])
def test_empty_outputs(m, n, monkeypatch):
    # Nothing to compute: no error, no warning, even with the fallback disabled.
    monkeypatch.setenv("DG_DISABLE_CPU_FALLBACK", "1")
    a, b, d = inputs(m=m, n=n)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        deep_gemm.fp8_gemm_nt(a, b, d)
        deep_gemm.gemm_fp8_fp8_bf16_nt(a, b, d)
    assert d.shape == (m, n)


def test_k_zero_on_cpu():
    # An empty reduction: D = 0, or D = C when accumulating.
    a, b, d = inputs(k=0)
    d.fill_(5)
    call(a, b, d)
    assert (d == 0).all()
    a, b, d = inputs(k=0, out=torch.float32)
    c = torch.randn(M, N)
    call(a, b, d, c=c)
    assert torch.equal(d, c)


def test_empty_output_still_validated():
    a, b, _ = inputs(m=0)
    with raises(ValueError, "d: expected shape (0, 200)"):
        call(a, b, torch.empty(1, N, dtype=torch.bfloat16))


# --------------------------------------------------------------------------------------------- SM count

@pytest.mark.parametrize("bad", [0, -1, True, False, 1.5, "132", None])
def test_set_num_sms_rejects(bad):
    with raises(ValueError, "num_sms"):
        deep_gemm.set_num_sms(bad)
    assert device._num_sms_override is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU default")
def test_num_sms_default_and_override():
    assert deep_gemm.get_num_sms() == 132
    deep_gemm.set_num_sms(78)
    assert deep_gemm.get_num_sms() == 78
    # (the autouse fixture restores the override)


# --------------------------------------------------------------------------------------------- TMA operand checks

def test_k_major_operand_accepts_contiguous():
    checks.k_major_operand(fp8(64, 256), "a[0] (A)")


def test_k_not_multiple_of_16_says_how_to_pad():
    with raises(ValueError, "a[0] (A): K=200 is not a multiple of 16") as info:
        checks.k_major_operand(fp8(64, 200), "a[0] (A)")
    assert "Pad K to 208" in str(info.value)


def test_non_unit_stride_along_k():
    x = fp8(256, 64).t()                     # [64, 256] with stride 1 along M
    with raises(ValueError, "b[0] (B): expected K-major storage") as info:
        checks.k_major_operand(x, "b[0] (B)")
    assert ".contiguous()" in str(info.value)


def test_row_stride_not_16_byte_multiple():
    x = fp8(64, 264)[:, :256]                # rows 264 bytes apart
    with raises(ValueError, "a[0] (A): row stride 264"):
        checks.k_major_operand(x, "a[0] (A)")


def test_misaligned_pointer():
    buf = torch.zeros(64 * 256 + 16, dtype=torch.uint8)
    x = buf[1: 1 + 64 * 256].view(FP8).view(64, 256)   # every row is 16-byte strided, the start is not
    assert x.data_ptr() % 16 == (buf.data_ptr() + 1) % 16 != 0
    with raises(ValueError, "a[0] (A): data pointer is not 16-byte aligned") as info:
        checks.k_major_operand(x, "a[0] (A)")
    assert ".clone()" in str(info.value)


# --------------------------------------------------------------------------------------------- warm-call cache

def test_warm_cache_replays_only_an_identical_signature(monkeypatch):
    """The warm path launches the remembered plan for exactly the same tensors (address, shape,
    strides, dtype, extra arguments) and for nothing else."""
    from deep_gemm.api import calls

    class FakePlan:
        def __init__(self):
            self.launches = []

        def bound_launch(self, params):
            return (lambda address, stream: self.launches.append((address, stream))), id(params), 0, params

    monkeypatch.setattr(calls, "_warm", {})
    monkeypatch.setattr(calls, "current_stream", lambda dev: f"stream of {dev}")
    a, b, d = inputs()
    plan = FakePlan()
    key, launched = calls.try_replay(a, b, d, "extra", 7)
    assert key is not None and not launched
    params = ["params"]
    calls.remember(key, plan, params)
    assert calls.try_replay(a, b, d, "extra", 7) == (key, True)
    assert plan.launches == [(id(params), "stream of 0")]
    # any difference (another extra argument, another output view, a list instead of a tuple) misses
    assert calls.try_replay(a, b, d, "extra", 8)[1] is False
    assert calls.try_replay(a, b, d[:, : N - 8], "extra", 7)[1] is False
    assert calls.try_replay(list(a), b, d, "extra", 7) == (None, False)
    assert plan.launches == [(id(params), "stream of 0")]
