# Baseline on cityscapes, crop 896: full fine-tuning of DINOv2 + linear head, DINOv2-B; total batch 1 x 8 GPUs.
_base_ = [
    '../../_base_/models/dinov2_linear.py', '../../_base_/datasets/cityscapes_896.py',
    '../../_base_/default_runtime.py', '../../_base_/schedules/vitsplit_40k.py'
]
crop_size = (896, 896)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(trunk=dict(arch='base', pretrained='base'), out_indices=[11], frozen=False),
    decode_head=dict(in_channels=768, channels=768, num_classes=19),
    test_cfg=dict(crop_size=crop_size, stride=(512, 512)))
optim_wrapper = dict(
    optimizer=dict(lr=0.0002),
    paramwise_cfg=dict(custom_keys={'backbone.trunk': dict(lr_mult=0.1)}),
)
train_dataloader = dict(batch_size=1)
