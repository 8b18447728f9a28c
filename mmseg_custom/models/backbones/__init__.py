from .dinov2 import DINOv2, DINOv2Backbone
from .vit_split import ViTSplit, ViTSplitGate

__all__ = ['DINOv2', 'DINOv2Backbone', 'ViTSplit', 'ViTSplitGate']
