# EoMT-S: ./eomt_dinov2_large_512_40k_ade20k.py (the official EoMT-L recipe: 100 queries in the
# last 4 blocks, masked attention annealed away, the whole encoder fine-tuned) on DINOv2-S/14 with
# registers resampled to patch 16 as the L config does: the fine-tuned counterpart of
# ../vitsplit_eomt/eomt_dinov2_vitsplit_small_512_40k_ade20k.py (tools/benchmark.py rows).
# Pretrained trunk, written once: python tools/convert_dinov2_patch16.py
#   <timm vit_small_patch14_reg4_dinov2 model.safetensors> checkpoints/dinov2_vits14_reg4_p16_512.pth
_base_ = ['./eomt_dinov2_large_512_40k_ade20k.py']
model = dict(
    backbone=dict(trunk=dict(name='vit_small_patch14_reg4_dinov2',
                             pretrained='checkpoints/dinov2_vits14_reg4_p16_512.pth')),
    decode_head=dict(in_channels=384))
