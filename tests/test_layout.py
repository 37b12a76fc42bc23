"""deep_gemm.api.layout: alignment helpers and scale-factor layouts (CPU)."""

import pytest
import torch

from deep_gemm.api.layout import (
    align,
    ceil_div,
    get_col_major_tma_aligned_tensor,
    get_m_alignment_for_contiguous_layout,
    get_mk_alignment_for_contiguous_layout,
    get_mn_major_tma_aligned_tensor,
    get_tma_aligned_size,
    is_mn_major_tma_aligned,
    transform_sf_into_required_layout,
)


def rand_sf(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) + 0.5


def test_small_helpers():
    assert [ceil_div(a, 4) for a in (0, 1, 4, 5)] == [0, 1, 1, 2]
    assert [align(a, 128) for a in (0, 1, 128, 129)] == [0, 128, 128, 256]
    assert get_m_alignment_for_contiguous_layout() == 128
    assert get_mk_alignment_for_contiguous_layout() == (128, 128)


@pytest.mark.parametrize("x,element_size,expected", [
    (0, 4, 0), (1, 4, 4), (4, 4, 4), (5, 4, 8), (4097, 4, 4100),
    (7, 2, 8), (8, 2, 8), (9, 1, 16), (3, 8, 4), (1, 16, 1),
])
def test_get_tma_aligned_size(x, element_size, expected):
    assert get_tma_aligned_size(x, element_size) == expected
    assert expected * element_size % 16 == 0


@pytest.mark.parametrize("element_size", [0, 3, 32])
def test_get_tma_aligned_size_rejects_bad_element_size(element_size):
    with pytest.raises(ValueError, match=r"^element_size:"):
        get_tma_aligned_size(8, element_size)


# ------------------------------------------------------------------------ MN-major TMA-aligned

@pytest.mark.parametrize("mn", [1, 3, 4, 7, 128, 4097])
@pytest.mark.parametrize("kb", [1, 3])
def test_mn_major_2d(mn, kb):
    sf = rand_sf(mn, kb, seed=mn * kb)
    sf_before = sf.clone()
    out = get_mn_major_tma_aligned_tensor(sf)
    mn_pad = get_tma_aligned_size(mn, 4)
    assert out.shape == (mn, kb) and out.dtype == torch.float32
    assert out.stride() == (1, mn_pad)
    assert torch.equal(out, sf) and torch.equal(sf, sf_before)
    # The padding is really allocated: each of the KB columns owns MN_pad floats.
    assert out.untyped_storage().nbytes() >= kb * mn_pad * 4
    assert out.data_ptr() % 16 == 0
    assert is_mn_major_tma_aligned(out)
    assert get_mn_major_tma_aligned_tensor(out) is out


@pytest.mark.parametrize("mn", [1, 3, 4, 7, 128, 4097])
def test_mn_major_3d(mn):
    g, kb = 3, 2
    sf = rand_sf(g, mn, kb, seed=mn)
    out = get_mn_major_tma_aligned_tensor(sf)
    mn_pad = get_tma_aligned_size(mn, 4)
    assert out.shape == (g, mn, kb)
    assert out.stride() == (kb * mn_pad, 1, mn_pad)
    assert torch.equal(out, sf)
    assert out.untyped_storage().nbytes() >= g * kb * mn_pad * 4
    assert get_mn_major_tma_aligned_tensor(out) is out
    for i in range(g):  # each group's slice is itself a valid 2-D MN-major tensor
        assert out[i].stride() == (1, mn_pad)


def test_mn_major_accepts_any_input_layout():
    base = rand_sf(7, 3, seed=1)
    for sf in (base, base.T.contiguous().T, rand_sf(7, 6)[:, ::2], rand_sf(9, 3)[1:8]):
        out = get_mn_major_tma_aligned_tensor(sf)
        assert out.stride() == (1, 8) and torch.equal(out, sf)


def test_mn_major_prebuilt_layout_is_returned_as_is():
    # A tensor a user laid out by hand with exactly the target strides needs no copy.
    storage = rand_sf(3, 8)  # [KB, MN_pad]
    sf = storage[:, :7].T
    assert is_mn_major_tma_aligned(sf)
    assert get_mn_major_tma_aligned_tensor(sf) is sf
    assert get_col_major_tma_aligned_tensor is get_mn_major_tma_aligned_tensor


def test_is_mn_major_tma_aligned_negative_cases():
    assert not is_mn_major_tma_aligned(rand_sf(7, 3))  # row-major
    assert not is_mn_major_tma_aligned(rand_sf(7, 3).T.contiguous().T)  # MN-major but stride 7, not 8
    misaligned = rand_sf(25)[1:].view(3, 8)[:, :7].T  # right strides, base 4 bytes past a 16-byte boundary
    assert misaligned.stride() == (1, 8) and not is_mn_major_tma_aligned(misaligned)
    assert get_mn_major_tma_aligned_tensor(misaligned).data_ptr() % 16 == 0
    assert not is_mn_major_tma_aligned(torch.ones(8))
    assert not is_mn_major_tma_aligned("sf")


