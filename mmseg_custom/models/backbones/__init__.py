from .dinov2 import DINOv2, DINOv2Backbone
from .peft_adapters import AdaptFormerAdapter, LoRAAdapter, PEFTBackbone, VPTDeep
from .rein import LoRAReins, ReinBackbone, Reins
from .token_sharing import CTSPolicyNet, TokenSharing
from .vit_split import ViTSplit, ViTSplitGate

__all__ = [
    'AdaptFormerAdapter', 'CTSPolicyNet', 'DINOv2', 'DINOv2Backbone', 'LoRAAdapter', 'LoRAReins',
    'PEFTBackbone', 'ReinBackbone', 'Reins', 'TokenSharing', 'VPTDeep', 'ViTSplit', 'ViTSplitGate'
]
