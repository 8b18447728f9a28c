# ViT-Split-L with the learnable gate: the prior head reads a top-4 mix of ALL trunk blocks instead
# of fixed out_indices. Everything else as the plain config.
_base_ = ['./linear_dinov2_vitsplit_large_896_20k_cityscapes.py']
model = dict(backbone=dict(type='ViTSplitGate', out_indices=None, num_gated=4))
