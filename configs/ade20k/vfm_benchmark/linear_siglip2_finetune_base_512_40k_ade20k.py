# VFM benchmark baseline: full fine-tuning of SigLIP2-B/16 (timm) + linear head, ade20k,
# crop 512, total batch 2 x 4 GPUs.
_base_ = [
    '../../_base_/models/timm_linear.py', '../../_base_/datasets/ade20k_512.py',
    '../../_base_/default_runtime.py', '../../_base_/schedules/vitsplit_40k.py'
]
crop_size = (512, 512)
# SigLIP's normalisation (timm's pretrained_cfg: 0.5, 0.5), not ImageNet's.
model = dict(
    data_preprocessor=dict(size=crop_size, mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5]),
    backbone=dict(
        trunk=dict(name='vit_base_patch16_siglip_224.v2_webli', pretrained='timm'),
        out_indices=[11],
        frozen=False),
    decode_head=dict(in_channels=768, channels=768, num_classes=150),
    test_cfg=dict(crop_size=crop_size, stride=(341, 341)))
optim_wrapper = dict(
    optimizer=dict(lr=0.0002),
    paramwise_cfg=dict(custom_keys={'backbone.trunk': dict(lr_mult=0.1)}),
)
train_dataloader = dict(batch_size=2)
