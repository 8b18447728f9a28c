# ViT-Split-EoMT-L on DINOv2-L with registers (timm, native patch 14, frozen): the queries in the
# task head (copies of blocks [20, 21, 22, 23]), the prior head on blocks [2, 5, 8, 11, 14, 17, 20,
# 23]; cityscapes, crop 1024, total batch 4 x 4 GPUs; evaluation by the official windows.
# Trained with ViT-Split's recipe (AdamW 2e-4, the copied blocks at 0.1x, 40k iterations).
_base_ = [
    '../../_base_/models/vitsplit_eomt.py', '../../_base_/datasets/cityscapes_896.py',
    '../../_base_/default_runtime.py', '../../_base_/schedules/vitsplit_40k.py'
]
custom_imports = dict(imports=['mmseg_custom', 'mmseg_custom.models.eomt'],
                      allow_failed_imports=False)
crop_size = (1024, 1024)
num_classes = 19
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        trunk=dict(_delete_=True, type='TimmViT', name='vit_large_patch14_reg4_dinov2',
                   pretrained='timm'),
        out_indices=[2, 5, 8, 11, 14, 17, 20, 23],
        select_layers=[20, 21, 22, 23]),
    decode_head=dict(in_channels=1024, num_classes=num_classes, num_blocks=4,
                     loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])),
    test_cfg=dict(mode='windows', crop_size=crop_size))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(2048, 1024), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=4, dataset=dict(pipeline=train_pipeline))
custom_hooks = [
    dict(type='SegLabelCheckHook'),
    dict(type='EoMTMaskAnnealingHook', start_iters=[6520, 13040, 19560, 26080],
         end_iters=[13040, 19560, 26080, 32600]),
]
