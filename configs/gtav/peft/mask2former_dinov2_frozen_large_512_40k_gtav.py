# PEFT baseline of Rein's table, GTAV -> Cityscapes / BDD100K / Mapillary, crop 512.
# Frozen DINOv2-L (no adapter): Rein's table, 0 trainable backbone parameters.
# DINOv2-L/16 (frozen) + Mask2Former; data, schedule and optimizer as the Rein config beside it
# (../rein/mask2former_dinov2_rein_large_512_40k_gtav.py). Total batch 4 x 1 GPU, 40k iters.
_base_ = [
    '../../_base_/models/dinov2_mask2former_512.py',
    '../../_base_/datasets/rein_gta2citys_bdd_map_512.py',
    '../../_base_/default_runtime.py', '../../_base_/schedules/rein_40k.py'
]
# The Mask2Former parts need mmdet: registered only for the configs that use them.
custom_imports = dict(
    imports=['mmseg_custom',
             'mmseg_custom.models.decode_heads.mask2former_pixel_decoder'],
    allow_failed_imports=False)
model = dict(backbone=dict(adapter=None))
randomness = dict(seed=42)
