# Rein, DINOv2-L + Mask2Former, crop 512: train on GTAV, evaluate on Cityscapes, BDD100K and
# Mapillary (per domain). Total batch 4 x 1 GPU, 40k iters, Rein's recipe (rein_40k.py), all as
# the official configs/dinov2/rein_dinov2_mask2former_512x512_bs1x4.py. Paper: 66.4 / 60.4 / 66.1
# mIoU.
_base_ = [
    '../../_base_/models/rein_dinov2_mask2former.py',
    '../../_base_/datasets/rein_gta2citys_bdd_map_512.py',
    '../../_base_/default_runtime.py', '../../_base_/schedules/rein_40k.py'
]
# The Mask2Former parts need mmdet: registered only for the configs that use them.
custom_imports = dict(
    imports=['mmseg_custom',
             'mmseg_custom.models.decode_heads.mask2former_pixel_decoder',
             'mmseg_custom.models.decode_heads.rein_mask2former'],
    allow_failed_imports=False)
randomness = dict(seed=42)  # the official runtime's
