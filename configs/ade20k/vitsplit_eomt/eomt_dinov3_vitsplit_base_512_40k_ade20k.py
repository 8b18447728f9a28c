# ViT-Split-EoMT-B on DINOv3-B: ./eomt_dinov2_vitsplit_base_512_40k_ade20k.py with the DINOv3
# trunk. Frozen trunk, the queries in the task head (copies of blocks [9, 10, 11]), the prior head
# on blocks [2, 5, 8, 11]; ade20k, crop 512, total batch 4 x 4 GPUs. DINOv3 (timm) at patch 16:
# masks at stride 4.
# Trained with ViT-Split's recipe (AdamW 2e-4, the copied blocks at 0.1x, 40k iterations).
_base_ = ['./eomt_dinov2_vitsplit_base_512_40k_ade20k.py']
model = dict(backbone=dict(trunk=dict(name='vit_base_patch16_dinov3', pretrained='dinov3_base')))
