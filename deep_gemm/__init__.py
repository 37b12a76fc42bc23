"""deep_gemm: FP8 and BF16 GEMM kernels for NVIDIA Hopper (sm_90a), JIT-compiled at run time.

The public names follow DeepGEMM's (both the 1.x and the 2.x spellings), so existing callers can
switch with no code change. Tensors off a Hopper GPU run the PyTorch reference path instead.
"""
__version__ = "0.1.0"

from .api.dense import fp8_gemm_nt, gemm_fp8_fp8_bf16_nt
from .api.device import get_num_sms, set_num_sms
from .api.grouped import (fp8_m_grouped_gemm_nt_masked, m_grouped_fp8_gemm_nt_contiguous, m_grouped_fp8_gemm_nt_masked,
                          m_grouped_gemm_fp8_fp8_bf16_nt_contiguous, m_grouped_gemm_fp8_fp8_bf16_nt_masked)
from .api.layout import (align, ceil_div, get_col_major_tma_aligned_tensor, get_m_alignment_for_contiguous_layout,
                         get_mk_alignment_for_contiguous_layout, get_mn_major_tma_aligned_tensor,
                         get_tma_aligned_size, transform_sf_into_required_layout)
from .api.quant import per_block_cast_to_fp8, per_channel_cast_to_fp8, per_token_cast_to_fp8
from .kernels.fp8_gemm import Fp8GemmConfig
from .testing import bench_kineto, calc_diff

__all__ = [
    "__version__",
    "fp8_gemm_nt", "gemm_fp8_fp8_bf16_nt",
    "m_grouped_fp8_gemm_nt_contiguous", "m_grouped_gemm_fp8_fp8_bf16_nt_contiguous",
    "m_grouped_fp8_gemm_nt_masked", "fp8_m_grouped_gemm_nt_masked", "m_grouped_gemm_fp8_fp8_bf16_nt_masked",
    "get_num_sms", "set_num_sms",
    "align", "ceil_div", "get_col_major_tma_aligned_tensor", "get_m_alignment_for_contiguous_layout",
    "get_mk_alignment_for_contiguous_layout", "get_mn_major_tma_aligned_tensor", "get_tma_aligned_size",
    "transform_sf_into_required_layout",
    "per_block_cast_to_fp8", "per_channel_cast_to_fp8", "per_token_cast_to_fp8",
    "Fp8GemmConfig", "bench_kineto", "calc_diff",
]
