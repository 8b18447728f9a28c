# Baseline on pascal_context, crop 480: full fine-tuning of DINOv2 + linear head, DINOv2-B; total batch 2 x 8 GPUs.
_base_ = [
    '../../_base_/models/dinov2_linear.py', '../../_base_/datasets/pascal_context_59_480.py',
    '../../_base_/default_runtime.py', '../../_base_/schedules/vitsplit_20k.py'
]
crop_size = (480, 480)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(trunk=dict(arch='base', pretrained='base'), out_indices=[11], frozen=False),
    decode_head=dict(in_channels=768, channels=768, num_classes=59),
    test_cfg=dict(crop_size=crop_size, stride=(512, 512)))
optim_wrapper = dict(
    optimizer=dict(lr=0.0001),
    paramwise_cfg=dict(custom_keys={'backbone.trunk': dict(lr_mult=0.1)}),
)
train_dataloader = dict(batch_size=2)
