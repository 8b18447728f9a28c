# The Mask2Former pixel decoder (``mask2former_pixel_decoder``, which needs mmdet and mmcv.ops)
# is not imported here: the configs that use it list it in their custom_imports.
from .linear_heads import ConvUpsampleLinearBNHead, LinearBNHead, MultiScaleConvUpsampleLinearBNHead

__all__ = ['ConvUpsampleLinearBNHead', 'LinearBNHead', 'MultiScaleConvUpsampleLinearBNHead']
