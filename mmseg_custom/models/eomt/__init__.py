"""EoMT (Kerssies et al., CVPR 2025) and ViT-Split-EoMT on the trunk interface.

Needs mmdet (the loss) and mmcv.ops (point sampling) for training: configs import this package
with ``custom_imports=dict(imports=['mmseg_custom', 'mmseg_custom.models.eomt'])``.
"""
from .checkpoint import convert_official_state_dict
from .encoders import EoMTEncoder, ViTSplitEoMTEncoder
from .head import EoMTHead, ScaleBlock, mask_annealing
from .hooks import EoMTMaskAnnealingHook
from .optim import EoMTOptimWrapperConstructor, TwoStageWarmupPolyLR
from .segmentor import EoMT
from .windows import window_inference, window_starts

__all__ = [
    'EoMT', 'EoMTEncoder', 'EoMTHead', 'EoMTMaskAnnealingHook', 'EoMTOptimWrapperConstructor',
    'ScaleBlock', 'TwoStageWarmupPolyLR', 'ViTSplitEoMTEncoder', 'convert_official_state_dict',
    'mask_annealing',
    'window_inference', 'window_starts'
]
