# Rein-S on DINOv3-S/16 (timm) on ADE20K with ViT-Split's linear head and recipe, crop 512, beside
# ../vitsplit/linear_dinov3_vitsplit_small_512_40k_ade20k.py: Rein-S's DINOv2 config with the
# DINOv3 trunk (patch 16, RoPE, 4 storage tokens; same width and depth as DINOv2-S).
# Total batch 2 x 4 GPUs = 8, 40k iters, ViT-Split's recipe at lr 3e-4.
_base_ = ['./linear_dinov2_rein_small_512_40k_ade20k.py']
model = dict(
    backbone=dict(
        trunk=dict(
            _delete_=True,
            type='TimmViT',
            name='vit_small_patch16_dinov3',
            pretrained='dinov3_small')))
