# Rein-B on ADE20K with ViT-Split's linear head and recipe, crop 512, beside
# ../vitsplit/linear_dinov2_vitsplit_base_512_20k_ade20k.py: Rein-S's config with the B trunk.
# Total batch 2 x 4 GPUs = 8, 40k iters, ViT-Split's recipe at lr 2e-4 (ViT-Split-B's); Rein's:
# ./linear_dinov2_rein_base_512_40k_ade20k_rein_recipe.py.
_base_ = ['./linear_dinov2_rein_small_512_40k_ade20k.py']
model = dict(
    backbone=dict(trunk=dict(arch='base', pretrained='base')),
    decode_head=dict(in_channels=768, channels=768))
optim_wrapper = dict(optimizer=dict(lr=2e-4))
