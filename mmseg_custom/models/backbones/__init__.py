from .dinov2 import DINOv2
from .peft_adapters import AdaptFormerAdapter, LoRAAdapter, PEFTBackbone, VPTDeep
from .rein import LoRAReins, ReinBackbone, Reins
from .timm_vit import TimmViT
from .token_sharing import CTSPolicyNet, TokenSharing
from .trunk import DINOv2Backbone, PlainBackbone, Trunk
from .vit_split import ViTSplit, ViTSplitGate

__all__ = [
    'AdaptFormerAdapter', 'CTSPolicyNet', 'DINOv2', 'DINOv2Backbone', 'LoRAAdapter', 'LoRAReins',
    'PEFTBackbone', 'PlainBackbone', 'ReinBackbone', 'Reins', 'TimmViT', 'TokenSharing', 'Trunk',
    'VPTDeep', 'ViTSplit', 'ViTSplitGate'
]
