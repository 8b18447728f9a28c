from .linear_heads import ConvUpsampleLinearBNHead, LinearBNHead, MultiScaleConvUpsampleLinearBNHead
from .mask2former_pixel_decoder import MSDAPixelDecoder
from .rein_mask2former import ReinMask2FormerHead

__all__ = [
    'ConvUpsampleLinearBNHead', 'LinearBNHead', 'MultiScaleConvUpsampleLinearBNHead',
    'MSDAPixelDecoder', 'ReinMask2FormerHead'
]
