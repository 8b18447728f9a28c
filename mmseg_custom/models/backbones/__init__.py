from .dinov2 import DINOv2
from .timm_vit import TimmViT
from .trunk import DINOv2Backbone, PlainBackbone, Trunk
from .vit_split import ViTSplit, ViTSplitGate

__all__ = [
    'DINOv2', 'DINOv2Backbone', 'PlainBackbone', 'TimmViT', 'Trunk', 'ViTSplit', 'ViTSplitGate'
]
