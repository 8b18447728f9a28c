# Rein, DINOv2-L + Mask2Former, crop 1024: train on Cityscapes, evaluate on ACDC fog / night /
# rain / snow and Cityscapes (per domain). Total batch 2 x 4 GPUs = 8, 40k iters, lr 6e-5 with a
# 10k-iteration linear warm-up (official configs/dinov2_citys2acdc/
# rein_dinov2_mask2former_1024x1024_bs4x2.py). Trunk at patch 16 on a 64 x 64 grid.
_base_ = [
    '../../_base_/models/rein_dinov2_mask2former.py',
    '../../_base_/datasets/rein_citys2acdc_1024.py',
    '../../_base_/default_runtime.py', '../../_base_/schedules/rein_40k.py'
]
# The Mask2Former parts need mmdet: registered only for the configs that use them.
custom_imports = dict(
    imports=['mmseg_custom',
             'mmseg_custom.models.decode_heads.mask2former_pixel_decoder',
             'mmseg_custom.models.decode_heads.rein_mask2former'],
    allow_failed_imports=False)
crop_size = (1024, 1024)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(trunk=dict(img_size=1024)),
    test_cfg=dict(crop_size=crop_size, stride=(683, 683)))
optim_wrapper = dict(optimizer=dict(lr=6e-5))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=10000),
    dict(type='PolyLR', eta_min=0.0, power=0.9, by_epoch=False, begin=10000, end=40000),
]
find_unused_parameters = True  # as the official (DDP)
randomness = dict(seed=42)
