# Rein-L on DINOv3-L/16 (timm) on ADE20K with ViT-Split's linear head and recipe, crop 512, beside
# ../vitsplit/linear_dinov3_vitsplit_large_512_40k_ade20k.py: Rein-S on DINOv3 with the L trunk
# (24 blocks: the head reads the last). Total batch 2 x 4 GPUs = 8, 40k iters, ViT-Split's recipe
# at lr 2e-4.
_base_ = ['./linear_dinov3_rein_small_512_40k_ade20k.py']
model = dict(
    backbone=dict(
        trunk=dict(name='vit_large_patch16_dinov3', pretrained='dinov3_large'), out_indices=[23]),
    decode_head=dict(in_channels=1024, channels=1024))
optim_wrapper = dict(optimizer=dict(lr=2e-4))
