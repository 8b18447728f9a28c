from .dinov2 import DINOv2, DINOv2Backbone
from .rein import LoRAReins, ReinBackbone, Reins
from .vit_split import ViTSplit, ViTSplitGate

__all__ = [
    'DINOv2', 'DINOv2Backbone', 'LoRAReins', 'ReinBackbone', 'Reins', 'ViTSplit', 'ViTSplitGate'
]
