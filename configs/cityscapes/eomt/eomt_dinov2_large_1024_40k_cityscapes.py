# EoMT-L on DINOv2-L/16 with registers (tue-mps/eomt configs/dinov2/cityscapes/semantic/
# eomt_large_1024.yaml), cityscapes, crop 1024, total batch 4 x 4 GPUs = 16 (both from
# ../../_base_/datasets/cityscapes_1024.py). Evaluation: the official windows (two 1024 crops of a
# 2048 x 1024 image).
_base_ = [
    '../../_base_/models/eomt_dinov2.py', '../../_base_/datasets/cityscapes_1024.py',
    '../../_base_/eomt_runtime.py', '../../_base_/schedules/eomt_40k.py'
]
num_classes = 19
model = dict(
    data_preprocessor=dict(size={{_base_.crop_size}}),
    backbone=dict(trunk=dict(model_kwargs=dict(img_size=1024, patch_size=16),
                             pretrained='checkpoints/dinov2_vitl14_reg4_p16_1024.pth')),
    decode_head=dict(num_classes=num_classes,
                     loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])),
    test_cfg=dict(crop_size={{_base_.crop_size}}))
custom_hooks = [
    dict(type='SegLabelCheckHook'),
    dict(type='EoMTMaskAnnealingHook', start_iters=[3317, 6634, 9951, 13268],
         end_iters=[6634, 9951, 13268, 16585]),
]
