# ViT-Split on a timm trunk: DINOv3-S/16 here (patch 16, RoPE, 4 storage tokens). Experiment configs
# override trunk.name/pretrained, out_indices, select_layers and channels.
_base_ = ['./vitsplit_linear.py']
model = dict(
    backbone=dict(
        trunk=dict(
            _delete_=True,
            type='TimmViT',
            name='vit_small_patch16_dinov3',
            pretrained='dinov3_small')))
