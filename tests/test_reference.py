"""deep_gemm.reference against independent float64 formulas (CPU).

The expected values are built here with explicit per-element indexing (gather of the
scale for ``k // 128``) and Python loops over rows/groups, never with the helpers under
test, so a shared mistake cannot hide.
"""

import math

import pytest
import torch

from deep_gemm.reference import (
    dequantize_128x128,
    dequantize_1x128,
    fp8_gemm_nt,
    bf16_gemm_nt,
    k_grouped_fp8_gemm_nt_contiguous,
    m_grouped_fp8_gemm_nt_contiguous,
    m_grouped_fp8_gemm_nt_masked,
    normalize_recipe,
    wgrad_fp8_gemm_nt,
)
from deep_gemm.testing import calc_diff, count_bytes, rel_fro_error

E4M3 = torch.float8_e4m3fn


def cdiv(a, b):
    return -(-a // b)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def rand_fp8(shape, g):
    # Spread over e4m3's range so rounding, subnormals and large values all appear.
    x = torch.randn(shape, generator=g) * 32
    return x.clamp(-448, 448).to(E4M3)


def rand_sf(shape, g):
    # Positive scales spanning several binades, like real amax/448 values.
    return torch.exp2(torch.randint(-10, 4, shape, generator=g).float()) * (1 + torch.rand(shape, generator=g))


def deq_rows64(x, sf):
    """float64 x[..., r, k] * sf[..., r, k // 128] by explicit gather."""
    k = x.shape[-1]
    block = torch.arange(k) // 128
    return x.double() * sf.double()[..., block]


def deq_tiles64(x, sf):
    """float64 x[..., n, k] * sf[..., n // 128, k // 128] by explicit gather."""
    n, k = x.shape[-2:]
    rows, cols = torch.arange(n) // 128, torch.arange(k) // 128
    return x.double() * sf.double()[..., rows[:, None], cols[None, :]]


def assert_bf16_close(out, ref):
    """out (bf16) is ref rounded to bf16, up to one bf16 ulp and fp32 cancellation noise."""
    assert out.dtype == torch.bfloat16
    atol = 1e-5 * ref.abs().max().item() + 1e-30
    torch.testing.assert_close(out.double(), ref, rtol=2 ** -8, atol=atol)


def snapshot(*tensors):
    return [t.clone() for t in tensors]


def assert_unchanged(before, after):
    for b, a in zip(before, after):
        assert torch.equal(b.view(torch.uint8) if b.dtype == E4M3 else b,
                           a.view(torch.uint8) if a.dtype == E4M3 else a)


# ------------------------------------------------------------------ dequantization

@pytest.mark.parametrize("k", [1, 128, 192, 384])
def test_dequantize_1x128(k):
    g = gen(k)
    x = rand_fp8((2, 5, k), g)
    sf = rand_sf((2, 5, cdiv(k, 128)), g)
    out = dequantize_1x128(x, sf)
    assert out.dtype == torch.float32 and out.shape == x.shape
    expected = torch.empty(2, 5, k, dtype=torch.float64)
    for kk in range(k):
        expected[..., kk] = x[..., kk].double() * sf[..., kk // 128].double()
    torch.testing.assert_close(out.double(), expected, rtol=2 ** -23, atol=0)
    torch.testing.assert_close(dequantize_1x128(x, sf, torch.float64), expected, rtol=0, atol=0)


def test_dequantize_1x128_any_sf_strides():
    g = gen(1)
    x = rand_fp8((65, 200), g)
    sf = rand_sf((65, 2), g)
    mn_major = sf.T.contiguous().T  # column-major storage, same logical values
    assert mn_major.stride() == (1, 65)
    assert torch.equal(dequantize_1x128(x, mn_major), dequantize_1x128(x, sf))


@pytest.mark.parametrize("n,k", [(8, 128), (136, 192), (257, 384)])
def test_dequantize_128x128(n, k):
    g = gen(n + k)
    x = rand_fp8((n, k), g)
    sf = rand_sf((cdiv(n, 128), cdiv(k, 128)), g)
    expected = torch.empty(n, k, dtype=torch.float64)
    for nb in range(cdiv(n, 128)):
        for kb in range(cdiv(k, 128)):
            rows, cols = slice(nb * 128, (nb + 1) * 128), slice(kb * 128, (kb + 1) * 128)
            expected[rows, cols] = x[rows, cols].double() * sf[nb, kb].double()
    torch.testing.assert_close(dequantize_128x128(x, sf, torch.float64), expected, rtol=0, atol=0)
    torch.testing.assert_close(dequantize_128x128(x, sf).double(), expected, rtol=2 ** -23, atol=0)


def test_dequantize_errors():
    x = torch.zeros(4, 200, dtype=E4M3)
    with pytest.raises(ValueError, match=r"^sf: expected shape \(4, 2\)"):
        dequantize_1x128(x, torch.ones(4, 1))
    with pytest.raises(TypeError, match=r"^x_fp8: expected dtype"):
        dequantize_1x128(x.float(), torch.ones(4, 2))
    with pytest.raises(TypeError, match=r"^sf: expected dtype"):
        dequantize_1x128(x, torch.ones(4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"^sf: expected shape \(1, 2\)"):
        dequantize_128x128(x, torch.ones(4, 2))


# ------------------------------------------------------------------------ dense FP8

def fp8_case(m, n, k, recipe, seed):
    g = gen(seed)
    a, sfa = rand_fp8((m, k), g), rand_sf((m, cdiv(k, 128)), g)
    b = rand_fp8((n, k), g)
    sfb = rand_sf((cdiv(n, 128) if recipe == "1d2d" else n, cdiv(k, 128)), g)
    b64 = deq_tiles64(b, sfb) if recipe == "1d2d" else deq_rows64(b, sfb)
    ref = torch.einsum("mk,nk->mn", deq_rows64(a, sfa), b64)
    return a, sfa, b, sfb, ref


@pytest.mark.parametrize("m", [1, 7, 65])
@pytest.mark.parametrize("n", [8, 24, 136])
@pytest.mark.parametrize("k", [128, 192, 384, 7168 + 64])
def test_fp8_gemm_nt_float32(m, n, k):
    a, sfa, b, sfb, ref = fp8_case(m, n, k, "1d2d", seed=m * 10000 + n * 10 + k)
    before = snapshot(a, sfa, b, sfb)
    out = fp8_gemm_nt(a, sfa, b, sfb, out_dtype=torch.float32)
    assert out.dtype == torch.float32 and out.shape == (m, n)
    assert rel_fro_error(out, ref) < 1e-5
    assert_unchanged(before, [a, sfa, b, sfb])


@pytest.mark.parametrize("m,n,k", [(1, 8, 128), (7, 136, 192), (65, 24, 7168 + 64)])
def test_fp8_gemm_nt_bf16_and_float64(m, n, k):
    a, sfa, b, sfb, ref = fp8_case(m, n, k, "1d2d", seed=k)
    assert_bf16_close(fp8_gemm_nt(a, sfa, b, sfb), ref)
    exact = fp8_gemm_nt(a, sfa, b, sfb, out_dtype=torch.float64, compute_dtype=torch.float64)
    assert rel_fro_error(exact, ref) < 1e-13


@pytest.mark.parametrize("recipe", ["1d1d", (1, 1, 128), None])
def test_fp8_gemm_nt_1d1d(recipe):
    a, sfa, b, sfb, ref = fp8_case(7, 136, 192, "1d1d", seed=3)
    out = fp8_gemm_nt(a, sfa, b, sfb, out_dtype=torch.float32, recipe=recipe)
    assert rel_fro_error(out, ref) < 1e-5


def test_fp8_gemm_nt_recipe_inferred_1d2d():
    a, sfa, b, sfb, ref = fp8_case(7, 136, 192, "1d2d", seed=4)
    assert rel_fro_error(fp8_gemm_nt(a, sfa, b, sfb, out_dtype=torch.float32, recipe=None), ref) < 1e-5


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
def test_fp8_gemm_nt_accumulates_c(out_dtype):
    a, sfa, b, sfb, ref = fp8_case(65, 24, 384, "1d2d", seed=5)
    c = torch.randn(65, 24, generator=gen(6)) * 1000
    c_before = c.clone()
    out = fp8_gemm_nt(a, sfa, b, sfb, c=c, out_dtype=out_dtype)
    expected = ref + c.double()
    assert out.data_ptr() != c.data_ptr()
    assert torch.equal(c, c_before)
    if out_dtype == torch.float32:
        assert rel_fro_error(out, expected) < 1e-5
    else:
        assert_bf16_close(out, expected)


def test_fp8_gemm_nt_non_k_major_views():
    # The reference indexes logically, so transposed (MN-major) operands give the same result.
    a, sfa, b, sfb, ref = fp8_case(7, 24, 192, "1d2d", seed=7)
    a_t = a.T.contiguous().T
    b_t = b.view(torch.uint8).T.contiguous().T.view(E4M3)
    assert rel_fro_error(fp8_gemm_nt(a_t, sfa, b_t, sfb, out_dtype=torch.float32), ref) < 1e-5


def test_fp8_gemm_nt_nan_inf_propagate():
    a, sfa, b, sfb, _ = fp8_case(7, 24, 192, "1d2d", seed=8)
    a[2, 5] = float("nan")
    sfa[4, 1] = float("inf")
    out = fp8_gemm_nt(a, sfa, b, sfb, out_dtype=torch.float32)
    assert out[2].isnan().all()
    assert not out[4].isfinite().any()  # +-Inf, or NaN where Inf met a zero / an opposite Inf
    finite_rows = [r for r in range(7) if r not in (2, 4)]
    assert out[finite_rows].isfinite().all()


def test_fp8_gemm_nt_errors():
    a, sfa, b, sfb, _ = fp8_case(7, 24, 192, "1d2d", seed=9)
    with pytest.raises(TypeError, match=r"^a: expected dtype"):
        fp8_gemm_nt(a.float(), sfa, b, sfb)
    with pytest.raises(ValueError, match=r"^a: expected a 2-D tensor"):
        fp8_gemm_nt(a[None], sfa, b, sfb)
    with pytest.raises(ValueError, match=r"^b: expected shape \(24, 192\)"):
        fp8_gemm_nt(a, sfa, b[:, :128], sfb)
    with pytest.raises(ValueError, match=r"^sfa: expected shape \(7, 2\)"):
        fp8_gemm_nt(a, sfa[:, :1], b, sfb)
    with pytest.raises(ValueError, match=r"^sfb: expected shape \(1, 2\).*1d2d"):
        fp8_gemm_nt(a, sfa, b, torch.ones(24, 2))
    with pytest.raises(ValueError, match=r"^sfb: expected shape \(24, 2\).*1d1d"):
        fp8_gemm_nt(a, sfa, b, sfb, recipe="1d1d")
    with pytest.raises(ValueError, match=r"^c: expected shape \(7, 24\)"):
        fp8_gemm_nt(a, sfa, b, sfb, c=torch.zeros(24, 7))
    with pytest.raises(TypeError, match=r"^c: expected dtype"):
        fp8_gemm_nt(a, sfa, b, sfb, c=torch.zeros(7, 24, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match=r"^recipe:"):
        fp8_gemm_nt(a, sfa, b, sfb, recipe="2d2d")
    with pytest.raises(ValueError, match=r"^out_dtype:"):
        fp8_gemm_nt(a, sfa, b, sfb, out_dtype=torch.float16)
    with pytest.raises(ValueError, match=r"^compute_dtype:"):
        fp8_gemm_nt(a, sfa, b, sfb, compute_dtype=torch.bfloat16)


def test_normalize_recipe():
    assert normalize_recipe("1D2D") == "1d2d"
    assert normalize_recipe((1, 128, 128)) == "1d2d"
    assert normalize_recipe([1, 1, 128]) == "1d1d"
    with pytest.raises(ValueError, match=r"^recipe:"):
        normalize_recipe((128, 128, 128))


# ------------------------------------------------------------------------ dense BF16 and wgrad

@pytest.mark.parametrize("m,n,k", [(1, 8, 128), (7, 136, 192), (65, 24, 384)])
def test_bf16_gemm_nt(m, n, k):
    g = gen(m + n + k)
    a = torch.randn(m, k, generator=g).bfloat16()
    b = torch.randn(n, k, generator=g).bfloat16()
    c = torch.randn(m, n, generator=g)
    ref = a.double() @ b.double().T
    assert_bf16_close(bf16_gemm_nt(a, b), ref)
    assert rel_fro_error(bf16_gemm_nt(a, b, c=c, out_dtype=torch.float32), ref + c.double()) < 1e-5


def test_bf16_gemm_nt_inf_and_errors():
    g = gen(10)
    a = torch.randn(7, 24, generator=g).bfloat16()
    b = torch.rand(8, 24, generator=g).bfloat16() + 0.5  # positive: a +Inf in a stays +Inf
    a[1, 0] = float("inf")
    a[3, 3] = float("nan")
    out = bf16_gemm_nt(a, b, out_dtype=torch.float32)
    assert (out[1] == float("inf")).all()
    assert out[3].isnan().all()
    assert out[[0, 2, 4, 5, 6]].isfinite().all()
    with pytest.raises(TypeError, match=r"^b: expected dtype"):
        bf16_gemm_nt(a, b.float())
    with pytest.raises(ValueError, match=r"^b: expected shape"):
        bf16_gemm_nt(a, b[:, :16])


def test_wgrad_fp8_gemm_nt():
    a, sfa, b, sfb, ref = fp8_case(65, 136, 7168 + 64, "1d1d", seed=11)
    c = torch.randn(65, 136, generator=gen(12))
    c_before = c.clone()
    out = wgrad_fp8_gemm_nt(a, sfa, b, sfb, c)
    assert out.dtype == torch.float32
    assert torch.equal(c, c_before)
    assert rel_fro_error(out, ref + c.double()) < 1e-5
    assert rel_fro_error(wgrad_fp8_gemm_nt(a, sfa, b, sfb, None, compute_dtype=torch.float64), ref) < 1e-7
    with pytest.raises(ValueError, match=r"^sfb: expected shape \(136, 57\)"):
        wgrad_fp8_gemm_nt(a, sfa, b, torch.ones(2, 57), c)


# ------------------------------------------------------------------------ m-grouped contiguous

def grouped_b(g_count, n, k, g):
    return rand_fp8((g_count, n, k), g), rand_sf((g_count, cdiv(n, 128), cdiv(k, 128)), g)


@pytest.mark.parametrize("n,k", [(24, 192), (136, 128)])
def test_m_grouped_contiguous(n, k):
    g = gen(n + k)
    num_groups = 4
    # Aligned groups of uneven size with -1 padding, one empty group, plus a stray
    # unsorted tail: the reference must not rely on order or alignment.
    layout = [0] * 5 + [-1] * 3 + [2] * 9 + [-1] * 2 + [3] * 1 + [0, 3, 2, -1]
    m_indices = torch.tensor(layout, dtype=torch.int32)
    m = len(layout)
    a, sfa = rand_fp8((m, k), g), rand_sf((m, cdiv(k, 128)), g)
    b, sfb = grouped_b(num_groups, n, k, g)
    a[5, 0] = float("nan")  # a padding row: must not leak into the result

    a64 = deq_rows64(a, sfa)
    expected = torch.zeros(m, n, dtype=torch.float64)
    for r in range(m):
        grp = layout[r]
        if grp >= 0:
            expected[r] = deq_tiles64(b[grp], sfb[grp]) @ a64[r]

    before = snapshot(a, sfa, b, sfb, m_indices)
    out = m_grouped_fp8_gemm_nt_contiguous(a, sfa, b, sfb, m_indices, out_dtype=torch.float32)
    assert out.shape == (m, n) and out.dtype == torch.float32
    assert rel_fro_error(out, expected) < 1e-5
    assert (out[m_indices == -1] == 0).all()
    assert_unchanged(before, [a, sfa, b, sfb, m_indices])
    assert_bf16_close(m_grouped_fp8_gemm_nt_contiguous(a, sfa, b, sfb, m_indices), expected)
    exact = m_grouped_fp8_gemm_nt_contiguous(a, sfa, b, sfb, m_indices, out_dtype=torch.float64,
                                             compute_dtype=torch.float64)
    assert rel_fro_error(exact, expected) < 1e-13


def test_m_grouped_contiguous_all_padding_and_errors():
    g = gen(13)
    a, sfa = rand_fp8((6, 128), g), rand_sf((6, 1), g)
    b, sfb = grouped_b(2, 8, 128, g)
    out = m_grouped_fp8_gemm_nt_contiguous(a, sfa, b, sfb, torch.full((6,), -1, dtype=torch.int32))
    assert (out == 0).all() and out.shape == (6, 8)
    with pytest.raises(ValueError, match=r"^m_indices: expected values in \[-1, 2\)"):
        m_grouped_fp8_gemm_nt_contiguous(a, sfa, b, sfb, torch.tensor([0, 1, 2, 0, 0, 0], dtype=torch.int32))
    with pytest.raises(ValueError, match=r"^m_indices: expected values"):
        m_grouped_fp8_gemm_nt_contiguous(a, sfa, b, sfb, torch.tensor([0, -2, 1, 0, 0, 0], dtype=torch.int32))
    with pytest.raises(TypeError, match=r"^m_indices: expected dtype torch.int32"):
        m_grouped_fp8_gemm_nt_contiguous(a, sfa, b, sfb, torch.zeros(6, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"^m_indices: expected shape \(6,\)"):
        m_grouped_fp8_gemm_nt_contiguous(a, sfa, b, sfb, torch.zeros(5, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"^sfb: expected shape \(2, 1, 1\)"):
        m_grouped_fp8_gemm_nt_contiguous(a, sfa, b, sfb[:1], torch.zeros(6, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"^b: expected a 3-D tensor"):
        m_grouped_fp8_gemm_nt_contiguous(a, sfa, b[0], sfb, torch.zeros(6, dtype=torch.int32))


# ------------------------------------------------------------------------ m-grouped masked

@pytest.mark.parametrize("n,k", [(24, 192), (136, 384)])
def test_m_grouped_masked(n, k):
    g = gen(n * k)
    masked = [0, 3, 7, 1]
    num_groups, m_max = len(masked), 7
    a, sfa = rand_fp8((num_groups, m_max, k), g), rand_sf((num_groups, m_max, cdiv(k, 128)), g)
    b, sfb = grouped_b(num_groups, n, k, g)
    a[0, 0, 0] = float("nan")  # masked out: must give 0, not NaN
    sfa[1, 5, 0] = float("inf")  # masked out as well
    masked_m = torch.tensor(masked, dtype=torch.int32)

    expected = torch.zeros(num_groups, m_max, n, dtype=torch.float64)
    for grp in range(num_groups):
        b64 = deq_tiles64(b[grp], sfb[grp])
        for r in range(masked[grp]):
            expected[grp, r] = b64 @ deq_rows64(a[grp, r], sfa[grp, r])

    before = snapshot(a, sfa, b, sfb, masked_m)
    out = m_grouped_fp8_gemm_nt_masked(a, sfa, b, sfb, masked_m, out_dtype=torch.float32)
    assert out.shape == (num_groups, m_max, n)
    assert out.isfinite().all()
    assert rel_fro_error(out, expected) < 1e-5
    assert_unchanged(before, [a, sfa, b, sfb, masked_m])
    assert_bf16_close(m_grouped_fp8_gemm_nt_masked(a, sfa, b, sfb, masked_m), expected)


def test_m_grouped_masked_errors():
    g = gen(14)
    a, sfa = rand_fp8((2, 4, 128), g), rand_sf((2, 4, 1), g)
    b, sfb = grouped_b(2, 8, 128, g)
    with pytest.raises(ValueError, match=r"^masked_m: expected values in \[0, 4\]"):
        m_grouped_fp8_gemm_nt_masked(a, sfa, b, sfb, torch.tensor([1, 5], dtype=torch.int32))
    with pytest.raises(ValueError, match=r"^masked_m: expected shape \(2,\)"):
        m_grouped_fp8_gemm_nt_masked(a, sfa, b, sfb, torch.tensor([1, 2, 3], dtype=torch.int32))
    b3, sfb3 = grouped_b(3, 8, 128, g)
    with pytest.raises(ValueError, match=r"^b: expected 2 groups"):
        m_grouped_fp8_gemm_nt_masked(a, sfa, b3, sfb3, torch.tensor([1, 2], dtype=torch.int32))
    with pytest.raises(ValueError, match=r"^sfa: expected shape \(2, 4, 1\)"):
        m_grouped_fp8_gemm_nt_masked(a, sfa[:, :3], b, sfb, torch.tensor([1, 2], dtype=torch.int32))


# ------------------------------------------------------------------------ k-grouped

def k_grouped_case(sizes, m, n, seed):
    """Per-group [k_i, M] / [k_i, N] operands and their flat concatenation."""
    g = gen(seed)
    groups = []
    for k in sizes:
        a_i, sfa_i = rand_fp8((k, m), g), rand_sf((cdiv(k, 128), m), g)
        b_i, sfb_i = rand_fp8((k, n), g), rand_sf((cdiv(k, 128), n), g)
        groups.append((a_i, sfa_i, b_i, sfb_i))
    flat = [torch.cat([grp[j].reshape(-1) for grp in groups]) for j in (0, 2)]
    sfs = [torch.cat([grp[j] for grp in groups]) for j in (1, 3)]
    return groups, flat[0], sfs[0], flat[1], sfs[1]


def test_k_grouped_contiguous():
    sizes, m, n = [128, 0, 200, 64, 384], 7, 24
    groups, a, sfa, b, sfb = k_grouped_case(sizes, m, n, seed=15)
    expected = torch.zeros(len(sizes), m, n, dtype=torch.float64)
    for i, (a_i, sfa_i, b_i, sfb_i) in enumerate(groups):
        block = torch.arange(sizes[i]) // 128
        a64 = a_i.double() * sfa_i.double()[block, :]  # [k_i, M], scale per (k // 128, m)
        b64 = b_i.double() * sfb_i.double()[block, :]
        expected[i] = torch.einsum("km,kn->mn", a64, b64)

    before = snapshot(a, sfa, b, sfb)
    out = k_grouped_fp8_gemm_nt_contiguous(a, sfa, b, sfb, sizes)
    assert out.shape == (len(sizes), m, n) and out.dtype == torch.float32
    assert rel_fro_error(out, expected) < 1e-5
    assert (out[1] == 0).all()
    assert_unchanged(before, [a, sfa, b, sfb])

    c = torch.randn(len(sizes), m, n, generator=gen(16))
    c_before = c.clone()
    out_c = k_grouped_fp8_gemm_nt_contiguous(a, sfa, b, sfb, torch.tensor(sizes, dtype=torch.int32), c=c,
                                             compute_dtype=torch.float64)
    assert torch.equal(c, c_before)
    assert torch.equal(out_c[1], c[1])
    assert rel_fro_error(out_c, expected + c.double()) < 1e-7


def test_k_grouped_contiguous_errors():
    sizes = [128, 200]
    _, a, sfa, b, sfb = k_grouped_case(sizes, 8, 16, seed=17)
    with pytest.raises(ValueError, match=r"^a: expected shape \(2624,\)"):
        k_grouped_fp8_gemm_nt_contiguous(a[:-8], sfa, b, sfb, sizes)
    with pytest.raises(ValueError, match=r"^sfa: expected shape \(2, 8\).*got \(3, 8\)"):
        k_grouped_fp8_gemm_nt_contiguous(a[:-8 * 72], sfa, b[:-16 * 72], sfb, [128, 128])
    with pytest.raises(ValueError, match=r"^batch_sizes: expected non-negative"):
        k_grouped_fp8_gemm_nt_contiguous(a, sfa, b, sfb, [400, -72])
    with pytest.raises(ValueError, match=r"^batch_sizes: expected a 1-D integer tensor"):
        k_grouped_fp8_gemm_nt_contiguous(a, sfa, b, sfb, torch.tensor([128.0, 200.0]))
    with pytest.raises(ValueError, match=r"^a: expected a 1-D tensor"):
        k_grouped_fp8_gemm_nt_contiguous(a.view(-1, 8), sfa, b, sfb, sizes)
    with pytest.raises(ValueError, match=r"^c: expected shape \(2, 8, 16\)"):
        k_grouped_fp8_gemm_nt_contiguous(a, sfa, b, sfb, sizes, c=torch.zeros(8, 16))


# ------------------------------------------------------------------------ testing.numeric

def test_numeric_helpers():
    x = torch.randn(64, 32, generator=gen(18))
    assert calc_diff(x, x) == pytest.approx(0.0, abs=1e-15)
    assert calc_diff(x, -x) == pytest.approx(2.0)
    assert calc_diff(torch.zeros(3), torch.zeros(3)) == 0.0
    assert isinstance(calc_diff(x, x * 1.01), float)
    y = x * 1.01
    expected = 1 - 2 * (x.double() * y.double()).sum() / (x.double() ** 2 + y.double() ** 2).sum()
    assert calc_diff(x, y) == pytest.approx(float(expected), rel=1e-12)
    assert rel_fro_error(y, x) == pytest.approx(0.01, rel=1e-4)  # 1.01 is inexact in float32
    assert rel_fro_error(torch.zeros(2), torch.zeros(2)) == 0.0
    assert rel_fro_error(torch.ones(2), torch.zeros(2)) == math.inf
    assert count_bytes(x, None, (x.bfloat16(), [torch.zeros(3, dtype=torch.int32)])) == 64 * 32 * 6 + 12
    with pytest.raises(ValueError, match=r"^y: expected shape"):
        calc_diff(x, x[:3])
    with pytest.raises(TypeError, match=r"^tensors:"):
        count_bytes(x, 3)
