# Baseline on ade20k, crop 512: full fine-tuning of DINOv3 + linear head, DINOv3-L/16 (timm);
# total batch 2 x 4 GPUs.
_base_ = [
    '../../_base_/models/timm_linear.py', '../../_base_/datasets/ade20k_512.py',
    '../../_base_/default_runtime.py', '../../_base_/schedules/vitsplit_40k.py'
]
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        trunk=dict(name='vit_large_patch16_dinov3', pretrained='dinov3_large'),
        out_indices=[23],
        frozen=False),
    decode_head=dict(in_channels=1024, channels=1024, num_classes=150),
    test_cfg=dict(crop_size=crop_size, stride=(341, 341)))
optim_wrapper = dict(
    optimizer=dict(lr=0.0002),
    paramwise_cfg=dict(custom_keys={'backbone.trunk': dict(lr_mult=0.1)}),
)
train_dataloader = dict(batch_size=2)
