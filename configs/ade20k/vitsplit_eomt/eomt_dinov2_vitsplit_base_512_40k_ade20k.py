# ViT-Split-EoMT-B on DINOv2-B: ./eomt_dinov2_vitsplit_small_512_40k_ade20k.py with the B trunk and
# head width. Frozen trunk, the queries in the task head (copies of blocks [9, 10, 11]), the prior
# head on blocks [2, 5, 8, 11]; ade20k, crop 512, total batch 4 x 4 GPUs. DINOv2 with registers
# (timm) at its native patch 14: frozen, it is not resampled (one upscaling block, masks at
# stride 7).
# Trained with ViT-Split's recipe (AdamW 2e-4, the copied blocks at 0.1x, 40k iterations).
_base_ = ['./eomt_dinov2_vitsplit_small_512_40k_ade20k.py']
model = dict(backbone=dict(trunk=dict(name='vit_base_patch14_reg4_dinov2')),
             decode_head=dict(in_channels=768))
