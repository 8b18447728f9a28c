# ViT-Split-L on DINOv3-L/16 (timm), pascal_context, crop 480: batch 2 x 8 GPUs = 16, 20k iters.
# Blocks as ViT-Split-L on DINOv2 (same depth, 24).
_base_ = [
    '../../_base_/models/vitsplit_linear_timm.py', '../../_base_/datasets/pascal_context_59_480.py',
    '../../_base_/default_runtime.py', '../../_base_/schedules/vitsplit_20k.py'
]
crop_size = (480, 480)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        out_indices=[14, 15, 16, 17, 18, 19, 20, 21, 22, 23],
        trunk=dict(name='vit_large_patch16_dinov3', pretrained='dinov3_large'),
        select_layers=[18, 19, 20, 21, 22, 23],
        channels=1024),
    decode_head=dict(in_channels=1024, channels=1024, num_classes=59),
    test_cfg=dict(crop_size=crop_size, stride=(512, 512)))
optim_wrapper = dict(optimizer=dict(lr=0.0001))
train_dataloader = dict(batch_size=2)
