# ViT-Split-B with a Mask2Former head on ade20k, crop 512: total batch 2 x 8 GPUs = 16, 40k iters.
# As the small config, with the base trunk (768 channels).
_base_ = ['./mask2former_dinov2_vitsplit_small_512_40k_ade20k.py']
model = dict(
    backbone=dict(trunk=dict(arch='base', pretrained='base'), channels=768),
    neck=dict(in_channels=768))
