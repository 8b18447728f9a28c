# EoMT-L on DINOv2-L/16 with registers (tue-mps/eomt configs/dinov2/cityscapes/semantic/
# eomt_large_1024.yaml), cityscapes, crop 1024, total batch 4 x 4 GPUs = 16. Evaluation: the
# official windows (two 1024 crops of a 2048 x 1024 image).
_base_ = [
    '../../_base_/models/eomt_dinov2.py', '../../_base_/datasets/cityscapes_896.py',
    '../../_base_/default_runtime.py', '../../_base_/schedules/eomt_40k.py'
]
custom_imports = dict(imports=['mmseg_custom', 'mmseg_custom.models.eomt'],
                      allow_failed_imports=False)
crop_size = (1024, 1024)
num_classes = 19
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(trunk=dict(model_kwargs=dict(img_size=1024, patch_size=16),
                             pretrained='checkpoints/dinov2_vitl14_reg4_p16_1024.pth')),
    decode_head=dict(num_classes=num_classes,
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
    dict(type='EoMTMaskAnnealingHook', start_iters=[3317, 6634, 9951, 13268],
         end_iters=[6634, 9951, 13268, 16585]),
]
