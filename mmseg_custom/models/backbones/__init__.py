from .dinov2 import DINOv2, DINOv2Backbone
from .peft_adapters import AdaptFormerAdapter, LoRAAdapter, PEFTBackbone, VPTDeep
from .rein import LoRAReins, ReinBackbone, Reins
from .vit_split import ViTSplit, ViTSplitGate

__all__ = [
    'AdaptFormerAdapter', 'DINOv2', 'DINOv2Backbone', 'LoRAAdapter', 'LoRAReins', 'PEFTBackbone',
    'ReinBackbone', 'Reins', 'VPTDeep', 'ViTSplit', 'ViTSplitGate'
]
