# Rein-L on ADE20K with ViT-Split's linear head and data and Rein's own recipe (lr 1e-4 at every
# size, as the official): Rein-S's config of that recipe with the L trunk.
_base_ = ['./linear_dinov2_rein_small_512_40k_ade20k_rein_recipe.py']
model = dict(
    backbone=dict(trunk=dict(arch='large', pretrained='large'), out_indices=[23]),
    decode_head=dict(in_channels=1024, channels=1024))
