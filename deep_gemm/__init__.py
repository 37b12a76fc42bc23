"""deep_gemm: FP8 and BF16 GEMM kernels for NVIDIA Hopper, JIT-compiled at run time."""
__version__ = "0.1.0"
