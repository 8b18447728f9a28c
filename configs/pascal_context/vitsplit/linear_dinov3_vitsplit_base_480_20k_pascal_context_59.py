# ViT-Split-B on DINOv3-B/16 (timm), pascal_context, crop 480: batch 2 x 8 GPUs = 16, 20k iters.
# Blocks as ViT-Split-B on DINOv2 (same depth, 12).
_base_ = [
    '../../_base_/models/vitsplit_linear_timm.py', '../../_base_/datasets/pascal_context_59_480.py',
    '../../_base_/default_runtime.py', '../../_base_/schedules/vitsplit_20k.py'
]
crop_size = (480, 480)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        out_indices=[8, 9, 10, 11],
        trunk=dict(name='vit_base_patch16_dinov3', pretrained='dinov3_base'),
        select_layers=[8, 9, 10, 11],
        channels=768),
    decode_head=dict(in_channels=768, channels=768, num_classes=59),
    test_cfg=dict(crop_size=crop_size, stride=(512, 512)))
optim_wrapper = dict(optimizer=dict(lr=0.0001))
train_dataloader = dict(batch_size=2)
