from .dinov2 import DINOv2, DINOv2Backbone
from .token_sharing import CTSPolicyNet, TokenSharing
from .vit_split import ViTSplit, ViTSplitGate

__all__ = ['DINOv2', 'DINOv2Backbone', 'CTSPolicyNet', 'TokenSharing', 'ViTSplit', 'ViTSplitGate']
