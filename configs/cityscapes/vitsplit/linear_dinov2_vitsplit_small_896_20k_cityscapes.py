# ViT-Split-S on cityscapes, crop 896: total batch 1 x 8 GPUs = 8, 40k iters (the README's runs).
_base_ = [
    '../../_base_/models/vitsplit_linear.py', '../../_base_/datasets/cityscapes_896.py',
    '../../_base_/default_runtime.py', '../../_base_/schedules/vitsplit_40k.py'
]
crop_size = (896, 896)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        out_indices=[8, 9, 10, 11],
        trunk=dict(arch='small', pretrained='small'),
        select_layers=[7, 8, 9, 10, 11],
        channels=384),
    decode_head=dict(in_channels=384, channels=384, num_classes=19),
    test_cfg=dict(crop_size=crop_size, stride=(512, 512)))
optim_wrapper = dict(optimizer=dict(lr=0.0002))
train_dataloader = dict(batch_size=1)
