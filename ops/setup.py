"""Build ``vitsplit_msda_ext``, the compiled multi-scale deformable attention of mmseg-vitsplit.

The CPU kernels are always built. The CUDA kernels are built too when ``FORCE_CUDA=1`` or when
nvcc is found and torch sees a GPU; without either this builds the CPU kernels and never fails
for lack of CUDA (``mmseg_custom.ops`` falls back to PyTorch wherever the kernel is missing).
Install with ``bash ops/make.sh`` (or ``pip install --no-build-isolation --no-deps ops/``).
"""
import os
import warnings

import torch
from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

# torch >= 2.10 headers need C++20; OpenMP makes at::parallel_for run in parallel; -g0: no debug
# info (Python's default -g doubles the compile time and changes no instruction).
CXX_FLAGS = ['-O3', '-g0', '-std=c++20', '-fopenmp']
NVCC_FLAGS = ['-O3', '-std=c++20']
# Used when no GPU is visible to pick architectures from (FORCE_CUDA=1 on a build node).
DEFAULT_CUDA_ARCHS = '7.5;8.0;8.6;8.9;9.0+PTX'


def build_cuda() -> bool:
    """Whether to compile the CUDA kernels on this machine."""
    can_build = CUDA_HOME is not None and torch.version.cuda is not None
    if os.environ.get('FORCE_CUDA') == '1':
        if not can_build:
            warnings.warn('FORCE_CUDA=1, but nvcc or a CUDA build of torch is missing: '
                          'building the CPU kernels only')
        return can_build
    return can_build and torch.cuda.is_available()


def extension():
    sources = ['csrc/ms_deform_attn.cpp', 'csrc/cpu/ms_deform_attn_cpu.cpp']
    if not build_cuda():
        return CppExtension(
            'vitsplit_msda_ext', sources,
            extra_compile_args={'cxx': CXX_FLAGS}, extra_link_args=['-fopenmp'])
    if not torch.cuda.is_available():
        os.environ.setdefault('TORCH_CUDA_ARCH_LIST', DEFAULT_CUDA_ARCHS)
    return CUDAExtension(
        'vitsplit_msda_ext',
        sources + ['csrc/cuda/ms_deform_attn_cuda.cpp', 'csrc/cuda/ms_deform_attn_kernels.cu'],
        define_macros=[('WITH_CUDA', None)],
        extra_compile_args={'cxx': CXX_FLAGS, 'nvcc': NVCC_FLAGS},
        extra_link_args=['-fopenmp'])


setup(
    name='vitsplit-msda-ext',
    version='0.1.0',
    description='Multi-scale deformable attention kernels (CPU and CUDA) for mmseg-vitsplit',
    license='Apache-2.0',
    packages=[],
    py_modules=[],
    ext_modules=[extension()],
    cmdclass={'build_ext': BuildExtension},
)
