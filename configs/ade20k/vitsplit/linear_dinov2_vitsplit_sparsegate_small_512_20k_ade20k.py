# ViT-Split-S on ade20k, crop 512: total batch 2 x 4 GPUs = 8, 40k iters (the README's runs).
_base_ = [
    '../../_base_/models/vitsplit_linear.py', '../../_base_/datasets/ade20k_512.py',
    '../../_base_/default_runtime.py', '../../_base_/schedules/vitsplit_40k.py'
]
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        type='ViTSplitGate',
        out_indices=None,  # gate over all trunk blocks
        num_gated=4,
        trunk=dict(arch='small', pretrained='small'),
        select_layers=[9, 10, 11],
        channels=384),
    decode_head=dict(in_channels=384, channels=384, num_classes=150),
    test_cfg=dict(crop_size=crop_size, stride=(341, 341)))
optim_wrapper = dict(optimizer=dict(lr=0.0003))
train_dataloader = dict(batch_size=2)
