"""deep_gemm.api.quant: FP8 block casting, checked block by block with explicit loops (CPU)."""

import pytest
import torch

from deep_gemm.api.quant import (
    per_block_cast_to_fp8,
    per_channel_cast_to_fp8,
    per_token_cast_to_fp8,
)
from deep_gemm.reference import dequantize_128x128, dequantize_1x128
from deep_gemm.testing import calc_diff

E4M3 = torch.float8_e4m3fn


def cdiv(a, b):
    return -(-a // b)


def rand(shape, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    # Rows of very different magnitude, so a scale computed over the wrong block shows.
    scale = torch.exp2(torch.randint(-6, 7, shape[:-1] + (1,), generator=g).float())
    return (torch.randn(shape, generator=g) * scale).to(dtype)


def expected_block(block):
    """sf and q for one block, by the documented formula, in float32."""
    amax = block.float().abs().max().clamp(min=1e-4)
    sf = amax / 448.0
    return sf, (block.float() / sf).to(E4M3)


def as_bits(q):
    return q.view(torch.uint8)


def assert_rows_quantized_exactly(x, q, sf):
    """Every 128-wide block of every row of x: its scale and its e4m3 bits, against expected_block.
    (Per-channel scaling is this check on the transposes.)"""
    for kb in range(cdiv(x.shape[1], 128)):
        cols = slice(kb * 128, (kb + 1) * 128)
        for r in range(x.shape[0]):
            sf_ref, q_ref = expected_block(x[r, cols])
            assert sf[r, kb] == sf_ref
            assert torch.equal(as_bits(q[r, cols]), as_bits(q_ref))


def assert_error_bound(x, deq, amax_per_element):
    """e4m3 keeps 3 mantissa bits: error <= |x|/16 for normals, <= 2**-10 * sf for subnormals."""
    bound = x.float().abs() / 16 + amax_per_element / 448 * 2 ** -10
    assert ((deq - x.float()).abs() <= bound * 1.0001).all()


# ------------------------------------------------------------------------ per token (1x128)

@pytest.mark.parametrize("m", [1, 7, 65])
@pytest.mark.parametrize("k", [128, 200, 384, 7168 + 64])
def test_per_token_exact(m, k):
    x = rand((m, k), seed=m * k)
    x_before = x.clone()
    q, sf = per_token_cast_to_fp8(x)
    assert q.dtype == E4M3 and q.shape == (m, k) and q.is_contiguous()
    assert sf.dtype == torch.float32 and sf.shape == (m, cdiv(k, 128))
    assert torch.equal(x, x_before)
    assert_rows_quantized_exactly(x, q, sf)
    deq = dequantize_1x128(q, sf)
    amax = x.abs().amax(dim=-1, keepdim=True)  # a looser per-row bound is enough here
    assert_error_bound(x, deq, amax)
    assert calc_diff(deq, x) < 1e-3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_per_token_round_trip_dtypes(dtype):
    x = rand((7, 384), seed=1, dtype=dtype)
    q, sf = per_token_cast_to_fp8(x)
    assert calc_diff(dequantize_1x128(q, sf), x.float()) < 1e-3
    # The largest element of each block lands on e4m3's largest finite value.
    blocks = q.float().view(7, 3, 128).abs().amax(-1)
    assert (blocks == 448).all()


def test_per_token_tail_uses_only_real_elements():
    # K = 200: the last block holds 72 real elements. Memory beyond them (here, the rest of
    # a wider tensor we slice) must not reach the scale, and the padding must not either.
    wide = rand((7, 256), seed=2)
    wide[:, 200:] = 1e6
    x = wide[:, :200]  # a non-contiguous view
    q, sf = per_token_cast_to_fp8(x)
    assert q.shape == (7, 200)
    tail_amax = x[:, 128:].abs().amax(-1)
    assert torch.equal(sf[:, 1], tail_amax / 448)
    assert torch.equal(sf[:, 0], x[:, :128].abs().amax(-1) / 448)
    # A huge value in the first block leaves the tail's scale alone.
    x2 = x.clone()
    x2[:, 3] = 1e5
    assert torch.equal(per_token_cast_to_fp8(x2)[1][:, 1], sf[:, 1])


def test_per_token_batched_matches_2d():
    x = rand((2, 3, 7, 200), seed=3, dtype=torch.bfloat16)
    q, sf = per_token_cast_to_fp8(x)
    assert q.shape == x.shape and sf.shape == (2, 3, 7, 2)
    for i in range(2):
        for j in range(3):
            q2, sf2 = per_token_cast_to_fp8(x[i, j])
            assert torch.equal(as_bits(q[i, j]), as_bits(q2)) and torch.equal(sf[i, j], sf2)


def test_zero_block_and_non_finite():
    x = torch.zeros(2, 256)
    x[1, 128:] = torch.randn(128)
    x[1, 130] = float("nan")
    q, sf = per_token_cast_to_fp8(x)
    assert (sf[0] == torch.tensor(1e-4) / 448).all()  # amax floor: no zero scale, no 0/0
    assert (q[0].float() == 0).all()
    assert sf[1, 1].isnan() and q[1, 128:].float().isnan().all()  # NaN poisons its block only
    assert sf[1, 0] == torch.tensor(1e-4) / 448


# ------------------------------------------------------------------------ per block (128x128)

@pytest.mark.parametrize("n,k", [(8, 128), (136, 200), (256, 384), (129, 7168 + 64)])
def test_per_block_exact(n, k):
    x = rand((n, k), seed=n + k, dtype=torch.bfloat16)
    q, sf = per_block_cast_to_fp8(x)
    assert q.dtype == E4M3 and q.shape == (n, k) and q.is_contiguous()
    assert sf.dtype == torch.float32 and sf.shape == (cdiv(n, 128), cdiv(k, 128))
    amax_full = torch.empty(n, k)
    for nb in range(cdiv(n, 128)):
        for kb in range(cdiv(k, 128)):
            rows, cols = slice(nb * 128, (nb + 1) * 128), slice(kb * 128, (kb + 1) * 128)
            sf_ref, q_ref = expected_block(x[rows, cols])
            assert sf[nb, kb] == sf_ref
            assert torch.equal(as_bits(q[rows, cols]), as_bits(q_ref))
            amax_full[rows, cols] = sf_ref * 448
    deq = dequantize_128x128(q, sf)
    assert_error_bound(x, deq, amax_full)
    assert calc_diff(deq, x.float()) < 1e-3


def test_per_block_tails_n136():
    # Row block 1 holds 8 real rows; a huge value just outside the view must not count.
    wide = rand((140, 200), seed=4)
    wide[136:, :] = 1e6
    x = wide[:136]
    q, sf = per_block_cast_to_fp8(x)
    assert sf.shape == (2, 2)
    assert sf[1, 1] == x[128:, 128:].abs().max() / 448
    assert sf[1, 0] == x[128:, :128].abs().max() / 448
    assert sf[0, 1] == x[:128, 128:].abs().max() / 448


def test_per_block_batched_matches_2d():
    x = rand((3, 136, 200), seed=5)
    q, sf = per_block_cast_to_fp8(x)
    assert q.shape == x.shape and sf.shape == (3, 2, 2)
    for i in range(3):
        q2, sf2 = per_block_cast_to_fp8(x[i])
        assert torch.equal(as_bits(q[i]), as_bits(q2)) and torch.equal(sf[i], sf2)
    assert calc_diff(dequantize_128x128(q, sf), x) < 1e-3


# ------------------------------------------------------------------------ per channel (k-grouped)

@pytest.mark.parametrize("k,m", [(128, 7), (200, 24), (0, 5), (1, 3)])
def test_per_channel_exact(k, m):
    x = rand((m, k), seed=k + m).T  # [K, M] view, K-outer like weight-gradient activations
    q, sf = per_channel_cast_to_fp8(x)
    assert q.shape == (k, m) and q.is_contiguous() and sf.shape == (cdiv(k, 128), m)
    assert_rows_quantized_exactly(x.T, q.T, sf.T)   # each column's 128-row blocks
    # Same blocks as 1x128 scaling of the transpose.
    q_t, sf_t = per_token_cast_to_fp8(x.T)
    assert torch.equal(as_bits(q), as_bits(q_t.T)) and torch.equal(sf, sf_t.T)
    if k:
        assert calc_diff(dequantize_1x128(q.T, sf.T).T, x) < 1e-3


# ------------------------------------------------------------------------ errors

@pytest.mark.parametrize("fn", [per_token_cast_to_fp8, per_block_cast_to_fp8, per_channel_cast_to_fp8])
def test_input_validation(fn):
    with pytest.raises(ValueError, match=r"^x: expected a tensor of at least 2 dimensions.*got 1-D"):
        fn(torch.randn(128))
    with pytest.raises(TypeError, match=r"^x: expected dtype .*got torch.int32"):
        fn(torch.ones(4, 128, dtype=torch.int32))
    with pytest.raises(TypeError, match=r"^x: expected dtype .*got torch.float8_e4m3fn"):
        fn(torch.zeros(4, 128, dtype=E4M3))
    with pytest.raises(TypeError, match=r"^x: expected a torch.Tensor, got list"):
        fn([[1.0] * 128])