def test_mn_major_int32_ue8m0():
    sf = torch.arange(21, dtype=torch.int32).view(7, 3)
    out = get_mn_major_tma_aligned_tensor(sf)
    assert out.stride() == (1, 8) and torch.equal(out, sf)


def test_mn_major_errors():
    with pytest.raises(ValueError, match=r"^sf: expected a 2-D \[MN, KB\] or 3-D"):
        get_mn_major_tma_aligned_tensor(torch.ones(4))
    with pytest.raises(ValueError, match=r"^sf: expected a 2-D"):
        get_mn_major_tma_aligned_tensor(torch.ones(1, 2, 4, 4))
    with pytest.raises(TypeError, match=r"^sf: expected dtype torch.float32.*got torch.bfloat16"):
        get_mn_major_tma_aligned_tensor(torch.ones(4, 4, dtype=torch.bfloat16))
    with pytest.raises(TypeError, match=r"^sf: expected a torch.Tensor"):
        get_mn_major_tma_aligned_tensor([[1.0]])


# ------------------------------------------------------------------------ transform_sf_into_required_layout

@pytest.mark.parametrize("recipe", ["1d2d", (1, 128, 128), "1d1d", (1, 1, 128)])
@pytest.mark.parametrize("mn,k", [(7, 200), (4097, 128)])
def test_transform_sfa(recipe, mn, k):
    sf = rand_sf(mn, ceil_div(k, 128), seed=mn)
    out = transform_sf_into_required_layout(sf, mn, k, recipe, is_sfa=True)
    assert torch.equal(out, sf) and is_mn_major_tma_aligned(out)
    assert transform_sf_into_required_layout(out, mn, k, recipe, is_sfa=True) is out


def test_transform_sfb_1d2d_stays_row_major():
    n, k = 136, 200
    sf = rand_sf(2, 2)
    assert transform_sf_into_required_layout(sf, n, k, "1d2d") is sf
    # Given MN-major (e.g. from a previous transform), it comes back row-major contiguous.
    mn_major = sf.T.contiguous().T
    out = transform_sf_into_required_layout(mn_major, n, k, "1d2d", is_sfa=False)
    assert out.is_contiguous() and torch.equal(out, sf)


def test_transform_sfb_1d1d_is_mn_major():
    n, k = 24, 384
    sf = rand_sf(n, 3)
    out = transform_sf_into_required_layout(sf, n, k, "1d1d", is_sfa=False)
    assert out.stride() == (1, 24) and torch.equal(out, sf)


def test_transform_grouped():
    g, m, n, k = 4, 65, 136, 7168 + 64
    sfa = rand_sf(g, m, 57)
    out = transform_sf_into_required_layout(sfa, m, k, "1d2d", num_groups=g, is_sfa=True)
    assert out.stride() == (57 * 68, 1, 68) and torch.equal(out, sfa)
    sfb = rand_sf(g, 2, 57)
    assert transform_sf_into_required_layout(sfb, n, k, "1d2d", num_groups=g) is sfb


def test_transform_errors():
    sf = rand_sf(7, 2)
    with pytest.raises(ValueError, match=r"^sf: expected shape \(7, 1\).*sfa.*got \(7, 2\)"):
        transform_sf_into_required_layout(sf, 7, 128, "1d2d", is_sfa=True)
    with pytest.raises(ValueError, match=r"^sf: expected shape \(1, 2\).*sfb under recipe 1d2d"):
        transform_sf_into_required_layout(sf, 7, 256, "1d2d", is_sfa=False)
    with pytest.raises(ValueError, match=r"^sf: expected shape \(3, 7, 2\)"):
        transform_sf_into_required_layout(sf, 7, 256, "1d2d", num_groups=3, is_sfa=True)
    with pytest.raises(ValueError, match=r"^sf: expected shape \(7, 2\)"):
        transform_sf_into_required_layout(sf[None], 7, 256, "1d2d", is_sfa=True)
    with pytest.raises(ValueError, match=r"^recipe:"):
        transform_sf_into_required_layout(sf, 7, 256, (1, 128, 64), is_sfa=True)
    with pytest.raises(ValueError, match=r"^mn:"):
        transform_sf_into_required_layout(sf, -7, 256, "1d2d", is_sfa=True)
    with pytest.raises(ValueError, match=r"^k:"):
        transform_sf_into_required_layout(sf, 7, 256.0, "1d2d", is_sfa=True)
    with pytest.raises(ValueError, match=r"^num_groups:"):
        transform_sf_into_required_layout(sf, 7, 256, "1d2d", num_groups="3", is_sfa=True)
    with pytest.raises(TypeError, match=r"^sf: expected dtype torch.float32"):
        transform_sf_into_required_layout(sf.int(), 7, 256, "1d2d", is_sfa=True)
    with pytest.raises(TypeError, match=r"^sf: expected dtype torch.float32"):
        transform_sf_into_required_layout(sf.double(), 7, 256, "1d2d", is_sfa=True)
