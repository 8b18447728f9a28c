# The Mask2Former parts (``mask2former_pixel_decoder``, ``rein_mask2former``: they need mmdet and
# mmcv.ops) are not imported here: the configs that use them list them in their custom_imports.
from .linear_heads import ConvUpsampleLinearBNHead, LinearBNHead, MultiScaleConvUpsampleLinearBNHead

__all__ = ['ConvUpsampleLinearBNHead', 'LinearBNHead', 'MultiScaleConvUpsampleLinearBNHead']
