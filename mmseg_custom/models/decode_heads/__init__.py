from .linear_heads import ConvUpsampleLinearBNHead, LinearBNHead, MultiScaleConvUpsampleLinearBNHead
from .mask2former_pixel_decoder import MSDAPixelDecoder

__all__ = [
    'ConvUpsampleLinearBNHead', 'LinearBNHead', 'MultiScaleConvUpsampleLinearBNHead',
    'MSDAPixelDecoder'
]
