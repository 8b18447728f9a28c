# Rein-B on DINOv3-B/16 (timm) on ADE20K with ViT-Split's linear head and recipe, crop 512, beside
# ../vitsplit/linear_dinov3_vitsplit_base_512_40k_ade20k.py: Rein-S on DINOv3 with the B trunk.
# Total batch 2 x 4 GPUs = 8, 40k iters, ViT-Split's recipe at lr 2e-4.
_base_ = ['./linear_dinov3_rein_small_512_40k_ade20k.py']
model = dict(
    backbone=dict(trunk=dict(name='vit_base_patch16_dinov3', pretrained='dinov3_base')),
    decode_head=dict(in_channels=768, channels=768))
optim_wrapper = dict(optimizer=dict(lr=2e-4))
