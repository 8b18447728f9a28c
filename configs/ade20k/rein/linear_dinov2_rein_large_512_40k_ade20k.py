# Rein-L on ADE20K with ViT-Split's linear head and recipe, crop 512, beside
# ../vitsplit/linear_dinov2_vitsplit_large_512_20k_ade20k.py: Rein-S's config with the L trunk.
# Total batch 2 x 4 GPUs = 8, 40k iters, ViT-Split's recipe at lr 2e-4 (ViT-Split-L's); Rein's:
# ./linear_dinov2_rein_large_512_40k_ade20k_rein_recipe.py.
_base_ = ['./linear_dinov2_rein_small_512_40k_ade20k.py']
model = dict(
    backbone=dict(trunk=dict(arch='large', pretrained='large'), out_indices=[23]),
    decode_head=dict(in_channels=1024, channels=1024))
optim_wrapper = dict(optimizer=dict(lr=2e-4))
