from .linear_heads import ConvUpsampleLinearBNHead, LinearBNHead, MultiScaleConvUpsampleLinearBNHead

__all__ = ['ConvUpsampleLinearBNHead', 'LinearBNHead', 'MultiScaleConvUpsampleLinearBNHead']
