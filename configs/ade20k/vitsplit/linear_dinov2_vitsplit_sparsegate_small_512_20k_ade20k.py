# ViT-Split-Small with the sparse learnable gate: the prior head reads a top-4 mix of ALL trunk blocks
# instead of fixed out_indices. Everything else as the plain config.
_base_ = ['./linear_dinov2_vitsplit_small_512_20k_ade20k.py']
model = dict(backbone=dict(type='ViTSplitGate', out_indices=None, num_gated=4))
