"""M-grouped GEMM API on the CPU: every validation error names its argument, and the reference
fallback computes the valid rows."""

import pytest
import torch

import deep_gemm
from deep_gemm import reference
from deep_gemm.testing import rel_fro_error

G, N, K, M_MAX = 3, 136, 256, 64


pytestmark = pytest.mark.usefixtures("quiet_warnings")


def contiguous_inputs():
    m_indices = torch.tensor([0] * 128 + [-1] * 128 + [2] * 100 + [-1] * 28, dtype=torch.int32)
    a = deep_gemm.per_token_cast_to_fp8(torch.randn(m_indices.numel(), K))
    b = deep_gemm.per_block_cast_to_fp8(torch.randn(G, N, K))
    d = torch.full((m_indices.numel(), N), float("nan"), dtype=torch.bfloat16)
    return a, b, d, m_indices


def masked_inputs():
    a = deep_gemm.per_token_cast_to_fp8(torch.randn(G, M_MAX, K))
    b = deep_gemm.per_block_cast_to_fp8(torch.randn(G, N, K))
    d = torch.full((G, M_MAX, N), float("nan"), dtype=torch.bfloat16)
    return a, b, d, torch.tensor([5, 0, 64], dtype=torch.int32)


def test_contiguous_fallback_matches_reference():
    a, b, d, m_indices = contiguous_inputs()
    deep_gemm.m_grouped_fp8_gemm_nt_contiguous(a, b, d, m_indices)
    ref = reference.m_grouped_fp8_gemm_nt_contiguous(*a, *b, m_indices, out_dtype=torch.float64,
                                                     compute_dtype=torch.float64)
    valid = m_indices >= 0
    assert rel_fro_error(d[valid].double(), ref[valid]) < 4e-3


def test_masked_fallback_computes_valid_rows():
    a, b, d, masked_m = masked_inputs()
    deep_gemm.m_grouped_fp8_gemm_nt_masked(a, b, d, masked_m, 32)
    ref = reference.m_grouped_fp8_gemm_nt_masked(*a, *b, masked_m, out_dtype=torch.float64,
                                                 compute_dtype=torch.float64)
    rows = torch.arange(M_MAX)[None] < masked_m[:, None]
    assert rel_fro_error(d[rows].double(), ref[rows]) < 4e-3
    assert torch.isnan(d[~rows]).all()


def test_aliases_call_the_same_function():
    assert deep_gemm.fp8_m_grouped_gemm_nt_masked is deep_gemm.m_grouped_fp8_gemm_nt_masked
    a, b, d, masked_m = masked_inputs()
    d2 = d.clone()
    deep_gemm.m_grouped_fp8_gemm_nt_masked(a, b, d, masked_m, 32)
    deep_gemm.m_grouped_gemm_fp8_fp8_bf16_nt_masked(a, b, d2, masked_m, 32)
    assert torch.equal(d.nan_to_num(), d2.nan_to_num())


@pytest.mark.parametrize("case, exc, match", [
    ("m_indices_dtype", TypeError, "m_indices"),
    ("m_indices_len", ValueError, "m_indices"),
    ("b_rank", ValueError, r"b\[0\]"),
    ("sfb_shape", ValueError, r"b\[1\]"),
    ("d_shape", ValueError, "^d"),
    ("d_dtype", TypeError, "^d"),
    ("k_mismatch", ValueError, r"a\[0\]"),
    ("recipe", ValueError, "recipe"),
])
def test_contiguous_errors(case, exc, match):
    a, b, d, m_indices = contiguous_inputs()
    kwargs = {}
    if case == "m_indices_dtype":
        m_indices = m_indices.long()
    elif case == "m_indices_len":
        m_indices = m_indices[:-1]
    elif case == "b_rank":
        b = (b[0][0], b[1])
    elif case == "sfb_shape":
        b = (b[0], b[1][:, :1])
    elif case == "d_shape":
        d = d[:, :-8]
    elif case == "d_dtype":
        d = d.float()
    elif case == "k_mismatch":
        a = deep_gemm.per_token_cast_to_fp8(torch.randn(d.shape[0], K + 128))
    elif case == "recipe":
        kwargs["recipe"] = (1, 1, 128)
    with pytest.raises(exc, match=match):
        deep_gemm.m_grouped_fp8_gemm_nt_contiguous(a, b, d, m_indices, **kwargs)


@pytest.mark.parametrize("case, exc, match", [
    ("masked_len", ValueError, "masked_m"),
    ("masked_dtype", TypeError, "masked_m"),
    ("expected_neg", ValueError, "expected_m"),
    ("expected_float", ValueError, "expected_m"),
    ("groups", ValueError, r"a\[0\]"),
    ("a_rank", ValueError, r"a\[0\]"),
])
def test_masked_errors(case, exc, match):
    a, b, d, masked_m = masked_inputs()
    expected = 32
    if case == "masked_len":
        masked_m = masked_m[:2]
    elif case == "masked_dtype":
        masked_m = masked_m.float()
    elif case == "expected_neg":
        expected = -1
    elif case == "expected_float":
        expected = 1.5
    elif case == "groups":
        a = deep_gemm.per_token_cast_to_fp8(torch.randn(G + 1, M_MAX, K))
        d = torch.empty(G + 1, M_MAX, N, dtype=torch.bfloat16)
    elif case == "a_rank":
        a = deep_gemm.per_token_cast_to_fp8(torch.randn(M_MAX, K))
    with pytest.raises(exc, match=match):
        deep_gemm.m_grouped_fp8_gemm_nt_masked(a, b, d, masked_m, expected)


def test_v1_names_in_messages():
    a, b, d, m_indices = contiguous_inputs()
    with pytest.raises(ValueError, match="^out"):
        deep_gemm.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous(a, b, d[:, :-8], m_indices)


def test_k_zero_writes_zeros_to_valid_rows_only():
    # A B^T over an empty K is zero; rows the kernels would not store stay untouched.
    m_indices = torch.tensor([0] * 128 + [-1] * 128 + [2] * 128 + [7] * 128, dtype=torch.int32)
    a = deep_gemm.per_token_cast_to_fp8(torch.randn(m_indices.numel(), 0))
    b = deep_gemm.per_block_cast_to_fp8(torch.randn(G, N, 0))
    d = torch.full((m_indices.numel(), N), float("nan"), dtype=torch.bfloat16)
    deep_gemm.m_grouped_fp8_gemm_nt_contiguous(a, b, d, m_indices)
    valid = (m_indices >= 0) & (m_indices < G)
    assert (d[valid] == 0).all() and torch.isnan(d[~valid]).all()

    a = deep_gemm.per_token_cast_to_fp8(torch.randn(G, M_MAX, 0))
    d = torch.full((G, M_MAX, N), float("nan"), dtype=torch.bfloat16)
    masked_m = torch.tensor([5, 0, 99], dtype=torch.int32)
    deep_gemm.m_grouped_fp8_gemm_nt_masked(a, b, d, masked_m, 32)
    rows = torch.arange(M_MAX)[None] < masked_m.clamp(0, M_MAX)[:, None]
    assert (d[rows] == 0).all() and torch.isnan(d[~rows]).all()
