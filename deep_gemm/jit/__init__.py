"""Run-time compilation: CUDA C++ source -> cubin (NVRTC/NVCC) -> disk cache -> loaded kernel -> launch."""
from .compiler import CompileError, CompiledKernel, compile_kernel
from .runtime import CudaError, build, get_kernel
