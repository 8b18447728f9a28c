"""Compiled operators with PyTorch fallbacks.

Importing this package needs only torch: the extension (``bash ops/make.sh``) is optional, and
:class:`MultiScaleDeformableAttention` (which needs mmcv) is imported on first access.
"""
from .multi_scale_deform_attn import (compiled_ops_available, multi_scale_deformable_attn,
                                      multi_scale_deformable_attn_pytorch)

__all__ = [
    'compiled_ops_available', 'multi_scale_deformable_attn',
    'multi_scale_deformable_attn_pytorch', 'MultiScaleDeformableAttention'
]


def __getattr__(name):
    if name == 'MultiScaleDeformableAttention':
        from .attention import MultiScaleDeformableAttention
        return MultiScaleDeformableAttention
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
